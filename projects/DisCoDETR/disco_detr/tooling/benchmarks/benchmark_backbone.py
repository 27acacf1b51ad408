"""ResNet forward + backward on CPU: detectron2's ResNet against ours (frozen BN folded, channels-last).

Four builds of one ResNet-50 with the same weights (random frozen-BN statistics), timed alternately
(A B C D A B ...) so machine noise hits all alike: detectron2's ``ResNet`` as is, with the frozen BN folded
into the convolutions only, channels-last only, and both (``build_resnet``, what the detectors use).
Each step is forward + backward of ``mean(res5 ** 2)`` on a (B, 3, H, W) batch; the minimum over the
repetitions is the least-disturbed figure on a shared machine. The largest output difference against
detectron2's build is printed too (float rounding only).

    python tools/benchmarks/benchmark_backbone.py --size 512 --batch-size 2 --freeze-at 1 --reps 5
"""
import argparse
import copy
import time

import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import BasicStem, ResNet
from tqdm import tqdm

from disco_detr.modeling.backbone import CPUFriendlyResNet, fold_frozen_batchnorm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--freeze-at", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error(f"--reps must be at least 1, got {args.reps}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    plain = ResNet(BasicStem(3, 64, norm="FrozenBN"),
                   ResNet.make_default_stages(args.depth, stride_in_1x1=False, norm="FrozenBN"),
                   out_features=["res5"], freeze_at=args.freeze_at)
    for m in plain.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_frozen_batchnorm(copy.deepcopy(plain))
    channels_last = copy.deepcopy(plain)
    ours = copy.deepcopy(plain)
    ours.__class__ = CPUFriendlyResNet
    ours.channels_last_on_cpu = True
    fold_frozen_batchnorm(ours)
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    builds = {"detectron2 ResNet": (plain, False), "folded BN": (folded, False),
              "channels-last": (channels_last, True), "ours (both)": (ours, False)}

    def step(model, cl):
        out = model(x.contiguous(memory_format=torch.channels_last) if cl else x)["res5"]
        out.square().mean().backward()
        return out.detach()

    ref = step(plain, False)
    for name, (model, cl) in builds.items():
        diff = (step(model, cl) - ref).abs().max().item()
        print(f"{name:18s} max |diff| vs detectron2 {diff:.2e} (max |res5| {ref.abs().max().item():.1f})")
    times = {name: [] for name in builds}
    for _ in tqdm(range(args.reps), desc="alternating steps"):
        for name, (model, cl) in builds.items():
            t = time.perf_counter()
            step(model, cl)
            times[name].append(time.perf_counter() - t)
    print(f"R{args.depth} freeze_at={args.freeze_at}, {args.batch_size}x3x{args.size}x{args.size}, forward+backward, "
          f"{args.threads} threads, {args.reps} steps each")
    base = min(times["detectron2 ResNet"])
    for name, ts in times.items():
        print(f"  {name:18s} min {min(ts):.3f} s ({min(ts) / base:.2f}x)  all {[round(t, 2) for t in ts]}")
