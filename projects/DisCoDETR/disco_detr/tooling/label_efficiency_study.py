"""The label-efficiency study behind tools/label_efficiency_study.py: where does pre-training pay? Fine-tuning AP
against the fraction of labelled training images, the figure self-supervised detection papers show.

For every pre-training start of --starts (default none, DETReg, Siamese DETR, DisCo DETR): one pre-training of
--pretrain-iters iterations on the demo's unlabelled images (seed 0; "none" starts from the ImageNet backbone),
then for every labelled fraction of --fractions and every fold of --folds one fine-tuning from it on the label
split ``<train set>_<P>pct_fold<F>`` (disco_detr/data/label_splits.py; fraction 1 is the whole training set), of
--finetune-iters iterations whatever the fraction, evaluated on the full val split. Fold F also fine-tunes with
``train.seed=F``, so the spread of a cell is over both the labelled images and the seed (at 100 % the folds
hold the same images: only the seed differs). Each fine-tuning writes its split file to
``<run>/label_splits/``. Each step is a tools/lazyconfig_train_net.py run with its own folder:

    <out>/pretrain_<start>
    <out>/<P>pct/fold<F>/finetune_<start>

Runs and resumes as the budget study does (disco_detr/tooling/studies.py, whose plan, step runner, demo
preparation and options it reuses): a step whose model_final.pth exists is not run again (--force reruns),
--jobs runs side by side with --threads torch threads each, a fine-tuning as soon as its pre-training is done.
--variant NAME: the story of another detector with its demo presets. --tiny: the tests' tiny configs
in-process on the registered demo data ($DISCO_DEMO_ROOT, which must already hold the unlabelled proposals).

At the end it writes <out>/study.json (AP / AP50 / AP75 of every fine-tuning, the mean +- std of every
(start, fraction) cell, every pre-training's last health metrics and the step times), <out>/study_<metric>.png
(the metric against the labelled fraction: one line per start, +- one standard deviation band over folds, every
fold as a dot) and prints the cells and the health metrics as Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from detectron2.config import LazyConfig

from ..data.label_splits import DEFAULT_FRACTIONS, LabelSplit, fraction_dataset
from . import studies

#: fractions with a registered split of every training set (and 1 = the whole set)
FRACTIONS = (*DEFAULT_FRACTIONS, 1.0)
HEALTH = studies.HEALTH


def token(fraction: float) -> str:
    """``5pct`` / ``100pct``: a fraction's folder name and key in study.json."""
    return LabelSplit("x", fraction=fraction).token


def study_steps(args, plan: dict) -> list[tuple[str, str, list[str], list[str]]]:
    """The study's training runs as ``(output_dir, config, overrides, dependencies)`` in the order of preference
    (:func:`disco_detr.tooling.studies.in_order`): a fine-tuning depends on its start's pre-training."""
    parent = LazyConfig.load(os.path.join(studies.REPO, plan["finetune"])).dataloader.train.dataset.names
    pretrain, finetune, none = [], [], []
    inits = {"none": plan["init_none"]}
    for start in studies.pretrain_starts(args.starts):
        config, extra = plan[start]
        pre = os.path.join(args.out, f"pretrain_{start}")
        pretrain.append((pre, config, ["train.seed=0", *extra, f"train.max_iter={args.pretrain_iters}",
                                       f"train.checkpointer.period={args.pretrain_iters}"], []))
        inits[start] = f"{pre}/model_final.pth"
    for fraction in sorted(args.fractions):
        for fold in args.folds:
            cell = os.path.join(args.out, token(fraction), f"fold{fold}")
            for start in args.starts:
                step = (os.path.join(cell, f"finetune_{start}"), plan["finetune"],
                        [f"train.seed={fold}", f"train.max_iter={args.finetune_iters}",
                         f"dataloader.train.dataset.names={fraction_dataset(parent, fraction, fold)}",
                         f"train.init_checkpoint={inits[start]}"],
                        [] if start == "none" else [os.path.join(args.out, f"pretrain_{start}")])
                (none if start == "none" else finetune).append(step)
    return studies.in_order(args, none, pretrain, finetune)


def run_study(args) -> dict:
    plan = studies.study_plan(args)
    studies.prepare(args, plan)
    timings = studies.run_steps(args, study_steps(args, plan), what="label-efficiency study")
    results = {start: {token(f): {str(k): studies.measured(os.path.join(args.out, token(f), f"fold{k}",
                                                                         f"finetune_{start}"))
                                  for k in args.folds} for f in sorted(args.fractions)}
               for start in args.starts}
    health = {start: studies.pretrain_health(os.path.join(args.out, f"pretrain_{start}"))
              for start in studies.pretrain_starts(args.starts)}
    study = {"variant": args.variant, "starts": list(args.starts), "fractions": sorted(args.fractions),
             "folds": list(args.folds), "pretrain_iters": args.pretrain_iters, "finetune_iters": args.finetune_iters,
             "tiny": bool(args.tiny), "results": results, "pretrain_health": health, "timings_s": timings}
    study["cells"] = {metric: cells(study, metric) for metric in ("AP", "AP50", "AP75")}
    return study


def grid(study: dict, metric: str) -> dict:
    """start label -> (fractions, folds) array of ``metric``."""
    folds = [str(k) for k in study["folds"]]
    return {studies.LABELS[start]: np.array([[study["results"][start][token(f)][k][metric] for k in folds]
                                             for f in study["fractions"]], dtype=float)
            for start in study["starts"]}


def cells(study: dict, metric: str) -> dict:
    """start -> fraction token -> {"mean", "std", "n"} of ``metric`` over the folds (std: population, ddof 0)."""
    out = {}
    for start in study["starts"]:
        values = grid({**study, "starts": [start]}, metric)[studies.LABELS[start]]
        out[start] = {token(f): {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
                      for f, v in zip(study["fractions"], values)}
    return out


def separation(study: dict, min_ap50: float = 40.0) -> dict:
    """The demo's choice rule (docs/experiments.md, "Choosing make demo") on every fraction of ``study``.

    Per fraction token: ``gap``, the largest |mean AP of a pre-trained start - mean AP of "none"| (either
    direction); ``spread``, the largest standard deviation of AP over the folds among all starts; ``best_ap50``,
    the highest mean AP50 of a start; ``eligible`` (``best_ap50 >= min_ap50``), ``separated``
    (``spread < gap / 2``) and ``ratio`` = gap / spread (inf when every spread is 0)."""
    ap, ap50 = cells(study, "AP"), cells(study, "AP50")
    out = {}
    for fraction in study["fractions"]:
        t = token(fraction)
        none = ap["none"][t]["mean"]
        gap = max(abs(ap[s][t]["mean"] - none) for s in study["starts"] if s != "none")
        spread = max(ap[s][t]["std"] for s in study["starts"])
        best = max(ap50[s][t]["mean"] for s in study["starts"])
        out[t] = {"gap": gap, "spread": spread, "best_ap50": best, "eligible": best >= min_ap50,
                  "separated": spread < gap / 2, "ratio": gap / spread if spread > 0 else float("inf")}
    return out


def demo_fraction(study: dict) -> tuple[str, bool]:
    """The fraction token the rule picks and whether its arms are separated: the separated eligible fraction with
    the largest gap / spread, else the eligible one with the largest gap / spread; ratios within 5 % of the best
    count as tied and the larger fraction wins. Raises ValueError when no fraction is eligible."""
    rows = separation(study)
    eligible = [(f, rows[token(f)]) for f in study["fractions"] if rows[token(f)]["eligible"]]
    if not eligible:
        raise ValueError("no fraction reaches the rule's AP50; the rule picks none")
    pool = [(f, r) for f, r in eligible if r["separated"]] or eligible
    best = max(r["ratio"] for _, r in pool)
    chosen = max(f for f, r in pool if r["ratio"] >= 0.95 * best)
    return token(chosen), rows[token(chosen)]["separated"]


def print_tables(study: dict, metric: str) -> None:
    """``metric``'s mean +- std per (start, fraction) cell, then the pre-training health metrics per start."""
    tokens = [token(f) for f in study["fractions"]]
    table = cells(study, metric)
    print(f"\nFine-tuning {metric} ({study['finetune_iters']} iterations) by labelled fraction; mean +- std over "
          f"folds {', '.join(map(str, study['folds']))}; pre-training {study['pretrain_iters']} iterations")
    print("| start | " + " | ".join(f"{100 * f:g} %" for f in study["fractions"]) + " |")
    print("|---|" + "---|" * len(tokens))
    for start in study["starts"]:
        print(f"| {start} | " + " | ".join(f"{table[start][t]['mean']:.2f} +- {table[start][t]['std']:.2f}"
                                           for t in tokens) + " |")
    health = study["pretrain_health"]
    if health:
        print("\nPre-training health (last log of each pre-training)")
        print("| start | " + " | ".join(HEALTH) + " |")
        print("|---|" + "---|" * len(HEALTH))
        for start, values in health.items():
            print(f"| {start} | " + " | ".join("-" if values.get(m) is None else f"{values[m]:.4f}"
                                               for m in HEALTH) + " |")
    if "none" in study["starts"] and len(study["starts"]) > 1 and len(study["folds"]) > 1:
        print("\nThe demo's choice rule (docs/experiments.md): gap = largest |pre-trained mean AP - none|, spread = "
              "largest AP std over the folds, separated when spread < gap / 2")
        print("| fraction | gap | spread | gap / spread | best AP50 | separated | eligible (AP50 >= 40) |")
        print("|---|---|---|---|---|---|---|")
        for t, r in separation(study).items():
            print(f"| {t} | {r['gap']:.2f} | {r['spread']:.2f} | {r['ratio']:.2f} | {r['best_ap50']:.2f} | "
                  f"{'yes' if r['separated'] else 'no'} | {'yes' if r['eligible'] else 'no'} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    studies.add_study_arguments(parser, "output/label_efficiency_study",
                                "none detreg siamese disco; tiny: none siamese disco")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="labelled fractions, each of " + " ".join(f"{f:g}" for f in FRACTIONS)
                             + " (default 0.05 0.1 0.25 1; tiny: 0.25 1)")
    parser.add_argument("--folds", type=int, nargs="+", default=None,
                        help="folds 0-4 (default 0 1 2; tiny: 0 1); fold F fine-tunes with train.seed=F")
    parser.add_argument("--pretrain-iters", type=int, default=None,
                        help="iterations of every pre-training (default 300, the budget study's longer budget; tiny: 1)")
    parser.add_argument("--finetune-iters", type=int, default=None,
                        help="iterations of every fine-tuning, whatever the fraction (default 400, as the budget "
                             "study; tiny: 1)")
    args = parser.parse_args(argv)
    args.fractions = args.fractions or ([0.25, 1.0] if args.tiny else [0.05, 0.10, 0.25, 1.0])
    args.folds = args.folds or ([0, 1] if args.tiny else [0, 1, 2])
    args.starts = args.starts or (["none", "siamese", "disco"] if args.tiny else ["none", "detreg", "siamese", "disco"])
    args.pretrain_iters = args.pretrain_iters or (1 if args.tiny else 300)
    args.finetune_iters = args.finetune_iters or (1 if args.tiny else 400)
    if args.tiny and not args.device:
        args.device = "cpu"
    unknown = [f for f in args.fractions if not any(abs(f - g) < 1e-9 for g in FRACTIONS)]
    if unknown:
        parser.error(f"--fractions {unknown}: a fraction must have a registered split, one of "
                     + " ".join(f"{f:g}" for f in FRACTIONS))
    if not set(args.folds) <= {0, 1, 2, 3, 4} or len(set(args.folds)) != len(args.folds):
        parser.error("--folds: distinct folds among 0 1 2 3 4")
    if min(args.pretrain_iters, args.finetune_iters, args.jobs, args.threads) < 1:
        parser.error("--pretrain-iters, --finetune-iters, --jobs and --threads must be >= 1")

    study = run_study(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(study, f, indent=1)
    print_tables(study, args.metric)
    from disco_detr.analysis.plots import plot_label_efficiency

    path = plot_label_efficiency([100 * f for f in study["fractions"]], grid(study, args.metric),
                                 os.path.join(args.out, f"study_{args.metric}.png"), args.metric)
    print(f"wrote {path} and {os.path.join(args.out, 'study.json')}")
    return study
