"""PyTorch vs onnxruntime vs OpenVINO on CPU, every variant side by side in one run; the deployment table.

    python tools/benchmarks/benchmark_onnx.py                     # every variant's COCO config, 640 x 640, batch 1
    python tools/benchmarks/benchmark_onnx.py --variants cond --size 160 --iters 10
    python tools/benchmarks/benchmark_onnx.py --options           # the export options each variant supports

Default mode, for each row of ``disco_detr.variants.VARIANTS`` (its ``finetune_coco_config``, random weights:
speed does not depend on them): the detector is exported with ``disco_detr.deploy.export_onnx`` to a temporary
file (static S x S, batch 1, opset 17, GridSample, with the per-query outputs), then the same (1, 3, S, S)
image runs through the PyTorch inference graph (``ExportableDetector``: preprocessing, the forward, the top-k),
onnxruntime and OpenVINO (CPU, f32), each with --threads intra-op threads, in turn (--warmup untimed rounds,
then --iters timed rounds, so that the load of a shared machine falls on all alike); medians are reported as
img/s and as ratios to PyTorch. The same graph exported with ``half=True`` is run by onnxruntime once. For each
runtime (onnxruntime, OpenVINO, onnxruntime fp16) against PyTorch fp32: the max |difference| per query of the
boxes (normalised cxcywh) and of the scores (sigmoid probabilities), the number of queries whose best class
differs, and whether the top-k detections pair up within the export tolerance (``match_detections``: 1e-3
fp32, 2e-2 fp16); and the size (MB) and node count of the fp32 and fp16 graphs (without the per-query outputs).

``--options``: for each row, its tiny test detector (``Variant.shrink`` of the demo preset) exported with each
option, and onnxruntime checked against PyTorch (``check_parity``, tolerance 1e-3; fp16 2e-2) at the export
size and, for dynamic graphs, at a second size and batch: static at opsets 16-20, ``--dynamic``, ``--sampling
gather`` (opset 18, dynamic), ``--half``. Prints markdown tables and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from disco_detr.deploy import FP32_TOLERANCE, HALF_TOLERANCE

OPSETS = (16, 17, 18, 19, 20)


def parse_args(argv=None):
    from disco_detr.variants import VARIANTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--size", type=int, default=640, help="square input side S")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of each runtime")
    p.add_argument("--options", action="store_true", help="the export-option table (tiny detectors) instead")
    return p.parse_args(argv)


def timed_in_turn(fns, warmup: int, iters: int) -> list[list[float]]:
    """Run ``fns`` in turn (``warmup`` untimed rounds, then ``iters`` timed ones), so that a change in the
    machine's load falls on all alike; their wall times, one list per function."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def graph_stats(path: str) -> dict:
    """Size (MB) and node count of an ONNX file."""
    import onnx

    return {"mb": os.path.getsize(path) / 1e6, "nodes": len(onnx.load(path).graph.node)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def differences(got: list[np.ndarray], want: list[np.ndarray], size: int, tolerance: float, runtime: str) -> dict:
    """A runtime's outputs against PyTorch's, both (boxes, scores, labels, query_logits, query_boxes) of one image:
    per-query max |box| and |score| differences (by query index; ``box_nearest``: each query's box against the
    nearest PyTorch query's, for two-stage detectors whose proposal order may differ), queries whose best class
    differs, and the top-k pairing."""
    from disco_detr.deploy import match_detections

    boxes, scores, labels, q_logits, q_boxes = got
    w_boxes, w_scores, w_labels, w_logits, w_qboxes = want
    nearest = np.abs(q_boxes[0][:, None] - w_qboxes[0][None]).max(-1).min(-1)     # (Q,): to any PyTorch query
    r = {"box": float(np.abs(q_boxes - w_qboxes).max()), "box_nearest": float(nearest.max()),
         "score": float(np.abs(_sigmoid(q_logits) - _sigmoid(w_logits)).max()),
         "labels": int((q_logits.argmax(-1) != w_logits.argmax(-1)).sum())}
    try:
        _, _, swapped = match_detections((boxes[0] / size, scores[0], labels[0]),
                                         (w_boxes[0] / size, w_scores[0], w_labels[0]), tolerance, runtime)
        r["topk"] = f"pairs ({swapped} swapped at ties)" if swapped else "pairs"
    except RuntimeError as e:
        r["topk"] = f"differs: {e}"
    return r


def run_variant(name: str, args, image: torch.Tensor, tmp: str) -> dict:
    from detectron2.config import instantiate

    from disco_detr.config import load_config
    from disco_detr.deploy import OUTPUT_NAMES, PER_QUERY_OUTPUT_NAMES, ExportableDetector, drop_outputs, export_onnx
    from disco_detr.variants import VARIANTS
    from disco_detr_runtime import RuntimeDetector

    row = VARIANTS[name]
    torch.manual_seed(0)
    detector = instantiate(load_config(row.finetune_coco_config).model).eval()
    sizes = torch.tensor([[args.size, args.size]])
    names = OUTPUT_NAMES + PER_QUERY_OUTPUT_NAMES
    result = {"variant": name, "config": row.finetune_coco_config, "detector": type(detector).__name__}
    paths = {p: os.path.join(tmp, f"{name}_{p}.onnx") for p in ("fp32", "fp16")}
    start = time.perf_counter()
    export_onnx(detector, paths["fp32"], args.size, args.size, per_query_outputs=True)
    result["export_s"] = time.perf_counter() - start
    export_onnx(detector, paths["fp16"], args.size, args.size, per_query_outputs=True, half=True)
    wrapper = ExportableDetector(detector, per_query_outputs=True).eval()
    sessions = {rt: RuntimeDetector(paths["fp32"], rt, threads=args.threads) for rt in ("onnxruntime", "openvino")}
    feeds = (image.numpy(), sizes.numpy())
    outputs = {}

    def torch_run():
        with torch.no_grad():
            outputs["torch"] = [t.numpy() for t in wrapper(image, sizes)]

    def runner(rt):
        def fn():
            outputs[rt] = sessions[rt].run(*feeds, names)
        return fn

    times = timed_in_turn([torch_run, runner("onnxruntime"), runner("openvino")], args.warmup, args.iters)
    for key, t in zip(("torch", "onnxruntime", "openvino"), times):
        result[f"{key}_s"] = statistics.median(t)
    half = RuntimeDetector(paths["fp16"], "onnxruntime", threads=args.threads)
    start = time.perf_counter()
    outputs["fp16"] = half.run(*feeds, names)
    result["onnxruntime_fp16_s"] = time.perf_counter() - start   # one run (accuracy; the timing is indicative)
    for key, tol, rt in (("onnxruntime", FP32_TOLERANCE, "onnxruntime"), ("openvino", FP32_TOLERANCE, "openvino"),
                         ("fp16", HALF_TOLERANCE, "onnxruntime fp16")):
        result[f"diff_{key}"] = differences(outputs[key], outputs["torch"], args.size, tol, rt)
    sessions.clear()
    del half
    for precision, path in paths.items():
        drop_outputs(path, PER_QUERY_OUTPUT_NAMES)
        result[f"graph_{precision}"] = graph_stats(path)
        os.remove(path)
    return result


def option_support(name: str, tmp: str) -> dict:
    """{option: "ok" | the failure} for one variant's tiny detector (module docstring, ``--options``)."""
    from detectron2.config import LazyConfig, instantiate

    from disco_detr.deploy import check_parity, export_onnx
    from disco_detr.variants import VARIANTS, config_path

    row = VARIANTS[name]
    cfg = LazyConfig.load(config_path(row.demo_config))
    row.shrink(cfg.model)
    torch.manual_seed(0)
    detector = instantiate(cfg.model).eval()
    path = os.path.join(tmp, f"{name}_option.onnx")
    trials = {f"opset {o}": ({"opset": o}, FP32_TOLERANCE) for o in OPSETS}
    trials["dynamic"] = ({"dynamic": True}, FP32_TOLERANCE)
    trials["gather"] = ({"dynamic": True, "opset": 18, "sampling": "gather"}, FP32_TOLERANCE)
    trials["half"] = ({"half": True}, HALF_TOLERANCE)
    support = {}
    for option, (kwargs, tol) in trials.items():
        sizes = [(64, 64, 1)] + ([(96, 64, 3)] if kwargs.get("dynamic") else [])
        try:
            export_onnx(detector, path, 64, 64, per_query_outputs=True, **kwargs)
            report = check_parity(detector, path, sizes, tol)
            worst = max(max(r["query_boxes"], r["boxes"], r["scores"]) for r in report.values())
            support[option] = f"ok ({worst:.0e})"
        except Exception as e:  # any failure of the export or the check is the answer for this option
            support[option] = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return support


def _topk_cell(d: dict) -> str:
    return "yes" if d["topk"].startswith("pairs") else "**no**"


def print_tables(rows: list[dict], args) -> None:
    print(f"\nCPU, {args.threads} threads, {args.size} x {args.size}, batch 1, median of {args.iters} after "
          f"{args.warmup} warm-up round(s), random weights (torch {torch.__version__})")
    print("| variant | PyTorch img/s | onnxruntime img/s | OpenVINO img/s | onnxruntime / PyTorch | "
          "OpenVINO / PyTorch | OpenVINO / onnxruntime | export s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, o, v = r["torch_s"], r["onnxruntime_s"], r["openvino_s"]
        print(f"| {r['variant']} | {1 / t:.3f} | {1 / o:.3f} | {1 / v:.3f} | {t / o:.2f}x | {t / v:.2f}x | "
              f"{o / v:.2f}x | {r['export_s']:.0f} |")
    print("\nMax |difference| against PyTorch fp32 per query (boxes: normalised cxcywh; scores: sigmoid "
          "probabilities), queries whose best class differs, whether the top-k pairs within tolerance; graph size")
    print("| variant | runtime | max box | max box, nearest query | max score | labels differ | top-k pairs | "
          "graph MB | nodes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for key, label, graph in (("onnxruntime", "onnxruntime", "fp32"), ("openvino", "OpenVINO", "fp32"),
                                  ("fp16", "onnxruntime fp16", "fp16")):
            d, g = r[f"diff_{key}"], r[f"graph_{graph}"]
            print(f"| {r['variant']} | {label} | {d['box']:.1e} | {d['box_nearest']:.1e} | {d['score']:.1e} | {d['labels']} | "
                  f"{_topk_cell(d)} | {g['mb']:.1f} | {g['nodes']} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.options:
            for name in tqdm(args.variants, desc="variants", unit="variant"):
                rows.append({"variant": name, **option_support(name, tmp)})
                tqdm.write(json.dumps(rows[-1]))
            keys = [k for k in rows[0] if k != "variant"]
            print("| variant | " + " | ".join(keys) + " |")
            print("|---|" + "---|" * len(keys))
            for r in rows:
                print(f"| {r['variant']} | " + " | ".join(r[k] for k in keys) + " |")
            print(json.dumps({"options": rows}))
            return 0
        image = torch.randint(0, 256, (1, 3, args.size, args.size), generator=torch.Generator().manual_seed(0)).float()
        for name in tqdm(args.variants, desc="variants", unit="variant"):
            rows.append(run_variant(name, args, image, tmp))
            r = rows[-1]
            tqdm.write(f"{name}: PyTorch {1 / r['torch_s']:.3f} img/s, onnxruntime {1 / r['onnxruntime_s']:.3f}, "
                       f"OpenVINO {1 / r['openvino_s']:.3f} (export {r['export_s']:.0f} s); "
                       + "; ".join(f"{k}: {r[f'diff_{k}']}" for k in ("onnxruntime", "openvino", "fp16")))
    print_tables(rows, args)
    print(json.dumps({"size": args.size, "threads": args.threads, "iters": args.iters, "rows": rows}))
    return 0
