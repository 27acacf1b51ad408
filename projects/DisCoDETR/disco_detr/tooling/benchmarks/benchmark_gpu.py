"""GPU figures of pre-training and fine-tuning, in one run.

Measures, on one device:

1. DisCo vs Siamese DETR pre-training step time (forward, backward, AdamW step) on the same
   synthetic paired-view batches (``collate_paired_views``'s format, with per-sample colour
   parameters, so the device-side colour augmentation is part of the step), alternating the two
   models so that machine noise hits both alike; the ratio of medians (paper: about +0.16 %).
2. The DMOQF query assignment's share of a DisCo step: every reference to
   ``assign_queries_to_proposals`` inside ``disco_detr`` is wrapped by a timer (synchronised on
   CUDA), so the figure follows the model wherever it calls the assignment.
3. Fine-tuning step time of the detector of ``--finetune-config`` (Conditional DETR R50,
   800 x 1333, batch 2 by default).
4. Achieved TFLOP/s against the device's peak: fine-tuning from fvcore's count of one forward
   (x3 for forward + backward, as tools/benchmarks/benchmark_detector.py); pre-training from PyTorch's
   FlopCounterMode over one whole training step (forward + backward as executed; fvcore cannot
   trace the pre-training step's Python control flow). Both are reported in multiply-adds x 2
   (the convention of vendors' peak figures); the peak comes from a table of dense bf16/fp16
   tensor-core peaks by device name, or ``--peak-tflops``.
5. Peak memory of each phase (``torch.cuda.max_memory_allocated``).

AMP: bf16 where the GPU supports it, else fp16 with a GradScaler; the summed loss is formed in
float32. On CPU the models run in float32. Models are built with ``LazyConfig.load`` +
``instantiate`` from the config files, and called only as ``model(batch)``. Ends with one JSON
line.

    python tools/benchmarks/benchmark_gpu.py                                   # CUDA, paper configs
    python tools/benchmarks/benchmark_gpu.py --device cpu --tiny               # seconds on a CPU (the test)
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate

from disco_detr.tooling.paths import REPO

# Dense bf16 / fp16 tensor-core peaks (TFLOP/s, multiply-add = 2 flops), from the vendors' data
# sheets; matched against torch.cuda.get_device_name by substring, first match wins.
PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
    ("A100", 312.0), ("A10G", 125.0), ("A10", 125.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def load(config_file: str, overrides: list[str]):
    path = config_file if os.path.isabs(config_file) else os.path.join(REPO, config_file)
    cfg = LazyConfig.load(path)
    return LazyConfig.apply_overrides(cfg, overrides)


def build(cfg, device):
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    return model, instantiate(cfg.optimizer)


def paired_view_batch(batch_size, num_boxes, height, width, crop_size, crops_on_device=False, seed=0):
    """A PairedViewBatch as ``collate_paired_views`` makes it, view-major (image v * B + b): views
    (2B, 3, H, W) uint8 of mixed sizes (zero padding), boxes (2B, n, 4) xyxy view pixels, crops
    (2B, n, 3, s, s) (or none, as the mapper's ``crops_on_device`` leaves them to the device), colour
    parameters of every view and crop still to apply (``PairedViewPhotometric``)."""
    from disco_detr.data.photometric import draw_photometric_params
    from disco_detr.data.pretrain_mapper import collate_paired_views

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    sizes = [(height - int(rng.integers(0, height // 8 + 1)), width - int(rng.integers(0, width // 8 + 1)))
             for _ in range(batch_size)]
    samples = []
    for h, w in sizes:
        boxes = torch.zeros(2, num_boxes, 4)
        views = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=g)
        for v in range(2):
            xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35]) + 4
            boxes[v] = torch.cat([xy, xy + wh], 1)
        samples.append({"views": views, "boxes": boxes})
    for s in samples:
        s["photometric"] = draw_photometric_params(2 + 2 * num_boxes, rng)
    for s in samples:
        crops = torch.randint(0, 256, (2, num_boxes, 3, crop_size, crop_size), dtype=torch.uint8, generator=g)
        s.update({"crop_size": crop_size} if crops_on_device else {"crops": crops})
    return collate_paired_views(samples)


def detection_batch(batch_size, height, width, num_classes, seed=0):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        inst = Instances((height, width))
        xy = torch.rand(10, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = torch.rand(10, 2, generator=g) * torch.tensor([width * 0.25, height * 0.25]) + 4
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (10,), generator=g)
        batch.append({"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g),
                      "instances": inst, "height": height, "width": width})
    return batch


def _sdpa_macs(inputs, outputs):
    """fvcore handle for aten::scaled_dot_product_attention: the QK^T and AV multiply-adds."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def sync(device: torch.device) -> None:
    """Waits for ``device``'s queued work (CUDA); nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Starts a new peak-memory measurement on CUDA (no-op on CPU)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated CUDA memory since :func:`reset_peak`, GiB (None on CPU)."""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def empty_cache(device: torch.device) -> None:
    """Returns cached CUDA blocks to the driver between measurements (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Timer:
    """Accumulates the wall time of wrapped calls (synchronising CUDA around each)."""

    def __init__(self, device):
        self.device, self.total, self.calls = device, 0.0, 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.total += time.perf_counter() - start
            self.calls += 1
            return out
        return timed


def wrap_everywhere(name: str, timer: Timer):
    """Replace every module-level reference to ``disco_detr.modeling.matching.<name>`` inside
    disco_detr by a timed version. Returns (number of references wrapped, a function that
    restores them)."""
    import disco_detr.modeling.matching as matching

    original = getattr(matching, name)
    wrapped = timer.wrap(original)
    modules = [m for n, m in list(sys.modules.items()) if n.startswith("disco_detr") and getattr(m, name, None) is original]
    for module in modules:
        setattr(module, name, wrapped)

    def restore():
        for module in modules:
            setattr(module, name, original)
    return len(modules), restore


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="demo configs, tiny sizes, 1 iteration (CPU tests)")
    parser.add_argument("--disco-config", default=None, help="default configs/disco_cond.py (tiny: demo/disco_cond.py)")
    parser.add_argument("--siamese-config", default=None, help="default configs/siamese_cond.py")
    parser.add_argument("--finetune-config", default=None, help="default configs/finetune_cond_coco.py")
    parser.add_argument("--batch-size", type=int, default=None, help="pre-training images per step (default 32)")
    parser.add_argument("--view-size", type=int, nargs=2, default=None, help="padded view H W (default 384 384)")
    parser.add_argument("--crop-size", type=int, default=None, help="default: the config's (tiny: 32)")
    parser.add_argument("--finetune-batch", type=int, default=2)
    parser.add_argument("--finetune-size", type=int, nargs=2, default=None, help="H W (default 800 1333)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per model (default 10)")
    parser.add_argument("--warmup", type=int, default=None, help="default 3")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if not in the table")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--no-finetune", dest="finetune", action="store_false", help="pre-training figures only")
    args = parser.parse_args(argv)
    tiny = args.tiny
    disco_file = args.disco_config or ("configs/demo/disco_cond.py" if tiny else "configs/disco_cond.py")
    siamese_file = args.siamese_config or ("configs/demo/siamese_cond.py" if tiny else "configs/siamese_cond.py")
    finetune_file = args.finetune_config or ("configs/demo/cond.py" if tiny else "configs/finetune_cond_coco.py")
    batch_size = args.batch_size or (2 if tiny else 32)
    view_hw = args.view_size or ((64, 80) if tiny else (384, 384))
    finetune_hw = args.finetune_size or ((96, 128) if tiny else (800, 1333))
    iters = args.iters or (1 if tiny else 10)
    warmup = args.warmup if args.warmup is not None else (0 if tiny else 3)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    amp_dtype = None
    if cuda and args.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    from disco_detr.data.photometric import PairedViewPhotometric

    disco_cfg, siamese_cfg = load(disco_file, []), load(siamese_file, [])
    mapper = disco_cfg.dataloader.train.mapper
    num_boxes = int(mapper.num_boxes)
    crop_size = args.crop_size or (32 if tiny else int(mapper.crop_size))
    models = {"disco": build(disco_cfg, device), "siamese": build(siamese_cfg, device)}
    crops_on_device = bool(mapper.get("crops_on_device", False))
    batch = paired_view_batch(batch_size, num_boxes, *view_hw, crop_size, crops_on_device)
    batch_transform = PairedViewPhotometric()

    def make_step(model, optimizer, inputs, augment):
        scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

        def step():
            data = batch_transform(inputs.to(device)) if augment else inputs
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                losses = model(data)
            loss = sum(v.float() for v in losses.values())
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            return loss.detach()
        return step

    steps = {name: make_step(m, o, batch, True) for name, (m, o) in models.items()}
    timer = Timer(device)
    wrapped, restore = wrap_everywhere("assign_queries_to_proposals", timer)
    times = {name: [] for name in steps}
    dmoqf_per_step = []
    try:
        reset_peak(device)
        for _ in range(warmup):
            for name in steps:
                steps[name]()
        for _ in range(iters):
            for name in steps:  # alternating, so that noise hits both models alike
                sync(device)
                before = timer.total
                start = time.perf_counter()
                loss = steps[name]()
                sync(device)
                times[name].append(time.perf_counter() - start)
                if name == "disco":
                    dmoqf_per_step.append(timer.total - before)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"{name}: non-finite loss {loss.item()}")
    finally:
        restore()
    pretrain_peak = peak_gib(device)
    median = {name: statistics.median(t) for name, t in times.items()}
    dmoqf = statistics.median(dmoqf_per_step)

    # FLOPs of one whole pre-training step (forward + backward as executed)
    from torch.utils.flop_counter import FlopCounterMode

    pretrain_flops = {}
    for name, step in steps.items():
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        pretrain_flops[name] = counter.get_total_flops()
    del steps, models
    empty_cache(device)

    peak = peak_tflops(device, args.peak_tflops)
    finetune = None
    if args.finetune:  # --no-finetune: pre-training figures only (tools/gpu_check.py times every variant itself)
        # fine-tuning
        ft_cfg = load(finetune_file, [])
        detector, ft_opt = build(ft_cfg, device)
        ft_batch = detection_batch(args.finetune_batch, *finetune_hw, detector.num_classes)
        from detectron2.utils.analysis import FlopCountAnalysis

        detector.eval()
        counter = FlopCountAnalysis(detector, ft_batch[:1])
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        counter.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        ft_macs_forward = counter.total()  # fvcore: one multiply-add = one flop, per image
        detector.train()
        ft_step_fn = make_step(detector, ft_opt, ft_batch, False)
        reset_peak(device)
        for _ in range(warmup):
            ft_step_fn()
        sync(device)
        ft_times = []
        for _ in range(iters):
            start = time.perf_counter()
            ft_step_fn()
            sync(device)
            ft_times.append(time.perf_counter() - start)
        ft_peak = peak_gib(device)
        ft_median = statistics.median(ft_times)
        ft_tflops = 2 * 3 * ft_macs_forward * args.finetune_batch / ft_median / 1e12
        finetune = {
            "batch_size": args.finetune_batch, "image_hw": list(finetune_hw), "step_s": round(ft_median, 4),
            "gflops_forward_per_image_fvcore": round(ft_macs_forward / 1e9, 2),
            "achieved_tflops_per_s": round(ft_tflops, 4), "share_of_peak": round(ft_tflops / peak, 4) if peak else None,
            "peak_memory_gib": ft_peak,
        }

    pre_tflops = {name: pretrain_flops[name] / median[name] / 1e12 for name in median}

    def share(x):
        return round(x / peak, 4) if peak else None

    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "tiny": tiny,
        "configs": {"disco": disco_file, "siamese": siamese_file, "finetune": finetune_file},
        "pretrain": {
            "batch_size": batch_size, "view_hw": list(view_hw), "num_boxes": num_boxes, "crop_size": crop_size,
            "crops_on_device": crops_on_device,
            "iters": iters, "warmup": warmup,
            "disco_step_s": round(median["disco"], 4), "siamese_step_s": round(median["siamese"], 4),
            "disco_over_siamese": round(median["disco"] / median["siamese"], 4),
            "dmoqf_s_per_step": round(dmoqf, 5), "dmoqf_share_of_disco_step": round(dmoqf / median["disco"], 6),
            "dmoqf_wrapped_references": wrapped,
            "tflops_per_step": {k: round(v / 1e12, 4) for k, v in pretrain_flops.items()},
            "achieved_tflops_per_s": {k: round(v, 4) for k, v in pre_tflops.items()},
            "share_of_peak": {k: share(v) for k, v in pre_tflops.items()},
            "peak_memory_gib": pretrain_peak,
        },
        "finetune": finetune,
        "peak_tflops": peak,
    }
    p, f = result["pretrain"], result["finetune"]
    print(f"[{result['device']}, amp {result['amp']}] pre-training batch {batch_size} at {view_hw[0]}x{view_hw[1]}: "
          f"DisCo {p['disco_step_s']} s, Siamese {p['siamese_step_s']} s, ratio {p['disco_over_siamese']}; "
          f"DMOQF {1000 * dmoqf:.2f} ms/step ({100 * p['dmoqf_share_of_disco_step']:.2f} %); "
          f"{p['achieved_tflops_per_s']} TFLOP/s; peak memory {pretrain_peak} GiB", file=sys.stderr)
    if f is not None:
        print(f"fine-tuning batch {args.finetune_batch} at {finetune_hw[0]}x{finetune_hw[1]}: {f['step_s']} s/step, "
              f"{f['achieved_tflops_per_s']} TFLOP/s (peak {peak}); peak memory {f['peak_memory_gib']} GiB",
              file=sys.stderr)
    print(json.dumps(result))
    return result
