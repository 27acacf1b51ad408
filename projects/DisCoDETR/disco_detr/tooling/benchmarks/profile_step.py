"""Where one training (or inference) step of a detector spends its time: torch.profiler's op table.

Builds a project config's model (80 classes), runs one warm-up step and then ``--reps`` profiled steps on
a synthetic batch (uint8 noise images, 10 random boxes each), and prints, for the fastest profiled step
(the one least disturbed by other work on a shared machine), the op table sorted by self CPU time, plus
the wall and CPU seconds of every profiled step. A training step is forward, loss, backward and an AdamW
step, as in the trainer.

    python tools/benchmarks/profile_step.py configs/finetune_cond_coco.py --size 512 --batch-size 2 --freeze-at 1
    python tools/benchmarks/profile_step.py configs/finetune_dino_coco.py --mode infer --batch-size 1 --rows 30

The side-by-side timing against detrex (same batch, alternating steps) is ../shared/peer/side_by_side.py;
docs/benchmarks.md has the figures.
"""
import argparse
import os
import sys
import time

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from torch.profiler import ProfilerActivity, profile
from tqdm import tqdm

from disco_detr.config import load_config


def synthetic_batch(batch_size: int, height: int, width: int, num_classes: int, seed: int = 0) -> list[dict]:
    """detectron2 inputs: (3, H, W) uint8 images and 10 xyxy pixel boxes per image."""
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        inst = Instances((height, width))
        xy = torch.rand(10, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = torch.rand(10, 2, generator=gen) * min(200, height // 3, width // 3) + 8
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (10,), generator=gen)
        batch.append({"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen),
                      "instances": inst, "height": height, "width": width})
    return batch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a project LazyConfig, e.g. configs/finetune_cond_coco.py")
    ap.add_argument("--size", type=int, default=512, help="square image side in pixels")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--mode", choices=("train", "infer"), default="train")
    ap.add_argument("--freeze-at", type=int, default=None, help="override the backbone's freeze_at")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="profiled steps; the fastest one is tabulated")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--opts", nargs="*", default=[], help="LazyConfig overrides, key=value")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.config):
        sys.exit(f"{args.config}: no such config file")
    if args.reps < 1:
        sys.exit(f"--reps must be at least 1, got {args.reps}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config, args.opts)
    cfg.model.num_classes = 80
    if args.freeze_at is not None:
        cfg.model.backbone.freeze_at = args.freeze_at
    model = instantiate(cfg.model)
    train = args.mode == "train"
    model.train(train)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = synthetic_batch(args.batch_size, args.size, args.size, 80)

    def step():
        if train:
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(data)

    step()  # warm-up
    best = None
    for rep in tqdm(range(args.reps), desc=f"profiling {args.mode} steps"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tqdm.write(f"step {rep}: wall {wall:.2f} s, cpu {cpu:.2f} s (cpu/wall {cpu / wall:.2f}, "
                   f"{args.threads} threads)")
        if best is None or wall < best[0]:
            best = (wall, prof)
    print(f"{args.config} {args.mode} {args.size}x{args.size} batch {args.batch_size}, fastest profiled step "
          f"{best[0]:.2f} s")
    print(best[1].key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
