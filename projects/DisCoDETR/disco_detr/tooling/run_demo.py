"""The whole DisCo DETR story on the demo data, on a CPU (``make demo``), for any DETR variant.

1. render the demo data and install the demo backbone weights (skipped when present);
2. proposals for the unlabelled split (resumable, skipped when complete): EdgeBoxes for DisCo and
   Siamese DETR, selective search for DETReg;
3. pre-train the demo detector with DisCo DETR, Siamese DETR and DETReg (same budget);
4. fine-tune four times under the same budget: from the ImageNet backbone only
   ("none": no DETR pre-training), from DETReg, from Siamese DETR and from DisCo DETR; each fine-tuning
   records its queries' reference points (for convergence stability, CS) and, at its
   evaluation, the distance between matched queries and their objects (the paper's Figures 4-6);
5. print a table of fine-tuning AP / AP50 / AP75 on the val split with CS and distance,
   write the analysis figures (tools/analyze.py) next to the runs, and draw the detections of the arm
   with the best AP50 on the first --pictures val images (tools/predict.py).

``--fraction P --fold F`` fine-tunes every arm on the label split ``<train set>_<P>pct_fold<F>``
(disco_detr/data/label_splits.py) instead of the whole labelled training set.

``--variant NAME`` runs the same story for another detector (a row of disco_detr.variants.VARIANTS): it
uses the row's presets ``configs/demo/NAME.py`` (fine-tuning), ``configs/demo/disco_NAME.py``,
``configs/demo/siamese_NAME.py`` and ``configs/demo/detreg_NAME.py`` (pre-training). ``make demo``
is ``--variant cond``. ``--starts`` picks the arms (default all four).

Every step is a detectron2 ``tools/lazyconfig_train_net.py`` run with its own output folder
under ``--out`` (default ``output/demo`` for cond, ``output/demo_NAME`` otherwise); a step
whose ``model_final.pth`` exists is not run again (use --force). The seven training runs go
``--jobs`` at a time (default 3: the pre-trainings and the fine-tuning without pre-training
start first, each fine-tuning after its pre-training), each with ``--threads`` torch
threads (default 1): on a small CPU, processes side by side use the cores better than
threads inside one small model. A run's numbers depend on its thread count, not on how many
runs share the machine. Whatever the table shows is reported as is: the seed and budgets
are printed with it.
"""
import argparse
import json
import os
import subprocess
import time

from detectron2.config import LazyConfig

from ..data.label_splits import fraction_dataset
from .demo_runs import (
    DEFAULT_VARIANT,
    LABELS,
    METHOD_OF,
    STARTS,
    VARIANTS,
    WEIGHTS,
    final_metrics,
    make_proposals,
    run,
    run_graph,
    variants,
)
from .paths import REPO


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default=DEFAULT_VARIANT,
                        help=f"detector preset under configs/demo/ (have: {', '.join(variants())})")
    parser.add_argument("--data", default="datasets/demo")
    parser.add_argument("--out", default=None, help="output folder (default output/demo, or output/demo_VARIANT)")
    parser.add_argument("--pretrain-iters", type=int, default=50,
                        help="pre-training iterations (default 50: chosen from tools/pretrain_budget_study.py, "
                             "see the README's budget study)")
    parser.add_argument("--finetune-iters", type=int, default=400)
    parser.add_argument("--reference-period", type=int, default=25,
                        help="fine-tuning iterations between two records of the reference points (CS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="fine-tune on this fraction of the labelled training images (a label split of "
                             "disco_detr/data/label_splits.py, e.g. 0.1; default 1: all of them)")
    parser.add_argument("--fold", type=int, default=0, help="the label split's fold (0-4; with --fraction < 1)")
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS),
                        help="the fine-tuning starts to compare (default: all four)")
    parser.add_argument("--jobs", type=int, default=3, help="training runs side by side (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training run (default 1)")
    parser.add_argument("--no-figures", action="store_true", help="skip the analysis figures")
    parser.add_argument("--pictures", type=int, default=4,
                        help="val images drawn with the detections of the arm with the best AP50 (default 4; 0: none)")
    parser.add_argument("--force", action="store_true", help="rerun steps whose results exist")
    args = parser.parse_args(argv)
    if args.variant not in variants():
        parser.error(f"--variant {args.variant!r}: not a row of disco_detr.variants.VARIANTS "
                     f"(have: {', '.join(variants())})")
    out_root = args.out or ("output/demo" if args.variant == DEFAULT_VARIANT else f"output/demo_{args.variant}")
    os.makedirs(out_root, exist_ok=True)
    timings = {}
    start = time.time()
    timings["data"] = run(["tools/make_demo_data.py", "--out", args.data])
    timings["weights"] = run(["tools/prepare_demo_backbone.py", "--out", WEIGHTS])
    starts = [s for s in STARTS if s in args.starts]  # table order
    methods = [s for s in starts if s != "none"]
    timings.update(make_proposals(args.data, {METHOD_OF[m] for m in methods}))
    common = [f"train.seed={args.seed}"]
    v = args.variant
    presets = VARIANTS[v]
    labelled = fraction_dataset(LazyConfig.load(os.path.join(REPO, presets.demo_config)).dataloader.train.dataset.names,
                                args.fraction, args.fold)
    analysis = [f"train.analysis.reference_period={args.reference_period}", "train.analysis.query_distance=True"]
    names = [f"pretrain_{m}" for m in methods] + [f"finetune_{s}" for s in ["none", *methods] if s in starts]
    out = {name: os.path.join(out_root, name) for name in names}
    inits = {"none": WEIGHTS, **{m: f"{out[f'pretrain_{m}']}/model_final.pth" for m in methods}}
    configs = {f"pretrain_{m}": presets.demo_pretrain_config(m) for m in methods}
    steps = {}
    for name in names:
        if not args.force and os.path.exists(os.path.join(out[name], "model_final.pth")):
            continue
        if name.startswith("pretrain"):
            extra, deps = [f"train.max_iter={args.pretrain_iters}"], []
        else:
            start_from = name.split("_", 1)[1]
            extra = [f"train.max_iter={args.finetune_iters}", f"train.init_checkpoint={inits[start_from]}", *analysis,
                     f"dataloader.train.dataset.names={labelled}"]
            deps = [f"pretrain_{start_from}"] if start_from != "none" else []
        os.makedirs(out[name], exist_ok=True)
        cmd = ["tools/lazyconfig_train_net.py", "--config-file", configs.get(name, presets.demo_config), *common,
               f"train.output_dir={out[name]}", *extra]
        steps[name] = (cmd, os.path.join(out[name], "run.log"), [d for d in deps if d in steps])
    timings.update(run_graph(steps, args.jobs, args.threads))
    runs = {name: out[f"finetune_{name}"] for name in starts}
    results = {name: final_metrics(path) for name, path in runs.items()}

    summary_file = os.path.join(out_root, "analysis_summary.json")
    specs = [f"{LABELS[n]}={runs[n]}" for n in runs]
    run(["tools/analyze.py", "summary", *specs, "--json", summary_file], subprocess.DEVNULL)
    with open(summary_file) as f:
        summary = json.load(f)  # {label: {"cs", "distance", "AP", "run"}}
    figures = {}
    if not args.no_figures:
        figures = {"cs.png": ["cs", *specs]}
        if "disco" in runs:
            figures.update({"arrows_disco.png": ["arrows", runs["disco"], "--images", "0", "1"],
                            "attention_disco.png": ["attention", runs["disco"], "--image", "0"]})
        for file_name, cmd in figures.items():
            run(["tools/analyze.py", *cmd, "--out", os.path.join(out_root, file_name)], subprocess.DEVNULL)
    best = max(results, key=lambda name: results[name]["AP50"])
    pictures = os.path.join(out_root, f"predictions_{best}")
    val_images = sorted(os.listdir(os.path.join(args.data, "images", "val")))[:args.pictures]
    if val_images:
        inputs = [a for name in val_images for a in ("--input", os.path.join(args.data, "images", "val", name))]
        run(["tools/predict.py", "--config-file", presets.demo_config, "--weights",
             os.path.join(runs[best], "model_final.pth"), *inputs, "--output", pictures, "--device", "cpu"],
            subprocess.DEVNULL)
    total = time.time() - start

    print(f"\nDemo results, {v} (seed {args.seed}; pre-training {args.pretrain_iters} iterations of 8 images, "
          f"fine-tuning {args.finetune_iters} iterations of 8 images on {labelled}; COCO-style AP on the 100 val "
          f"images;\n"
          f"CS: convergence stability of the fine-tuning queries' reference points, recorded every "
          f"{args.reference_period} iterations (eq. 13, higher = steadier);\n"
          f"distance: mean distance from each matched query's reference point to its object's centre at the end, "
          f"in normalised image units (lower = queries nearer their objects))")
    print(f"| {'pre-training':<15} | {'AP':>6} | {'AP50':>6} | {'AP75':>6} | {'CS':>6} | {'distance':>8} |")
    print(f"|{'-' * 17}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 10}|")
    table = {}
    for name, m in results.items():
        row = summary.get(LABELS[name], {})
        table[name] = {**m, "cs": row.get("cs"), "distance": row.get("distance")}
        cs = f"{row['cs']:6.3f}" if row.get("cs") is not None else f"{'-':>6}"
        dist = f"{row['distance']:8.4f}" if row.get("distance") is not None else f"{'-':>8}"
        print(f"| {LABELS[name]:<15} | {m['AP']:6.2f} | {m['AP50']:6.2f} | {m['AP75']:6.2f} | {cs} | {dist} |")
    print("step times (s): " + ", ".join(f"{k} {t:.0f}" for k, t in timings.items()) + f"; total {total:.0f}")
    print(f"\nRuns (logs, metrics.json, checkpoints, analysis records): {out_root}/<step>/")
    if figures:
        print("Figures: " + ", ".join(os.path.join(out_root, f) for f in figures))
    if val_images:
        print(f"Detections of the best arm by AP50 ({LABELS[best]}) on {len(val_images)} val images, score >= 0.5: "
              f"{pictures}/")
    with open(os.path.join(out_root, "demo_results.json"), "w") as f:
        json.dump({"variant": v, "seed": args.seed, "labelled": labelled, "pictures": pictures if val_images else None,
                   "pretrain_iters": args.pretrain_iters,
                   "finetune_iters": args.finetune_iters, "results": table, "timings_s": timings,
                   "total_s": total}, f, indent=1)
    print(f"Table: {out_root}/demo_results.json")


if __name__ == "__main__":
    main()
