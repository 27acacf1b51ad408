"""Images per second of the PyTorch model vs onnxruntime, CPU, every variant, side by side in one run.

    python tools/benchmarks/benchmark_onnx.py                       # the six COCO fine-tuning configs, 640 x 640, batch 1
    python tools/benchmarks/benchmark_onnx.py --configs configs/demo/cond.py --size 160 --iters 10

For each config: the detector (random weights: speed does not depend on them) is exported with
``disco_detr.deploy.export_onnx`` to a temporary file, then the same (1, 3, S, S) image runs through the
PyTorch inference graph (``ExportableDetector``, the exact computation that was exported: preprocessing, the
detector's forward and its top-k) and through onnxruntime (CPU provider), each with --threads intra-op threads,
alternately (--warmup untimed pairs, then --iters timed pairs, so that the load of a shared machine falls on
both alike); the median is reported. The largest score difference between
the two is printed as a sanity check. Ends with one JSON line.
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

DEFAULT_CONFIGS = [f"configs/finetune_{v}_coco.py" for v in
                   ("cond", "deformable_ss", "deformable_ms", "dab", "dino", "rtdetr")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--size", type=int, default=640, help="square input side S")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of both")
    return p.parse_args(argv)


def timed_alternating(first, second, warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """Run ``first`` and ``second`` alternately (``warmup`` untimed pairs, then ``iters`` timed ones), so that a
    change in the machine's load falls on both alike; their wall times."""
    for _ in range(warmup):
        first()
        second()
    times = ([], [])
    for _ in range(iters):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    args = parse_args(argv)
    from detectron2.config import instantiate

    from disco_detr.config import load_config
    from disco_detr.deploy import ExportableDetector, OnnxDetector, export_onnx

    torch.set_num_threads(args.threads)
    rows = []
    image = torch.randint(0, 256, (1, 3, args.size, args.size), generator=torch.Generator().manual_seed(0)).float()
    sizes = torch.tensor([[args.size, args.size]])
    with tempfile.TemporaryDirectory() as tmp:
        for config in tqdm(args.configs, desc="variants", unit="config"):
            torch.manual_seed(0)
            detector = instantiate(load_config(config).model).eval()
            path = os.path.join(tmp, "model.onnx")
            start = time.perf_counter()
            export_onnx(detector, path, args.size, args.size)
            export_s = time.perf_counter() - start
            wrapper = ExportableDetector(detector).eval()
            session = OnnxDetector(path, threads=args.threads)
            with torch.no_grad():
                torch_out = wrapper(image, sizes)
                ort_out = session(image.numpy(), sizes.numpy())
                torch_times, ort_times = timed_alternating(lambda w=wrapper: w(image, sizes),
                                                           lambda s=session: s(image.numpy(), sizes.numpy()),
                                                           args.warmup, args.iters)
            row = {"config": config, "detector": type(detector).__name__, "export_s": round(export_s, 1),
                   "torch_s": statistics.median(torch_times), "onnxruntime_s": statistics.median(ort_times),
                   "max_score_diff": float(np.abs(torch_out[1].numpy() - ort_out[1]).max())}
            row["torch_img_s"] = 1 / row["torch_s"]
            row["onnxruntime_img_s"] = 1 / row["onnxruntime_s"]
            rows.append(row)
            tqdm.write(f"{config}: PyTorch {row['torch_img_s']:.3f} img/s, onnxruntime {row['onnxruntime_img_s']:.3f} "
                       f"img/s (export {export_s:.0f} s, max score diff {row['max_score_diff']:.1e})")
            del detector, wrapper, session
    print(f"\nCPU, {args.threads} threads, {args.size} x {args.size}, batch 1, median of {args.iters} "
          f"after {args.warmup} warm-up (torch {torch.__version__})")
    print("| variant | config | PyTorch img/s | onnxruntime img/s | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['detector']} | `{r['config']}` | {r['torch_img_s']:.3f} | {r['onnxruntime_img_s']:.3f} | "
              f"{r['torch_s'] / r['onnxruntime_s']:.2f}x |")
    print(json.dumps({"size": args.size, "threads": args.threads, "iters": args.iters, "rows": rows}))
    return 0
