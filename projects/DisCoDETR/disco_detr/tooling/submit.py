"""Submit any config as a SLURM job of N nodes x G GPUs, with detectron2's ``launch`` inside each node.

    python tools/submit.py --config-file configs/disco_cond.py --nodes 4 --gpus-per-node 8 \\
        --partition gpu --time-min 4320 train.init_checkpoint=datasets/weights/swav_r50.pth

Needs ``submitit`` (``pip install submitit``; an optional dependency). One SLURM task per node
starts ``launch(num_gpus_per_machine=G, num_machines=N, machine_rank=<node>)`` with the first
node as the rendezvous, so the job trains exactly as ``tools/lazyconfig_train_net.py
--num-machines N --num-gpus G`` would. The job's SLURM logs go to ``<train.output_dir>/submitit/``
beside the run's own log, metrics and checkpoints.

Preemption and time-out: SLURM signals the job ``--signal-delay-s`` seconds ahead; submitit
requeues it (the job id stays), and the requeued job runs with ``--resume``, continuing from
the newest checkpoint that loads (checkpoints are written atomically). SLURM's SIGTERM to the
training processes makes each save ``model_<iter>.pth`` after the iteration in flight, so little
is lost. ``--cluster local`` runs the same job as local processes (one per "node"), for a test.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from disco_detr.tooling.paths import REPO


def _train_net():
    """tools/lazyconfig_train_net.py as an importable module (launch's worker processes unpickle its
    ``main`` by name; they inherit this sys.path)."""
    tools = os.path.join(REPO, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module("lazyconfig_train_net")


class TrainJob:
    """The callable submitit runs on every node (pickled with the job). ``checkpoint`` is submitit's
    preemption / time-out hook: it requeues the same job with ``--resume``."""

    def __init__(self, train_args: list[str], nodes: int, gpus_per_node: int, port: int = 0):
        self.train_args = train_args
        self.nodes, self.gpus_per_node, self.port = nodes, gpus_per_node, port

    def __call__(self):
        import submitit
        from detectron2.engine import launch

        from disco_detr.engine.launch import argument_parser

        env = submitit.JobEnvironment()
        train_net = _train_net()
        args = argument_parser().parse_args(self.train_args)
        if env.num_nodes == self.nodes:  # SLURM: one task per node, the first node is the rendezvous
            master, rank = env.hostnames[0], env.node
        else:  # the local executor: the "nodes" are tasks on this machine
            master, rank = "127.0.0.1", env.global_rank
        # the same port on every node and after a requeue (the job id stays)
        port = self.port or 20000 + int("".join(c for c in str(env.job_id) if c.isdigit()) or 0) % 20000
        return launch(train_net.main, self.gpus_per_node, num_machines=self.nodes, machine_rank=rank,
                      dist_url=f"tcp://{master}:{port}", args=(args,))

    def checkpoint(self, *args, **kwargs):
        import submitit

        resumed = [a for a in self.train_args if a != "--resume"]
        resumed.insert(0, "--resume")
        return submitit.helpers.DelayedSubmission(TrainJob(resumed, self.nodes, self.gpus_per_node, self.port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the LazyConfig to train")
    parser.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="training processes per machine (default 8)")
    parser.add_argument("--cpus-per-gpu", type=int, default=8, help="CPU cores per training process (data loading)")
    parser.add_argument("--mem-gb", type=int, default=0, help="memory per node in GB (0: the partition's default)")
    parser.add_argument("--partition", default="", help="SLURM partition")
    parser.add_argument("--account", default="", help="SLURM account")
    parser.add_argument("--qos", default="", help="SLURM QOS")
    parser.add_argument("--constraint", default="", help="SLURM constraint (e.g. a GPU type)")
    parser.add_argument("--time-min", type=int, default=4320, help="time limit per job in minutes (default 3 days)")
    parser.add_argument("--signal-delay-s", type=int, default=120,
                        help="seconds before the limit when SLURM signals the job (default 120)")
    parser.add_argument("--name", default="", help="job name (default: the config's file name)")
    parser.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                        help="slurm, or local processes on this machine (one per node) for a test")
    parser.add_argument("--port", type=int, default=0,
                        help="rendezvous port on the first node (default: 20000 + job id mod 20000)")
    parser.add_argument("--resume", action="store_true", help="continue the run in train.output_dir")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value, as lazyconfig_train_net.py")
    return parser


def main(argv: list[str] | None = None):
    args = build_parser().parse_args(argv)
    try:
        import submitit
    except ImportError:
        raise SystemExit("tools/submit.py needs submitit: pip install submitit") from None
    from disco_detr.config import load_config

    if args.nodes < 1 or args.gpus_per_node < 1:
        raise SystemExit("--nodes and --gpus-per-node must be >= 1")
    cfg = load_config(args.config_file, args.opts)  # fails here, before queueing, on a bad key
    output_dir = os.path.abspath(cfg.train.output_dir)
    folder = os.path.join(output_dir, "submitit")
    os.makedirs(folder, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster=args.cluster)
    name = args.name or os.path.splitext(os.path.basename(args.config_file))[0]
    params = {"name": name, "nodes": args.nodes, "tasks_per_node": 1, "timeout_min": args.time_min}
    if args.cluster == "slurm":
        params.update(gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_gpu * args.gpus_per_node,
                      slurm_signal_delay_s=args.signal_delay_s)
        extra = {"slurm_partition": args.partition, "slurm_account": args.account, "slurm_qos": args.qos,
                 "slurm_constraint": args.constraint, "mem_gb": args.mem_gb}
        params.update({k: v for k, v in extra.items() if v})
    else:  # the local executor runs one process per task, all on this machine
        params.update(nodes=1, tasks_per_node=args.nodes)
    executor.update_parameters(**params)
    train_args = ["--config-file", os.path.abspath(args.config_file), "--num-gpus", str(args.gpus_per_node),
                  "--num-machines", str(args.nodes), *(["--resume"] if args.resume else []),
                  *[o for o in args.opts if o != "--"], f"train.output_dir={output_dir}"]
    job = executor.submit(TrainJob(train_args, args.nodes, args.gpus_per_node, args.port))
    print(f"submitted job {job.job_id} ({args.nodes} x {args.gpus_per_node}, {name}); logs: {folder}; "
          f"run folder: {output_dir}", flush=True)
    if args.wait:
        results = job.results()
        print(f"job {job.job_id} finished: {len(results)} task(s)")
    return job
