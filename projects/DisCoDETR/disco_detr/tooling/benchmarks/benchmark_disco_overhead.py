"""Overhead of DisCo DETR over Siamese DETR: step time and parameters, side by side.

Builds the DisCo model of ``--config-file`` and the same model with both components off
(Siamese DETR: fixed query groups, no CLD), feeds both the same synthetic paired-view
batches and times full training steps (forward, backward, AdamW) alternately, so that
machine noise hits both alike. Reports the median step-time ratio DisCo / Siamese and the
parameter overhead (the paper: about +0.16 % time and +1.8 % parameters). Ends with one
JSON line.

    python tools/benchmarks/benchmark_disco_overhead.py                                  # paper R50 model, CPU
    python tools/benchmarks/benchmark_disco_overhead.py --device cuda --batch-size 16 --iters 30
"""
import argparse
import json
import statistics
import time

import torch
from detectron2.config import instantiate

from disco_detr.config import load_config
from disco_detr.structures import PairedViewBatch


def synthetic_batch(batch_size, num_boxes, height, width, crop_size, seed=0):
    """A colour-augmented PairedViewBatch of random views, view-major (image v * B + b): the same boxes
    (xyxy view pixels) in both views of a sample."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch_size, num_boxes, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
    wh = torch.rand(batch_size, num_boxes, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3]) + 8
    boxes = torch.cat([xy, xy + wh], -1).repeat(2, 1, 1)
    return PairedViewBatch(
        images=torch.randint(0, 256, (2 * batch_size, 3, height, width), dtype=torch.uint8, generator=g),
        image_sizes=[(height, width)] * 2 * batch_size, boxes=boxes,
        crops=torch.randint(0, 256, (2 * batch_size, num_boxes, 3, crop_size, crop_size), dtype=torch.uint8,
                            generator=g),
        crop_size=crop_size, view_photometric=None, crop_photometric=None)


def build(cfg, device, seed):
    torch.manual_seed(seed)
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    return model, instantiate(cfg.optimizer)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/disco_cond.py")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=416)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("opts", nargs="*", help="config overrides key=value (applied to both models)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    disco_cfg = load_config(args.config_file, args.opts)
    siamese_cfg = load_config(args.config_file, args.opts + ["model.use_dmoqf=False", "model.weight_contrast=0.0"])
    models = {"disco": build(disco_cfg, device, 0), "siamese": build(siamese_cfg, device, 0)}
    mapper = disco_cfg.dataloader.train.mapper
    batch = synthetic_batch(args.batch_size, mapper.num_boxes, args.height, args.width, mapper.crop_size)
    amp = device.type == "cuda" and bool(disco_cfg.train.amp.enabled)
    scaler = torch.amp.GradScaler("cuda") if amp else None

    def step(name):
        model, opt = models[name]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step("disco")
        step("siamese")
    times = {"disco": [], "siamese": []}
    for i in range(args.iters):
        for name in (("disco", "siamese") if i % 2 == 0 else ("siamese", "disco")):
            times[name].append(step(name))
    params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in models.items()}
    cld = sum(p.numel() for p in models["disco"][0].cld.parameters())
    ratios = [d / s for d, s in zip(times["disco"], times["siamese"])]
    result = {
        "config": args.config_file,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "batch_size": args.batch_size,
        "view_size": [args.height, args.width],
        "disco_step_s": round(statistics.median(times["disco"]), 4),
        "siamese_step_s": round(statistics.median(times["siamese"]), 4),
        "step_time_ratio": round(statistics.median(ratios), 4),
        "params_disco": params["disco"],
        "params_siamese": params["siamese"],
        "cld_params": cld,
        "param_overhead_pct": round(100 * (params["disco"] - params["siamese"]) / params["siamese"], 3),
    }
    print(f"DisCo {result['disco_step_s']} s/step vs Siamese {result['siamese_step_s']} s/step: ratio "
          f"{result['step_time_ratio']}; parameters +{result['param_overhead_pct']} % (CLD {cld:,})")
    print(json.dumps(result))
    return result
