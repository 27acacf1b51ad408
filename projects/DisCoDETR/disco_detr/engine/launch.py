"""What tools/lazyconfig_train_net.py runs around the trainer: its argument parser, the set-up of a run
(logging, the saved config), ``--eval-only`` (evaluate one checkpoint) and the one-line summary of the results.

The console log stays short: the config (``<train.output_dir>/config.yaml``), the environment report
(``env.txt``) and the model print (``model.txt``, :meth:`Trainer.build_model`) go to files of the output folder,
and the log names them."""
import argparse
import os
import sys

from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..checkpoint import DisCoCheckpointer
from .trainer import Trainer

__all__ = ["argument_parser", "evaluate_checkpoint", "setup", "summarize"]

EXAMPLES = """\
Examples (LazyConfig files under configs/; config overrides key=value go last):

Train on one machine (GPUs when there are, else the CPU):
    $ {prog} --config-file configs/demo/cond.py
Fine-tune from a pre-training checkpoint, with overrides:
    $ {prog} --config-file configs/finetune_cond_voc.py \\
        train.init_checkpoint=output/disco_cond/model_final.pth optimizer.lr=5e-5 train.max_iter=1000
Evaluate a checkpoint or a model zoo name:
    $ {prog} --config-file configs/finetune_cond_coco.py --eval-only train.init_checkpoint=zoo://<name>
Continue a killed run from the last checkpoint in train.output_dir:
    $ {prog} --config-file configs/demo/cond.py --resume
Eight GPUs per machine, two machines:
    (machine0)$ {prog} --config-file <config> --num-gpus 8 --num-machines 2 --machine-rank 0 --dist-url tcp://<host>:<port>
    (machine1)$ {prog} --config-file <config> --num-gpus 8 --num-machines 2 --machine-rank 1 --dist-url tcp://<host>:<port>
"""


def argument_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """detectron2's standard training arguments, with LazyConfig examples and overrides as ``key=value``."""
    prog = prog or os.path.basename(sys.argv[0]) or "lazyconfig_train_net.py"
    parser = default_argument_parser(epilog=EXAMPLES.format(prog=prog))
    parser.prog = prog
    for action in parser._actions:
        if action.dest == "opts":
            action.help = "config overrides key=value (e.g. train.max_iter=100 optimizer.lr=1e-4), after the options"
        elif action.dest == "config_file":
            action.help = "a LazyConfig .py file (configs/...) or a config.yaml saved by an earlier run"
    return parser


def setup(cfg, args) -> None:
    """detectron2's ``default_setup`` with a short console: logging to the console and
    ``<train.output_dir>/log.txt``, the rank and world size, the command line (it names the config file),
    the full config saved to ``config.yaml`` and the environment report to ``env.txt`` (not printed), the
    per-rank seed."""
    output_dir = cfg.train.output_dir
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    logger = setup_logger(output_dir, distributed_rank=rank)
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Command line arguments: %s", args)
    if comm.is_main_process() and output_dir:
        LazyConfig.save(cfg, os.path.join(output_dir, "config.yaml"))
        with open(os.path.join(output_dir, "env.txt"), "w") as f:
            f.write(collect_env_info() + "\n")
        logger.info("Full config saved to %s; environment report in %s", os.path.join(output_dir, "config.yaml"),
                    os.path.join(output_dir, "env.txt"))
    seed = cfg.train.get("seed", -1)
    seed_all_rng(None if seed is None or seed < 0 else seed + rank)


def evaluate_checkpoint(cfg) -> dict:
    """Builds ``cfg.model``, loads ``cfg.train.init_checkpoint`` (a path or a ``zoo://`` name, transferred
    as at the start of training) and evaluates it on ``cfg.dataloader.test``: ``{task: {metric: value}}``."""
    model = Trainer.build_model(cfg)
    DisCoCheckpointer(model, cfg.train.output_dir, allow_pickle=cfg.train.checkpoint_allow_pickle,
                      transfer_mismatch=cfg.train.transfer_mismatch).load(cfg.train.init_checkpoint)
    return Trainer.test(cfg, model)


def summarize(results) -> None:
    """One line per evaluated task on the main process: AP / AP50 / AP75 (COCO-style, in percent)."""
    if not comm.is_main_process() or not results:
        return
    for task, metrics in results.items():
        if isinstance(metrics, dict) and "AP" in metrics:
            print(f"[{task}] AP {metrics['AP']:.2f}  AP50 {metrics.get('AP50', float('nan')):.2f}  "
                  f"AP75 {metrics.get('AP75', float('nan')):.2f}", flush=True)
