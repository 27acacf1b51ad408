"""Memory and time of activation checkpointing (``train.activation_checkpointing``): one first training step
(forward + backward, no optimizer step) per variant, batch 2, with and without, on CPU.

Memory is counted from the tensors themselves, not the process: every storage that an ATen op allocates during
the step is tracked until it is freed (:class:`LiveTensorBytes`), which is deterministic and independent of the
allocator. Two figures per run: ``held`` = bytes alive at the end of the forward (the activations kept for
backward, plus the losses), ``peak`` = the most bytes alive at any time in forward + backward (activations,
recomputations, temporaries and the gradients, which are the same in both runs). Weights and inputs existed
before the step and are not counted. Time is the wall and the process CPU time of a later step (outside the tracker). Ends with
one JSON line; ``--markdown`` also prints the table that docs/benchmarks.md holds.

    python tools/benchmarks/benchmark_activation_checkpointing.py                          # paper sizes
    python tools/benchmarks/benchmark_activation_checkpointing.py --scale 0.5 --variants dino deformable_ms
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import weakref

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from disco_detr.config import load_config
from disco_detr.tooling.paths import REPO

__all__ = ["LiveTensorBytes", "VARIANTS", "main", "measure_step", "time_step", "training_batch"]

#: variant -> (fine-tuning config, the paper's training resolution (height, width) of a batch)
VARIANTS = {
    "conditional": ("finetune_cond_coco.py", (800, 1333)),
    "dab": ("finetune_dab_coco.py", (800, 1333)),
    "deformable_ss": ("finetune_deformable_ss_coco.py", (800, 1333)),
    "deformable_ms": ("finetune_deformable_ms_coco.py", (800, 1333)),
    "dino": ("finetune_dino_coco.py", (800, 1333)),
    "rt_detr": ("finetune_rtdetr_coco.py", (640, 640)),
}


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensor storages that ops create while the mode is active, until each is freed.

    ``live``: bytes alive now; ``peak``: the most alive at any time since :meth:`reset`. A storage is counted
    once however many views share it; storages made before the mode (weights, inputs) are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: weakref.WeakSet = weakref.WeakSet()

    def reset(self) -> None:
        self.peak = self.live

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self._seen:
                    nbytes = storage.nbytes()
                    self._seen.add(storage)
                    self.live += nbytes
                    weakref.finalize(storage, self._free, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def training_batch(batch_size: int, height: int, width: int, num_classes: int, seed: int = 0) -> list[dict]:
    """``batch_size`` detectron2 training inputs: random (3, height, width) uint8 images, each with 8 boxes
    (xyxy pixels, 5-50 % of the image side) of random classes."""
    gen = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    batch = []
    for _ in range(batch_size):
        centre, extent = torch.rand(8, 2, generator=gen), 0.05 + 0.45 * torch.rand(8, 2, generator=gen)
        boxes = torch.cat([centre - extent / 2, centre + extent / 2], 1).clamp(0, 1) * size
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, num_classes, (8,), generator=gen)
        batch.append({"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen),
                      "instances": inst})
    return batch


def _loss(model, batch):
    return sum(model(batch).values())


def measure_step(model, batch, seed: int = 0) -> dict:
    """One training forward + backward of ``model`` on ``batch`` under :class:`LiveTensorBytes`:
    {"held": bytes alive after the forward, "peak": the most bytes alive in forward + backward}."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with LiveTensorBytes() as tracker:
        loss = _loss(model, batch)
        held = tracker.live
        loss.backward()
        peak = tracker.peak
    model.zero_grad(set_to_none=True)
    return {"held": held, "peak": peak}


def time_step(model, batch, seed: int = 0, repeats: int = 1) -> dict:
    """The shortest wall time and process CPU time (s, all threads) of ``repeats`` training forward + backward
    passes: {"time_s", "cpu_s"}. On a shared machine the CPU time is the steadier of the two."""
    model.train()
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        start, start_cpu = time.perf_counter(), time.process_time()
        _loss(model, batch).backward()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    model.zero_grad(set_to_none=True)
    return {"time_s": wall, "cpu_s": cpu}


def bench_variant(variant: str, parts: tuple[str, ...], scale: float, batch_size: int, repeats: int) -> dict:
    config, (height, width) = VARIANTS[variant]
    height, width = round(height * scale), round(width * scale)
    cfg = load_config(os.path.join(REPO, "configs", config))
    if cfg.model.get("num_classes") is None:
        cfg.model.num_classes = 80
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    batch = training_batch(batch_size, height, width, model.num_classes)
    row = {"variant": variant, "image_size": [height, width], "batch_size": batch_size, "parts": list(parts)}
    for name, chosen in (("plain", ()), ("checkpointed", parts)):
        model.set_activation_checkpointing(chosen)
        memory = measure_step(model, batch)  # also the first step of this configuration
        row[name] = {**memory, **time_step(model, batch, repeats=repeats)}
        print(f"[{variant} {name}] held {memory['held'] / 2**20:.0f} MiB, peak {memory['peak'] / 2**20:.0f} MiB, "
              f"step {row[name]['time_s']:.2f} s wall, {row[name]['cpu_s']:.2f} s CPU", file=sys.stderr)
    plain, ckpt = row["plain"], row["checkpointed"]
    row["held_ratio"] = round(ckpt["held"] / plain["held"], 3)
    row["peak_ratio"] = round(ckpt["peak"] / plain["peak"], 3)
    row["time_ratio"] = round(ckpt["time_s"] / plain["time_s"], 3)
    row["cpu_ratio"] = round(ckpt["cpu_s"] / plain["cpu_s"], 3)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | image (H x W) | held MiB plain -> ckpt | held ratio | peak MiB plain -> ckpt | peak ratio | "
             "wall s plain -> ckpt | wall ratio | CPU s plain -> ckpt | CPU ratio |", "|---" * 10 + "|"]
    for r in rows:
        p, c = r["plain"], r["checkpointed"]
        lines.append(f"| {r['variant']} | {r['image_size'][0]} x {r['image_size'][1]} | "
                     f"{p['held'] / 2**20:.0f} -> {c['held'] / 2**20:.0f} | {r['held_ratio']:.2f} | "
                     f"{p['peak'] / 2**20:.0f} -> {c['peak'] / 2**20:.0f} | {r['peak_ratio']:.2f} | "
                     f"{p['time_s']:.1f} -> {c['time_s']:.1f} | {r['time_ratio']:.2f} | "
                     f"{p['cpu_s']:.1f} -> {c['cpu_s']:.1f} | {r['cpu_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parts", nargs="+", default=["backbone", "encoder", "decoder"],
                        help="train.activation_checkpointing of the checkpointed run")
    parser.add_argument("--scale", type=float, default=1.0, help="image size relative to the paper's (1.0)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per run after the first (min is kept)")
    parser.add_argument("--markdown", action="store_true", help="also print the docs/benchmarks.md table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = [bench_variant(v, tuple(args.parts), args.scale, args.batch_size, args.repeats) for v in args.variants]
    if args.markdown:
        print(markdown(rows))
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))
