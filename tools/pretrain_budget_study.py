#!/usr/bin/env python
"""Does pre-training help at demo scale? The demo story over a grid of pre-training budgets and seeds.

For every seed: one fine-tuning run from the ImageNet backbone only ("none"); for every
pre-training budget B: DisCo DETR and Siamese DETR pre-training for B iterations, then a
fine-tuning run from each. All fine-tuning runs have the same budget (--finetune-iters).
Each step is a tools/lazyconfig_train_net.py run with its own folder:

    <out>/seed<S>/finetune_none
    <out>/seed<S>/budget<B>/pretrain_{disco,siamese}, finetune_{disco,siamese}

A step whose model_final.pth exists is not run again (the study can be stopped and
restarted; --force reruns). At the end it writes <out>/study.json (every AP / AP50 / AP75,
step times), <out>/study_<metric>.png (fine-tuning AP against pre-training budget: mean line,
+- one standard deviation band over seeds, and every seed as a dot; "none" does not
depend on the budget and is drawn flat) and prints the whole grid as a table.

The default grid (budgets 150 600, seeds 0 1 2, fine-tuning 500 iterations) is 3 + 3 x 2 x 4 = 27
training runs: about 2 h 10 min on 2 CPU cores at the README's timings (per seed: ~3 min per
500-iteration fine-tuning, ~3 min per 150-iteration and ~11 min per 600-iteration pre-training).
--device cuda runs every step on a GPU.
--tiny runs the tests' tiny configs (tests/configs) in-process on the registered demo
data ($DISCO_DEMO_ROOT, which must already hold the unlabelled proposals), for the tests.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTS = ("none", "siamese", "disco")
LABELS = {"none": "no DETR pre-training (ImageNet backbone)", "siamese": "Siamese DETR", "disco": "DisCo DETR"}


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_plan(args) -> dict:
    """The configs, overrides and weights of the full or the tiny study."""
    if args.tiny:
        tiny = os.path.join(REPO, "tests", "configs")
        return {"finetune": os.path.join(tiny, "tiny_cond.py"), "disco": os.path.join(tiny, "tiny_disco.py"),
                "siamese": os.path.join(tiny, "tiny_disco.py"),
                "siamese_overrides": ["model.use_dmoqf=False", "model.fusion=add", "model.weight_contrast=0.0"],
                "init_none": "", "prepare": False, "probe_size": "[96,128]"}
    demo = _load_tool("run_demo")
    return {"finetune": "configs/demo/cond.py", "disco": "configs/demo/disco_cond.py",
            "siamese": "configs/demo/siamese_cond.py", "siamese_overrides": [],
            "init_none": demo.WEIGHTS, "prepare": True, "probe_size": "[160,300]"}


class Runner:
    """Runs one training step: a subprocess of tools/lazyconfig_train_net.py, or (in_process)
    its ``main`` in this process (the tiny study: no start-up cost per step)."""

    def __init__(self, in_process: bool, force: bool, common: list[str], root: str):
        self.root = root
        self.in_process = in_process
        self.force = force
        self.common = common
        self.timings: dict[str, float] = {}
        self._tool = _load_tool("lazyconfig_train_net") if in_process else None

    def __call__(self, out: str, config: str, *overrides: str) -> str:
        if not self.force and os.path.exists(os.path.join(out, "model_final.pth")):
            return out
        opts = [*self.common, f"train.output_dir={out}", *overrides]
        start = time.time()
        if self.in_process:
            from detectron2.engine import default_argument_parser

            self._tool.main(default_argument_parser().parse_args(["--config-file", config, *opts]))
        else:
            import subprocess

            cmd = [sys.executable, "tools/lazyconfig_train_net.py", "--config-file", config, *opts]
            print(f"\n>>> {' '.join(cmd)}", flush=True)
            subprocess.run(cmd, cwd=REPO, check=True)
        self.timings[os.path.relpath(out, self.root)] = time.time() - start
        return out


def final_metrics(output_dir: str) -> dict:
    """The last bbox AP / AP50 / AP75 in the run's metrics.json."""
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
        raise RuntimeError(f"No evaluation results in {path}")
    return found


def run_study(args) -> dict:
    from tqdm import tqdm

    plan = study_plan(args)
    if plan["prepare"]:
        # the demo configs find the data through $DISCO_DEMO_ROOT (default datasets/demo)
        os.environ["DISCO_DEMO_ROOT"] = os.path.join(REPO, args.data)
        demo = _load_tool("run_demo")
        demo.run(["tools/make_demo_data.py", "--out", args.data])
        demo.run(["tools/prepare_demo_backbone.py", "--out", demo.WEIGHTS])
        demo.run(["tools/generate_proposals.py", "--images", f"{args.data}/images/unlabelled",
                  "--out", f"{args.data}/proposals/unlabelled.sqlite", "--workers", "2"])
    common = [f"train.device={args.device}"] if args.device else []
    runner = Runner(args.tiny, args.force, common, args.out)
    ft = [f"train.max_iter={args.finetune_iters}"]
    pre_analysis = []
    if args.analysis_period > 0:  # record reference points (every run)
        pre_analysis = [f"train.analysis.reference_period={args.analysis_period}",
                        f"train.analysis.probe_size={plan['probe_size']}"]
        ft += pre_analysis
    if args.query_distance:  # query -> object distance at the fine-tuning evaluations
        ft.append("train.analysis.query_distance=True")
    results = {"none": {}, "siamese": {}, "disco": {}}
    steps = len(args.seeds) * (1 + 4 * len(args.budgets))
    with tqdm(total=steps, desc="budget study", unit="run") as bar:
        for seed in args.seeds:
            seed_dir = os.path.join(args.out, f"seed{seed}")
            s = [f"train.seed={seed}"]
            out = runner(os.path.join(seed_dir, "finetune_none"), plan["finetune"], *s, *ft,
                         f"train.init_checkpoint={plan['init_none']}")
            results["none"][str(seed)] = final_metrics(out)
            bar.update()
            for budget in args.budgets:
                bdir = os.path.join(seed_dir, f"budget{budget}")
                for start in ("disco", "siamese"):
                    extra = plan["siamese_overrides"] if start == "siamese" else []
                    pre = runner(os.path.join(bdir, f"pretrain_{start}"), plan[start], *s, *extra, *pre_analysis,
                                 f"train.max_iter={budget}", f"train.checkpointer.period={budget}")
                    bar.update()
                    out = runner(os.path.join(bdir, f"finetune_{start}"), plan["finetune"], *s, *ft,
                                 f"train.init_checkpoint={pre}/model_final.pth")
                    results[start].setdefault(str(budget), {})[str(seed)] = final_metrics(out)
                    bar.update()
    return {"budgets": list(args.budgets), "seeds": list(args.seeds), "finetune_iters": args.finetune_iters,
            "tiny": bool(args.tiny), "results": results, "timings_s": runner.timings}


def grid(study: dict, metric: str) -> dict:
    """start -> (budgets, seeds) array of ``metric``; "none" as (1, seeds)."""
    seeds = [str(s) for s in study["seeds"]]
    res = study["results"]
    out = {LABELS["none"]: np.array([[res["none"][s][metric] for s in seeds]])}
    for start in ("siamese", "disco"):
        out[LABELS[start]] = np.array([[res[start][str(b)][s][metric] for s in seeds] for b in study["budgets"]])
    return out


def print_table(study: dict, metric: str) -> None:
    seeds = [str(s) for s in study["seeds"]]
    res = study["results"]
    print(f"\nFine-tuning {metric} ({study['finetune_iters']} iterations) by pre-training budget; "
          f"seeds {', '.join(seeds)}; mean +- std over seeds, then each seed")
    print(f"| {'start':<13} | {'budget':>6} | {'mean':>6} | {'std':>5} | " + " | ".join(f"s{s:>5}" for s in seeds) + " |")
    rows = [("none", "-", [res["none"][s][metric] for s in seeds])]
    for b in study["budgets"]:
        for start in ("siamese", "disco"):
            rows.append((start, str(b), [res[start][str(b)][s][metric] for s in seeds]))
    for start, b, vals in rows:
        v = np.array(vals, dtype=float)
        print(f"| {start:<13} | {b:>6} | {v.mean():6.2f} | {v.std():5.2f} | "
              + " | ".join(f"{x:6.2f}" for x in v) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="pre-training iterations (default 150 600; tiny: 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; tiny: 0)")
    parser.add_argument("--finetune-iters", type=int, default=None, help="fine-tuning iterations (default 500; tiny: 1)")
    parser.add_argument("--data", default="datasets/demo", help="demo data folder (made if missing)")
    parser.add_argument("--out", default="output/budget_study", help="output folder of the study")
    parser.add_argument("--device", default="", help="train.device of every step (default: the configs' 'auto')")
    parser.add_argument("--metric", choices=("AP", "AP50", "AP75"), default="AP", help="metric plotted")
    parser.add_argument("--analysis-period", type=int, default=0,
                        help="K > 0: every run records its reference points every K iterations "
                             "(train.analysis.reference_period; see tools/analyze.py cs). Default 0: off")
    parser.add_argument("--query-distance", action="store_true",
                        help="fine-tuning runs record the query -> object distance at their evaluations "
                             "(train.analysis.query_distance; one more inference pass over the val set each)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs, in-process (for the tests)")
    parser.add_argument("--force", action="store_true", help="rerun steps whose model_final.pth exists")
    args = parser.parse_args(argv)
    args.budgets = args.budgets or ([1] if args.tiny else [150, 600])
    args.seeds = args.seeds or ([0] if args.tiny else [0, 1, 2])
    args.finetune_iters = args.finetune_iters or (1 if args.tiny else 500)
    if args.tiny and not args.device:
        args.device = "cpu"
    if min(args.budgets) < 1 or args.finetune_iters < 1:
        parser.error("budgets and --finetune-iters must be >= 1")

    study = run_study(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(study, f, indent=1)
    print_table(study, args.metric)
    from disco_detr.analysis.plots import plot_budget_study

    path = plot_budget_study(study["budgets"], grid(study, args.metric), os.path.join(args.out, f"study_{args.metric}.png"),
                             args.metric)
    print(f"wrote {path} and {os.path.join(args.out, 'study.json')}")
    return study


if __name__ == "__main__":
    main()
