"""Figures of the paper's analysis (DisCo DETR, Figures 3-8) from run folders.

A RUN is an output folder of tools/lazyconfig_train_net.py (config.yaml, checkpoints,
metrics.json, analysis/). Give it as PATH or LABEL=PATH (the label is used in legends).
Every subcommand writes one PNG (--out).

Subcommands
  cs                 Figure 4: convergence stability (eq. 13) of the recorded reference points of
                     several runs side by side, and each run's reference-point paths.
                     CS_n = ||phi_n(I) - phi_n(0)|| / sum_i ||phi_n(i+1) - phi_n(i)|| over the
                     recorded iterations, averaged over queries (x probe images); a query that
                     never moved counts as CS_n = 1. Needs train.analysis.reference_period > 0
                     (the paper records once per epoch: set the period to the iterations per
                     epoch for the same sampling; CS depends on it).
  distance           Figure 6: mean distance between each matched query's initial reference
                     point and its matched ground-truth centre (normalised image units) at every
                     evaluation. Needs train.analysis.query_distance=True.
  arrows             Figure 5: on chosen images, an arrow from each matched query's reference
                     point to its object's centre. Fine-tuning runs: evaluation images and their
                     ground truth, matched by the detector's criterion matcher (last decoder
                     layer). Pre-training runs: view 1 of the pre-training mapper and its
                     proposal boxes, matched by the pre-training matcher; the detector decodes its
                     bare queries (no fused object features).
  attention          Figure 3: detections of the top-scoring queries and each query's
                     last-layer decoder cross-attention (mean over heads).
  encoder-attention  Figure 7: per encoder layer, the attention each image location receives
                     (mean over heads and queries).
  ap-vs-time         Figure 8: bbox AP at each evaluation against wall-clock training time,
                     from metrics.json ("time" per iteration, evaluation time not counted);
                     --include-pretraining adds the training time of the run that
                     train.init_checkpoint came from, when that is a run folder.
  summary            Prints (and with --json writes) per run: CS, last query distance, last AP
                     and, for pre-training runs, the last pre-training health metrics
                     (group agreement against chance, reference offset, spread, displacement;
                     logged as pretrain_health/* in metrics.json, README "Pre-training health").

Records (written by disco_detr.analysis.hooks; see disco_detr/analysis/records.py):
  analysis/references/meta.json          detector, probe images, sizes
  analysis/references/iter_XXXXXXXX.npz  "references" (M, N, 2|4) normalised (cx, cy[, w, h]) of
                                         every query on M probe images (M = 1 for learned
                                         queries), "iteration" = optimizer steps completed
  analysis/distance.json                 [{"iteration", "distance", "num_matched", "num_images"}]

Examples
  python tools/analyze.py cs DisCo=output/demo/pretrain_disco Siamese=output/demo/pretrain_siamese --out cs.png
  python tools/analyze.py arrows output/demo/finetune_disco --images 0 1 --out arrows.png
  python tools/analyze.py ap-vs-time scratch=output/demo/finetune_scratch disco=output/demo/finetune_disco \\
      --include-pretraining --out ap_time.png
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from disco_detr.analysis.summary import ap_curve, summarize


def parse_run(spec: str) -> tuple[str, str]:
    """"LABEL=PATH" or "PATH" (label = the folder name) -> (label, path); the folder must exist."""
    label, path = spec.split("=", 1) if "=" in spec and not os.path.isdir(spec) else (None, spec)
    path = os.path.normpath(path)
    if not os.path.isdir(path):
        raise SystemExit(f"error: run folder {path!r} does not exist")
    return label or os.path.basename(path), path


def _runs(specs):
    return [parse_run(s) for s in specs]


def cmd_cs(args):
    from disco_detr.analysis import ReferenceStore, convergence_stability
    from disco_detr.analysis.plots import plot_convergence_stability

    runs = []
    for label, path in _runs(args.runs):
        iters, refs = ReferenceStore(path).load()  # (T, M, N, D)
        if len(iters) < 2:
            raise SystemExit(f"error: {path} has {len(iters)} reference record(s); CS needs at least 2")
        traj = refs[..., :2].reshape(len(iters), -1, 2)  # (T, M*N, 2)
        cs, per_query = convergence_stability(traj)
        runs.append({"label": label, "trajectory": traj, "iterations": iters.tolist(), "cs": cs,
                     "per_query": per_query})
        print(f"{label}: CS = {cs:.4f} over {traj.shape[1]} queries, {len(iters)} records "
              f"(iterations {iters[0]}..{iters[-1]})")
    print(plot_convergence_stability(runs, args.out))


def cmd_distance(args):
    from disco_detr.analysis import DistanceStore
    from disco_detr.analysis.plots import plot_distance_curves

    curves = []
    for label, path in _runs(args.runs):
        iters, dist = DistanceStore(path).curve()
        curves.append({"label": label, "iterations": iters, "distance": dist})
        print(f"{label}: " + ", ".join(f"it {i}: {d:.4f}" for i, d in zip(iters, dist)))
    print(plot_distance_curves(curves, args.out))


def _image_hwc(image):
    return image.permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def cmd_arrows(args):
    from disco_detr.analysis.hooks import matcher_of, query_object_distances
    from disco_detr.analysis.plots import plot_arrows
    from disco_detr.analysis.runs import load_run, sample_inputs

    (label, path), = _runs([args.run])
    run = load_run(path, args.device)
    matcher = matcher_of(run.model)
    panels = []
    for sample in sample_inputs(run, args.images, args.seed):
        distances, indices, refs = query_object_distances(run.model, [sample], [sample["targets"]], matcher)
        ref = refs[0, :, :2]
        h, w = sample["image"].shape[-2:]
        boxes = sample["targets"]["boxes"].numpy()
        xyxy = np.stack([(boxes[:, 0] - boxes[:, 2] / 2) * w, (boxes[:, 1] - boxes[:, 3] / 2) * h,
                         (boxes[:, 0] + boxes[:, 2] / 2) * w, (boxes[:, 1] + boxes[:, 3] / 2) * h], 1)
        q, t = indices[0]
        mean = float(distances[0].mean()) if len(distances[0]) else float("nan")
        panels.append({"title": f"{label}: {sample['title']}\n{sample['kind']}, mean distance {mean:.3f} "
                                f"(fraction of image size)",
                       "image": _image_hwc(sample["image"]), "references": ref * np.array([w, h]),
                       "boxes": xyxy, "pairs": np.stack([np.asarray(q), np.asarray(t)], 1)})
        print(f"{sample['title']}: {len(q)} matched queries, mean distance {mean:.4f}")
    print(plot_arrows(panels, args.out))


def _class_names(run):
    from detectron2.data import MetadataCatalog

    if run.pretraining:
        return ["object", "no object"]
    names = run.cfg.dataloader.test.dataset.names if "test" in run.cfg.dataloader else None
    if isinstance(names, str):
        return MetadataCatalog.get(names).get("thing_classes", None)
    return None


def cmd_attention(args):
    from disco_detr.analysis.plots import plot_decoder_attention
    from disco_detr.analysis.runs import decoder_attention, load_run, sample_inputs

    (label, path), = _runs([args.run])
    run = load_run(path, args.device)
    sample = sample_inputs(run, [args.image], args.seed)[0]
    dets = decoder_attention(run, sample["image"], args.top_k, args.queries)
    names = _class_names(run)
    for d in dets:
        d["label"] = names[d["class_id"]] if names and d["class_id"] < len(names) else f"class {d['class_id']}"
        print(f"query {d['query']}: {d['label']} score {d['score']:.3f} box {[round(v, 1) for v in d['box']]}")
    print(plot_decoder_attention(_image_hwc(sample["image"]), dets, args.out, f"{label}: {sample['title']}"))


def cmd_encoder_attention(args):
    from disco_detr.analysis.plots import plot_encoder_attention
    from disco_detr.analysis.runs import encoder_attention, load_run, sample_inputs

    (label, path), = _runs([args.run])
    run = load_run(path, args.device)
    sample = sample_inputs(run, [args.image], args.seed)[0]
    maps = encoder_attention(run, sample["image"])
    print(f"{len(maps)} encoder layer(s)")
    print(plot_encoder_attention(_image_hwc(sample["image"]), maps, args.out, f"{label}: {sample['title']}"))


def _init_run_dir(path):
    """The run folder train.init_checkpoint of ``path``'s config points into, if it is one."""
    from detectron2.config import LazyConfig

    cfg_path = os.path.join(path, "config.yaml")
    if not os.path.exists(cfg_path):
        return None
    init = LazyConfig.load(cfg_path).train.get("init_checkpoint", "")
    folder = os.path.dirname(init) if init else ""
    return folder if folder and os.path.exists(os.path.join(folder, "metrics.json")) else None


def cmd_ap_vs_time(args):
    from disco_detr.analysis import cumulative_training_time, read_metrics_json
    from disco_detr.analysis.plots import plot_ap_vs_time

    runs = []
    for label, path in _runs(args.runs):
        try:
            secs, ap, _ = ap_curve(path)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        offset = 0.0
        if args.include_pretraining:
            pre = _init_run_dir(path)
            if pre is not None:
                _, pre_secs = cumulative_training_time(read_metrics_json(pre))
                offset = float(pre_secs[-1]) if len(pre_secs) else 0.0
                print(f"{label}: + {offset:.0f} s of pre-training ({pre})")
        runs.append({"label": label, "seconds": secs + offset, "ap": ap, "offset_s": offset})
        print(f"{label}: " + ", ".join(f"{s:.0f} s: AP {a:.2f}" for s, a in zip(secs + offset, ap)))
    print(plot_ap_vs_time(runs, args.out, args.unit))


def cmd_summary(args):
    rows = {label: summarize(path) for label, path in _runs(args.runs)}
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    print(f"| {'run':<20} | {'CS':>6} | {'distance':>8} | {'AP':>6} |")
    print(f"|{'-' * 22}|{'-' * 8}|{'-' * 10}|{'-' * 8}|")
    for label, r in rows.items():
        print(f"| {label:<20} | {fmt(r['cs'], '6.3f')} | {fmt(r['distance'], '8.4f')} | {fmt(r['AP'], '6.2f')} |")
    health = {label: r["health"] for label, r in rows.items() if r["health"]}
    if health:
        print("\nPre-training health (last log; distances in normalised image units):")
        print(f"| {'run':<20} | {'iter':>5} | {'agreement':>9} | {'chance':>6} | {'offset':>6} | {'spread':>6} "
              f"| {'displacement':>12} |")
        print(f"|{'-' * 22}|{'-' * 7}|{'-' * 11}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 14}|")
        for label, h in health.items():
            print(f"| {label:<20} | {h['iteration']:>5} | {fmt(h.get('group_agreement'), '9.3f')} "
                  f"| {fmt(h.get('group_agreement_chance'), '6.3f')} | {fmt(h.get('reference_offset'), '6.4f')} "
                  f"| {fmt(h.get('reference_spread'), '6.4f')} | {fmt(h.get('reference_displacement'), '12.4f')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def add(name, func, helptext, multi=True, out=True):
        p = sub.add_parser(name, help=helptext, description=helptext)
        if multi:
            p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), PATH or LABEL=PATH")
        else:
            p.add_argument("run", metavar="RUN", help="run folder, PATH or LABEL=PATH")
            p.add_argument("--device", default="cpu", help="device to run the model on (default: cpu)")
            p.add_argument("--seed", type=int, default=0, help="seed of the pre-training views' random crops")
        if out:
            p.add_argument("--out", required=True, help="PNG file to write")
        p.set_defaults(func=func)
        return p

    add("cs", cmd_cs, "Figure 4: convergence stability (eq. 13) of the recorded reference points, runs side by side")
    add("distance", cmd_distance, "Figure 6: query -> matched object distance at every evaluation")
    p = add("arrows", cmd_arrows, "Figure 5: arrows from query reference points to their matched objects", multi=False)
    p.add_argument("--images", type=int, nargs="+", default=[0, 1], help="dataset indices of the images (default 0 1)")
    p = add("attention", cmd_attention, "Figure 3: detections with their queries' decoder cross-attention", multi=False)
    p.add_argument("--image", type=int, default=0, help="dataset index of the image (default 0)")
    p.add_argument("--top-k", type=int, default=4, help="number of top-scoring queries shown (default 4)")
    p.add_argument("--queries", type=int, nargs="+", default=None, help="show these query ids instead of the top-k")
    p = add("encoder-attention", cmd_encoder_attention, "Figure 7: encoder attention heat maps per layer", multi=False)
    p.add_argument("--image", type=int, default=0, help="dataset index of the image (default 0)")
    p = add("ap-vs-time", cmd_ap_vs_time, "Figure 8: bbox AP against wall-clock training time")
    p.add_argument("--include-pretraining", action="store_true",
                   help="start each fine-tuning curve after the training time of its init_checkpoint's run folder")
    p.add_argument("--unit", choices=("auto", "s", "min", "h"), default="auto", help="time unit of the x axis")
    p = add("summary", cmd_summary, "Print CS, last query distance, last AP and pre-training health of each run",
            out=False)
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)
