"""Writes tests/data/reference/hgnetv2.pt: transformers' HGNetV2Backbone as the reference for our HGNetV2.

Run from the repository root with transformers installed (pinned: transformers 5.25.0, torch 2.14.1, CPU):

    python tests/data/reference/make_hgnetv2_fixture.py

Contents (``torch.load(path, weights_only=True)``):
- ``versions``: transformers and torch versions used;
- ``tiny``: two tiny HGNetV2 (``lab``: with the learnable affine blocks, ``plain``: without), each with the
  transformers config (``config``), the same architecture as a timm-style table (``arch``), the full state dict in
  transformers' key layout with seeded random weights and BN statistics, an input (1, 3, 61, 83) and the eval
  feature maps of ``stem`` and ``stage1`` .. ``stage4``;
- ``real_size``: for B0-B5 (the D-FINE release's architecture table, typed here from its ``arch_configs``; the
  learnable affine blocks on B0-B3 as in its S / M configs and timm's models), the key -> shape table of
  transformers' backbone built with that config and its parameter count.
The test (tests/test_hgnetv2.py) converts the transformers keys with ``disco_detr.convert.hgnetv2`` and needs no
transformers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
from transformers import HGNetV2Backbone, HGNetV2Config

# D-FINE release arch_configs: stem channels; per stage (in, mid, out, blocks, downsample, light, kernel, layers)
DFINE_ARCH = {
    "B0": ([3, 16, 16], [[16, 16, 64, 1, False, False, 3, 3], [64, 32, 256, 1, True, False, 3, 3],
                         [256, 64, 512, 2, True, True, 5, 3], [512, 128, 1024, 1, True, True, 5, 3]]),
    "B1": ([3, 24, 32], [[32, 32, 64, 1, False, False, 3, 3], [64, 48, 256, 1, True, False, 3, 3],
                         [256, 96, 512, 2, True, True, 5, 3], [512, 192, 1024, 1, True, True, 5, 3]]),
    "B2": ([3, 24, 32], [[32, 32, 96, 1, False, False, 3, 4], [96, 64, 384, 1, True, False, 3, 4],
                         [384, 128, 768, 3, True, True, 5, 4], [768, 256, 1536, 1, True, True, 5, 4]]),
    "B3": ([3, 24, 32], [[32, 32, 128, 1, False, False, 3, 5], [128, 64, 512, 1, True, False, 3, 5],
                         [512, 128, 1024, 3, True, True, 5, 5], [1024, 256, 2048, 1, True, True, 5, 5]]),
    "B4": ([3, 32, 48], [[48, 48, 128, 1, False, False, 3, 6], [128, 96, 512, 1, True, False, 3, 6],
                         [512, 192, 1024, 3, True, True, 5, 6], [1024, 384, 2048, 1, True, True, 5, 6]]),
    "B5": ([3, 32, 64], [[64, 64, 128, 1, False, False, 3, 6], [128, 128, 512, 2, True, False, 3, 6],
                         [512, 256, 1024, 5, True, True, 5, 6], [1024, 512, 2048, 2, True, True, 5, 6]]),
}
USE_LAB = {"B0": True, "B1": True, "B2": True, "B3": True, "B4": False, "B5": False}
# tiny: every kind of layer (plain and light layers, residual second blocks, downsampling) with few channels
TINY_ARCH = ([3, 8, 8], [[8, 8, 16, 1, False, False, 3, 2], [16, 8, 32, 2, True, False, 3, 2],
                         [32, 16, 48, 2, True, True, 5, 2], [48, 16, 64, 1, True, True, 5, 2]])
OUT_FEATURES = ["stem", "stage1", "stage2", "stage3", "stage4"]


def hf_config(stem: list[int], stages: list[list], use_lab: bool) -> HGNetV2Config:
    column = lambda i: [row[i] for row in stages]  # noqa: E731
    return HGNetV2Config(
        embedding_size=stem[-1], depths=column(3), hidden_sizes=column(2), stem_channels=stem,
        stage_in_channels=column(0), stage_mid_channels=column(1), stage_out_channels=column(2),
        stage_num_blocks=column(3), stage_downsample=column(4), stage_light_block=column(5),
        stage_kernel_size=column(6), stage_numb_of_layers=column(7), use_learnable_affine_block=use_lab,
        out_features=OUT_FEATURES)


def timm_arch(stem: list[int], stages: list[list]) -> dict:
    """The same architecture as timm's ``model_cfgs`` entry (stem channels without the input's 3)."""
    return {"stem_type": "v2", "stem_chs": stem[1:], **{f"stage{i + 1}": list(r) for i, r in enumerate(stages)}}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights so that every tensor matters: conv weights scaled to keep activations O(1), BN affine and
    statistics away from (1, 0, 0, 1), learnable affine scales / biases away from (1, 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("convolution.weight"):
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("normalization.weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.8 + 0.6)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith(("normalization.bias", "running_mean")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            elif name.endswith("lab.scale"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.6 + 0.7)
            elif name.endswith("lab.bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                raise KeyError(f"no initialisation rule for {name}")


def tiny_entry(use_lab: bool, seed: int) -> dict:
    config = hf_config(*TINY_ARCH, use_lab=use_lab)
    model = HGNetV2Backbone(config).eval()
    randomise(model, seed)
    pixel_values = torch.randn(1, 3, 61, 83, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        maps = model(pixel_values).feature_maps
    return {"config": config.to_dict(), "arch": timm_arch(*TINY_ARCH), "use_lab": use_lab,
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
            "pixel_values": pixel_values, "features": dict(zip(OUT_FEATURES, [m.clone() for m in maps]))}


def real_size_entry(name: str) -> dict:
    with torch.device("meta"):
        model = HGNetV2Backbone(hf_config(*DFINE_ARCH[name], use_lab=USE_LAB[name]))
    return {"use_lab": USE_LAB[name], "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
            "num_params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("hgnetv2.pt")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    fixture = {
        "versions": {"transformers": transformers.__version__, "torch": str(torch.__version__)},
        "tiny": {"lab": tiny_entry(True, seed=0), "plain": tiny_entry(False, seed=10)},
        "real_size": {name: real_size_entry(name) for name in DFINE_ARCH},
    }
    torch.save(fixture, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
