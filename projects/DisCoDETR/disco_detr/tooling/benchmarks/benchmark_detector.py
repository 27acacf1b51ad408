"""Speed of Conditional DETR R50 at the paper's fine-tuning resolution (800 x 1333).

Measures training iterations/s (forward, backward, AdamW step) and inference latency on
CPU and, when available, CUDA, with fvcore's FLOP count of one inference forward so it can
report achieved GFLOP/s. fvcore counts one multiply-add as one flop; training is counted as
3x the forward. Ends with one JSON line of all figures.

    python tools/benchmarks/benchmark_detector.py                     # CPU (+ CUDA if present)
    python tools/benchmarks/benchmark_detector.py --devices cpu --train-iters 3 --infer-iters 3
"""
import argparse
import json
import logging
import os
import sys
import time

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.analysis import FlopCountAnalysis

from disco_detr.config import load_config
from disco_detr.tooling.paths import REPO


def _sdpa_flop(inputs, outputs):
    """fvcore handle for aten::scaled_dot_product_attention: QK^T and AV multiply-adds."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def synthetic_batch(batch_size, height, width, num_classes, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        inst = Instances((height, width))
        xy = torch.rand(10, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = torch.rand(10, 2, generator=gen) * 200 + 20
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (10,), generator=gen)
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)
        batch.append({"image": image.to(device), "instances": inst, "height": height, "width": width})
    return batch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device(cfg, device, args):
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batch = synthetic_batch(args.batch_size, args.height, args.width, model.num_classes, device)
    amp = device.type == "cuda" and args.amp

    model.eval()
    flop_counter = FlopCountAnalysis(model, batch[:1])
    flop_counter.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop)
    flop_counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    gflops_forward = flop_counter.total() / 1e9

    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        for _ in range(args.warmup):
            model(batch[:1])
        _sync(device)
        times = []
        for _ in range(args.infer_iters):
            start = time.perf_counter()
            model(batch[:1])
            _sync(device)
            times.append(time.perf_counter() - start)
    latency = sorted(times)[len(times) // 2]

    model.train()

    def step():
        with torch.autocast(device.type, enabled=amp):
            loss = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.train_iters):
        step()
    _sync(device)
    train_time = (time.perf_counter() - start) / args.train_iters
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "amp": amp,
        "batch_size": args.batch_size,
        "gflops_forward_per_image": round(gflops_forward, 2),
        "infer_latency_s": round(latency, 4),
        "infer_gflops_per_s": round(gflops_forward / latency, 1),
        "train_iter_s": round(train_time, 4),
        "train_iters_per_s": round(1.0 / train_time, 3),
        "train_gflops_per_s": round(3 * gflops_forward * args.batch_size / train_time, 1),
    }
    print(f"[{result['device']}] " + ", ".join(f"{k}={v}" for k, v in result.items() if k != "device"),
          file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "finetune_cond_coco.py"))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--batch-size", type=int, default=1, help="training batch size")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--train-iters", type=int, default=3)
    parser.add_argument("--infer-iters", type=int, default=3)
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="disable AMP on CUDA")
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    cfg = load_config(args.config_file, args.opts)
    results = {"config": os.path.relpath(args.config_file, REPO), "image_size": [args.height, args.width],
               "torch": torch.__version__, "runs": [bench_device(cfg, torch.device(d), args) for d in devices]}
    print(json.dumps(results))
