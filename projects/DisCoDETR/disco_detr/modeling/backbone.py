"""Backbone builders: detectron2 ResNets for the paper configs and a tiny one for CPU demos."""
from __future__ import annotations

from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock

__all__ = ["build_resnet", "build_tiny_resnet"]


def build_resnet(depth: int = 50, out_features: tuple[str, ...] = ("res5",), freeze_at: int = 1,
                 norm: str = "FrozenBN") -> ResNet:
    """A standard detectron2 ResNet (torchvision layout: stride in the 3x3 conv)."""
    stem = BasicStem(in_channels=3, out_channels=64, norm=norm)
    stages = ResNet.make_default_stages(depth=depth, stride_in_1x1=False, norm=norm)
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


def build_tiny_resnet(widths: tuple[int, ...] = (32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1),
                      stem_width: int = 32, out_features: tuple[str, ...] = ("res4",),
                      norm: str = "BN") -> ResNet:
    """A narrow ResNet of BasicBlocks for tiny images and CPU runs.

    Stage i (named res{i+2}) has ``widths[i]`` channels and ``blocks[i]`` blocks; the stem has
    stride 4 and every later stage halves the resolution, so ``res4`` has stride 16.
    """
    if len(widths) != len(blocks):
        raise ValueError(f"widths {widths} and blocks {blocks} must have the same length")
    stem = BasicStem(in_channels=3, out_channels=stem_width, norm=norm)
    stages, in_channels = [], stem_width
    for i, (width, num_blocks) in enumerate(zip(widths, blocks)):
        first_stride = 1 if i == 0 else 2
        stages.append(ResNet.make_stage(
            BasicBlock, num_blocks, in_channels=in_channels, out_channels=width,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1), norm=norm,
        ))
        in_channels = width
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=0)
