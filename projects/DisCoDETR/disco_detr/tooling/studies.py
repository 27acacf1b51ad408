"""The pre-training budget study behind tools/pretrain_budget_study.py. Does pre-training help at demo scale?
The demo story over a grid of pre-training budgets and seeds.

For every seed: one fine-tuning run from the ImageNet backbone only ("none"); for every
pre-training budget B and every pre-training start of --starts (default all: DisCo DETR,
DMOQF only = DisCo without CLD, CLD only = DisCo with Siamese DETR's fixed groups, Siamese
DETR, DETReg, DisCo DETR on DETReg's selective-search proposals), pre-training for B
iterations, then a fine-tuning run from it. All fine-tuning runs
have the same budget (--finetune-iters). Each step is a tools/lazyconfig_train_net.py run
with its own folder:

    <out>/seed<S>/finetune_none
    <out>/seed<S>/budget<B>/pretrain_<start>, finetune_<start>

--variant NAME runs the story of another detector (a row of disco_detr.variants.VARIANTS) with its demo
presets (configs/demo/NAME.py, disco_NAME.py, siamese_NAME.py, detreg_NAME.py), as tools/run_demo.py --variant
does.

A step whose model_final.pth exists is not run again (the study can be stopped and
restarted, or a budget or seed added later; --force reruns). Runs go --jobs at a time
(default 3, each with --threads 1 torch thread, as make demo; a run's numbers depend on its
thread count, not on what shares the machine), each fine-tuning as soon as its pre-training
is done. At the end it writes <out>/study.json (AP / AP50 / AP75 of every fine-tuning, with
its CS and last query -> object distance when recorded, every pre-training's last
pre-training health metrics (README, "Pre-training health"), and the step times),
<out>/study_<metric>.png (fine-tuning AP against pre-training budget: mean line, +- one
standard deviation band over seeds, and every seed as a dot; "none" does not depend on the
budget and is drawn flat) and prints the whole grid as tables (AP, and CS and distance when
recorded: --analysis-period 25 --query-distance records them as make demo does).

The README's budget study reports the grid it ran (budgets, seeds, times) and how the demo's
default budget was chosen from it.
--device cuda runs every step on a GPU.
--tiny runs the tests' tiny configs (tests/configs) in-process on the registered demo
data ($DISCO_DEMO_ROOT, which must already hold the unlabelled proposals), for the tests.

The plan, the step runner, the demo preparation, the shared options and the readers of a run's results are
also the label-efficiency study's (label_efficiency_study.py).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import time

import numpy as np

from ..analysis.summary import pretrain_health, summarize
from ..variants import METHODS, REPO_ROOT, VARIANTS
from . import demo_runs

REPO = str(REPO_ROOT)
#: pre-training starts: name -> (demo preset prefix, overrides of that preset)
PRETRAIN_STARTS = {
    "disco": ("disco", []),
    "dmoqf_only": ("disco", ["model.weight_contrast=0.0"]),
    "cld_only": ("disco", ["model.use_dmoqf=False"]),
    "siamese": ("siamese", []),
    "detreg": ("detreg", []),
    # DisCo DETR on DETReg's selective-search proposals: separates the proposals from the method
    "disco_ss": ("disco", ["dataloader.train.dataset.names=disco_demo_unlabelled_ss"]),
}
#: the proposal method (tools/generate_proposals.py --method) each start reads
PROPOSAL_METHOD = {**{m.name: m.proposals for m in METHODS.values()}, "disco_ss": "selective_search"}
LABELS = {"none": "no DETR pre-training (ImageNet backbone)", **{m.name: m.label for m in METHODS.values()},
          "dmoqf_only": "DisCo DETR, DMOQF only (no CLD)", "cld_only": "DisCo DETR, CLD only (fixed groups)",
          "disco_ss": "DisCo DETR on selective-search proposals"}
HEALTH = ("group_agreement", "group_agreement_chance", "reference_offset", "reference_spread",
          "reference_displacement", "matched_iou", "embedding_cosine")


@functools.cache
def _load_tool(name):
    """A tool of tools/ by file name (tools/ is not a package): the one place this module reaches
    tools/lazyconfig_train_net.py (a detectron2-style script whose main ``launch`` runs)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_plan(args) -> dict:
    """The configs, overrides and weights of the full or the tiny study."""
    if args.tiny:
        tiny = os.path.join(REPO, "tests", "configs")
        plan = {"finetune": os.path.join(tiny, "tiny_cond.py"), "init_none": "", "prepare": False,
                "probe_size": "[96,128]"}
        presets = {"disco": (os.path.join(tiny, "tiny_disco.py"), []),
                   "siamese": (os.path.join(tiny, "tiny_disco.py"), ["model.use_dmoqf=False", "model.weight_contrast=0.0"]),
                   "detreg": (os.path.join(tiny, "tiny_detreg.py"), [])}
    else:
        row = VARIANTS[args.variant]
        plan = {"finetune": row.demo_config, "init_none": demo_runs.WEIGHTS, "prepare": True,
                "probe_size": "[160,300]"}
        presets = {m: (row.demo_pretrain_config(m), []) for m in METHODS}
    for start in args.starts:  # the preset and overrides of every pre-training start
        if start != "none":
            prefix, overrides = PRETRAIN_STARTS[start]
            config, base = presets[prefix]
            plan[start] = (config, base + overrides)
    return plan


def pretrain_starts(starts: list[str]) -> list[str]:
    """The starts that pre-train (all but "none")."""
    return [s for s in starts if s != "none"]


def study_steps(args, plan: dict) -> list[tuple[str, str, list[str], list[str]]]:
    """The study's training runs as ``(output_dir, config, overrides, dependencies)``, in the
    order of preference (longest pre-trainings first; a fine-tuning depends on its pre-training)."""
    ft = [f"train.max_iter={args.finetune_iters}"]
    pre_analysis = []
    if args.analysis_period > 0:  # record reference points (every run)
        pre_analysis = [f"train.analysis.reference_period={args.analysis_period}",
                        f"train.analysis.probe_size={plan['probe_size']}"]
        ft += pre_analysis
    if args.query_distance:  # query -> object distance at the fine-tuning evaluations
        ft.append("train.analysis.query_distance=True")
    pretrain, finetune, none = [], [], []
    for budget in sorted(args.budgets, reverse=True):
        for seed in args.seeds:
            bdir = os.path.join(args.out, f"seed{seed}", f"budget{budget}")
            for start in pretrain_starts(args.starts):
                config, extra = plan[start]
                pre = os.path.join(bdir, f"pretrain_{start}")
                pretrain.append((pre, config, [f"train.seed={seed}", *extra, *pre_analysis,
                                                    f"train.max_iter={budget}", f"train.checkpointer.period={budget}"], []))
                finetune.append((os.path.join(bdir, f"finetune_{start}"), plan["finetune"],
                                  [f"train.seed={seed}", *ft, f"train.init_checkpoint={pre}/model_final.pth"], [pre]))
    for seed in args.seeds if "none" in args.starts else []:
        none.append((os.path.join(args.out, f"seed{seed}", "finetune_none"), plan["finetune"],
                     [f"train.seed={seed}", *ft, f"train.init_checkpoint={plan['init_none']}"], []))
    return in_order(args, none, pretrain, finetune)


def in_order(args, none: list, pretrain: list, finetune: list) -> list:
    """The steps in their order of preference: in-process (--tiny) every pre-training before the fine-tunings;
    side by side the fine-tunings first, each starting as soon as its pre-training is done."""
    return none + pretrain + finetune if args.tiny else finetune + pretrain + none


def run_steps(args, steps, what: str = "budget study") -> dict:
    """Run the steps whose ``model_final.pth`` is missing (all with --force); {output_dir: seconds}.
    --tiny: in this process, one after the other; otherwise ``--jobs`` subprocesses of
    tools/lazyconfig_train_net.py side by side with ``--threads`` torch threads each."""
    common = [f"train.device={args.device}"] if args.device else []
    todo = [s for s in steps if args.force or not os.path.exists(os.path.join(s[0], "model_final.pth"))]
    rel = lambda out: os.path.relpath(out, args.out)  # noqa: E731
    if args.tiny:
        from detectron2.engine import default_argument_parser
        from tqdm import tqdm

        train_net, timings = _load_tool("lazyconfig_train_net"), {}
        for out, config, overrides, _ in tqdm(todo, desc=what, unit="run"):
            start = time.time()
            opts = ["--config-file", config, *common, f"train.output_dir={out}", *overrides]
            train_net.main(default_argument_parser().parse_args(opts))
            timings[rel(out)] = time.time() - start
        return timings
    graph = {}
    for out, config, overrides, deps in todo:
        os.makedirs(out, exist_ok=True)
        cmd = ["tools/lazyconfig_train_net.py", "--config-file", config, *common, f"train.output_dir={out}",
               *overrides]
        graph[rel(out)] = (cmd, os.path.join(out, "run.log"), [rel(d) for d in deps if any(d == t[0] for t in todo)])
    print(f"{what}: {len(graph)} of {len(steps)} training runs to do, {args.jobs} at a time", flush=True)
    return demo_runs.run_graph(graph, args.jobs, args.threads)


def prepare(args, plan: dict) -> None:
    """The full (not --tiny) study's inputs, each made only if missing: the demo data in --data, the ImageNet
    backbone, and the unlabelled proposals of every pre-training start's method."""
    if plan["prepare"]:
        # the demo configs find the data through $DISCO_DEMO_ROOT (default datasets/demo)
        os.environ["DISCO_DEMO_ROOT"] = os.path.join(REPO, args.data)
        demo_runs.run(["tools/make_demo_data.py", "--out", args.data])
        demo_runs.run(["tools/prepare_demo_backbone.py", "--out", demo_runs.WEIGHTS])
        demo_runs.make_proposals(args.data, {PROPOSAL_METHOD.get(s, "edgeboxes") for s in pretrain_starts(args.starts)})


def measured(run_dir: str) -> dict:
    """AP / AP50 / AP75 of a fine-tuning run, and its CS and last query -> object distance (None: not recorded)."""
    row = summarize(run_dir)
    return {**demo_runs.final_metrics(run_dir), "cs": row["cs"], "distance": row["distance"]}


def run_study(args) -> dict:
    plan = study_plan(args)
    prepare(args, plan)
    timings = run_steps(args, study_steps(args, plan))
    results = {start: {} for start in args.starts}
    for seed in args.seeds:
        seed_dir = os.path.join(args.out, f"seed{seed}")
        if "none" in args.starts:
            results["none"][str(seed)] = measured(os.path.join(seed_dir, "finetune_none"))
        for budget in args.budgets:
            for start in pretrain_starts(args.starts):
                bdir = os.path.join(seed_dir, f"budget{budget}")
                row = measured(os.path.join(bdir, f"finetune_{start}"))
                row["pretrain_health"] = pretrain_health(os.path.join(bdir, f"pretrain_{start}"))
                results[start].setdefault(str(budget), {})[str(seed)] = row
    return {"variant": args.variant, "starts": list(args.starts), "budgets": list(args.budgets),
            "seeds": list(args.seeds), "finetune_iters": args.finetune_iters, "tiny": bool(args.tiny),
            "results": results, "timings_s": timings}


def grid(study: dict, metric: str) -> dict:
    """start -> (budgets, seeds) array of ``metric``; "none" as (1, seeds)."""
    seeds = [str(s) for s in study["seeds"]]
    res = study["results"]
    out = {LABELS["none"]: np.array([[res["none"][s][metric] for s in seeds]])} if "none" in res else {}
    for start in pretrain_starts(study["starts"]):
        out[LABELS[start]] = np.array([[res[start][str(b)][s][metric] for s in seeds] for b in study["budgets"]])
    return out


def print_table(study: dict, metric: str) -> None:
    """One table of ``metric`` (a fine-tuning metric, or a pre-training health metric: pre-training
    starts only) by start and budget: mean, std over seeds, then each seed."""
    seeds = [str(s) for s in study["seeds"]]
    res = study["results"]
    health = metric in HEALTH
    value = (lambda row: row["pretrain_health"].get(metric)) if health else (lambda row: row[metric])  # noqa: E731
    what = f"Pre-training health, {metric} (last log)" if health else \
        f"Fine-tuning {metric} ({study['finetune_iters']} iterations)"
    print(f"\n{what} by pre-training budget; seeds {', '.join(seeds)}; mean +- std over seeds, then each seed")
    print(f"| {'start':<13} | {'budget':>6} | {'mean':>6} | {'std':>5} | " + " | ".join(f"s{s:>5}" for s in seeds) + " |")
    print("|---|---|---|---|" + "---|" * len(seeds))  # a Markdown table
    rows = [] if health or "none" not in res else [("none", "-", [res["none"][s][metric] for s in seeds])]
    for b in study["budgets"]:
        for start in pretrain_starts(study["starts"]):
            vals = [value(res[start][str(b)][s]) for s in seeds]
            if all(v is not None for v in vals):
                rows.append((start, str(b), vals))
    spec, std_spec = ("6.2f", "5.2f") if metric.startswith("AP") else ("6.4f", "6.4f")
    for start, b, vals in rows:
        v = np.array(vals, dtype=float)
        print(f"| {start:<13} | {b:>6} | {v.mean():{spec}} | {v.std():{std_spec}} | "
              + " | ".join(f"{x:{spec}}" for x in v) + " |")


def add_study_arguments(parser, out: str, starts: str) -> None:
    """The options every study shares (variant, starts, jobs, threads, data, out, device, metric, tiny, force);
    ``out``: the default output folder; ``starts``: the help text's defaults of --starts."""
    parser.add_argument("--variant", default=demo_runs.DEFAULT_VARIANT, choices=sorted(VARIANTS),
                        help="detector with demo presets (default cond, make demo's)")
    parser.add_argument("--starts", nargs="+", choices=("none", *PRETRAIN_STARTS), default=None,
                        help=f"starts compared (default {starts})")
    parser.add_argument("--jobs", type=int, default=3, help="training runs side by side (default 3, as make demo)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each run (default 1, as make demo: a run's numbers depend on it)")
    parser.add_argument("--data", default="datasets/demo", help="demo data folder (made if missing)")
    parser.add_argument("--out", default=out, help=f"output folder of the study (default {out})")
    parser.add_argument("--device", default="", help="train.device of every step (default: the configs' 'auto')")
    parser.add_argument("--metric", choices=("AP", "AP50", "AP75"), default="AP", help="metric plotted")
    parser.add_argument("--tiny", action="store_true", help="tiny configs, in-process (for the tests)")
    parser.add_argument("--force", action="store_true", help="rerun steps whose model_final.pth exists")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(parser, "output/budget_study",
                        "all: none " + " ".join(PRETRAIN_STARTS) + "; tiny: none siamese disco")
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="pre-training iterations (default 50 300; tiny: 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; tiny: 0)")
    parser.add_argument("--finetune-iters", type=int, default=None,
                        help="fine-tuning iterations (default 400, the demo's; tiny: 1)")
    parser.add_argument("--analysis-period", type=int, default=0,
                        help="K > 0: every run records its reference points every K iterations "
                             "(train.analysis.reference_period; see tools/analyze.py cs). Default 0: off")
    parser.add_argument("--query-distance", action="store_true",
                        help="fine-tuning runs record the query -> object distance at their evaluations "
                             "(train.analysis.query_distance; one more inference pass over the val set each)")
    args = parser.parse_args(argv)
    args.budgets = args.budgets or ([1] if args.tiny else [50, 300])
    args.seeds = args.seeds or ([0] if args.tiny else [0, 1, 2])
    args.starts = args.starts or (["none", "siamese", "disco"] if args.tiny else ["none", *PRETRAIN_STARTS])
    args.finetune_iters = args.finetune_iters or (1 if args.tiny else 400)
    if args.tiny and not args.device:
        args.device = "cpu"
    if min(args.budgets) < 1 or args.finetune_iters < 1 or args.jobs < 1 or args.threads < 1:
        parser.error("budgets, --finetune-iters, --jobs and --threads must be >= 1")

    study = run_study(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(study, f, indent=1)
    rows = [row for start, res in study["results"].items()
            for row in (res.values() if start == "none" else (r for b in res.values() for r in b.values()))]
    for metric in (args.metric, "cs", "distance"):
        if all(row.get(metric) is not None for row in rows):  # CS / distance only when recorded
            print_table(study, metric)
    for metric in HEALTH:
        print_table(study, metric)
    from disco_detr.analysis.plots import plot_budget_study

    path = plot_budget_study(study["budgets"], grid(study, args.metric), os.path.join(args.out, f"study_{args.metric}.png"),
                             args.metric)
    print(f"wrote {path} and {os.path.join(args.out, 'study.json')}")
    return study
