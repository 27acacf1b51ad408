"""The steps of the CPU demo story behind tools/run_demo.py and tools/pretrain_budget_study.py: the demo's
tables (starts, labels, proposal stores, from the variant and method tables of :mod:`disco_detr.variants`),
running a tool, making the proposals, running a graph of training runs side by side, and reading a run's
final AP.
"""
import json
import os
import subprocess
import sys
import time

from ..variants import METHODS, REPO_ROOT, VARIANTS

REPO = str(REPO_ROOT)
WEIGHTS = "datasets/weights/mobilenet_v2_imagenet.pth"
#: make demo's variant; its runs go to output/demo, another variant's to output/demo_<name>
DEFAULT_VARIANT = "cond"
LABELS = {"none": "none (ImageNet)", **{m.name: m.label for m in METHODS.values()}}
STARTS = tuple(LABELS)
#: the proposal store of each pre-training method (tools/generate_proposals.py --method)
PROPOSALS = {"edgeboxes": "unlabelled.sqlite", "selective_search": "unlabelled_ss.sqlite"}
METHOD_OF = {m.name: m.proposals for m in METHODS.values()}


def variants() -> list[str]:
    """The variants of the table (each has a fine-tuning preset and a pre-training preset of every method)."""
    return sorted(VARIANTS)


def run(cmd, log=None):
    print(f"\n>>> {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, *cmd], cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT if log else None)
    return time.time() - start


def make_proposals(data: str, methods) -> dict:
    """The demo's unlabelled proposals of each method in ``methods`` (resumable: a complete store is
    left as it is), each into its store of :data:`PROPOSALS`. Returns {"proposals_<method>": seconds}."""
    return {f"proposals_{method}": run(["tools/generate_proposals.py", "--images", f"{data}/images/unlabelled",
                                        "--method", method, "--out", f"{data}/proposals/{PROPOSALS[method]}",
                                        "--workers", "2"])
            for method in sorted(methods)}


def run_graph(steps: dict, jobs: int, threads: int) -> dict:
    """Run ``{name: (cmd, log_path, [dependencies])}`` at most ``jobs`` at a time, each as soon as
    its dependencies are done, in the dict's order of preference. Returns {name: seconds}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending, running, done, timings = dict(steps), {}, set(), {}
    while pending or running:
        for name, (cmd, log_path, deps) in list(pending.items()):
            if len(running) < jobs and set(deps) <= done:
                print(f">>> [{name}] {' '.join(cmd)}\n    log: {log_path}", flush=True)
                log = open(log_path, "w")
                running[name] = (subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT), log, time.time())
                del pending[name]
        time.sleep(0.5)
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode:
                for p, _, _ in running.values():
                    p.terminate()
                with open(steps[name][1]) as f:
                    tail = f.read()[-3000:]
                raise SystemExit(f"step {name} failed (exit {proc.returncode}); end of {steps[name][1]}:\n{tail}")
            timings[name] = time.time() - start
            done.add(name)
            print(f"    [{name}] done in {timings[name]:.0f} s ({len(done)} of {len(steps)} steps done)", flush=True)
    return timings


def final_metrics(output_dir):
    """The last bbox AP / AP50 / AP75 that detectron2's EvalHook wrote to metrics.json."""
    found = None
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the run did not finish")
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "bbox/AP" in record:
                found = {k: record[f"bbox/{k}"] for k in ("AP", "AP50", "AP75")}
    if found is None:
        raise RuntimeError(f"No evaluation results in {output_dir}/metrics.json")
    return found
