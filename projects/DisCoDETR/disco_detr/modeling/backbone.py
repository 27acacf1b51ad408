"""Backbones: detectron2 ResNets for the paper configs; a tiny ResNet and MobileNetV2 for CPU runs."""
from __future__ import annotations

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.backbone import Backbone, BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock
from torch import Tensor, nn
from torch.nn import functional as F

from .layers.checkpointing import LayerCheckpointing, checkpointed_call, set_layer_checkpointing

__all__ = ["CPUFriendlyResNet", "FrozenBNConv2d", "build_resnet", "build_tiny_resnet", "fold_frozen_batchnorm",
           "MobileNetV2Backbone", "set_backbone_checkpointing"]


class FrozenBNConv2d(Conv2d):
    """A detectron2 ``Conv2d`` whose ``norm`` is a ``FrozenBatchNorm2d``, run as one convolution.

    A frozen BN is a fixed affine map per channel, ``y = x * s + t`` with ``s = gamma / sqrt(var + eps)``
    and ``t = beta - mean * s``, so conv -> frozen BN is the convolution with weight ``W * s`` (per
    output channel) and bias ``t`` (plus ``b * s`` where the conv has a bias). Computing it that way
    saves the two elementwise passes over the (B, C, H, W) output (and the one of their backward, and
    the activation they keep for it); gradients still reach ``W`` (through the scaling). The result
    equals conv-then-BN up to float rounding (relative ~1e-6 in float32). Parameters, buffers and
    state-dict keys are those of the ``Conv2d`` it replaces; if ``norm`` is anything but a
    ``FrozenBatchNorm2d`` it behaves exactly as ``Conv2d``.

    forward: (B, C_in, H, W) -> (B, C_out, H', W'), activation applied after the fused BN.
    """

    def forward(self, x: Tensor) -> Tensor:
        norm = self.norm
        if not isinstance(norm, FrozenBatchNorm2d):
            return super().forward(x)
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        shift = norm.bias - norm.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        weight = self.weight * scale.to(self.weight.dtype).view(-1, 1, 1, 1)
        x = F.conv2d(x, weight, shift.to(weight.dtype), self.stride, self.padding, self.dilation, self.groups)
        return x if self.activation is None else self.activation(x)


def fold_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Make every detectron2 ``Conv2d`` in ``module`` that is followed by a ``FrozenBatchNorm2d`` a
    :class:`FrozenBNConv2d` (in place, same parameters and keys); returns ``module``."""
    for m in module.modules():
        if type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d):
            m.__class__ = FrozenBNConv2d
    return module


class CPUFriendlyResNet(ResNet):
    """detectron2's ``ResNet`` (same modules, keys and outputs), faster on CPU.

    Convolutions followed by a frozen BN run as one convolution (:class:`FrozenBNConv2d`, applied again by
    :meth:`freeze`, which may create frozen BNs), and on CPU the
    stages run in channels-last memory layout, which oneDNN convolutions (forward and backward) take
    without reordering. forward: (B, 3, H, W) -> {name: (B, C, H / stride, W / stride)}, outputs in the
    input's own (contiguous) layout on every device.
    """

    def __init__(self, *args, channels_last_on_cpu: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels_last_on_cpu = channels_last_on_cpu

    def freeze(self, freeze_at: int = 0) -> CPUFriendlyResNet:
        """detectron2's freeze (which turns the frozen stages' BN into frozen BN), then the folding."""
        super().freeze(freeze_at)
        return fold_frozen_batchnorm(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if not (self.channels_last_on_cpu and x.device.type == "cpu" and x.dim() == 4):
            return super().forward(x)
        outputs = super().forward(x.contiguous(memory_format=torch.channels_last))
        return {name: out.contiguous() for name, out in outputs.items()}


class _CheckpointedStage:
    """Stands in for one ``nn.Sequential`` stage in a ResNet's ``stages`` list (which its forward runs in
    order): runs the stage's blocks one by one under activation checkpointing. Not a module: the stage stays
    registered where it was (``res2`` ...), with its parameters and state-dict keys. (B, C, H, W) -> (B, C', H', W')."""

    def __init__(self, stage: nn.Sequential):
        self.stage = stage

    def __call__(self, x: Tensor) -> Tensor:
        for block in self.stage:
            x = checkpointed_call(block, block, x)
        return x

    def __getattr__(self, name: str):
        # anything else (e.g. the ``children()`` that ResNet.freeze walks) is the stage's own
        if name == "stage":
            raise AttributeError(name)
        return getattr(self.stage, name)


def set_backbone_checkpointing(backbone: nn.Module, enabled: bool) -> None:
    """Activation checkpointing of every residual block (detectron2 ``ResNet``, :class:`CPUFriendlyResNet`,
    ``ResNetVd``: the blocks of their ``stages``) or every feature block (:class:`MobileNetV2Backbone` and other
    :class:`~.layers.checkpointing.LayerCheckpointing` backbones). The stem is not checkpointed."""
    stages = getattr(backbone, "stages", None)
    if isinstance(stages, list) and stages and all(isinstance(s, (nn.Sequential, _CheckpointedStage)) for s in stages):
        for i, stage in enumerate(stages):
            plain = stage.stage if isinstance(stage, _CheckpointedStage) else stage
            stages[i] = _CheckpointedStage(plain) if enabled else plain
    elif not set_layer_checkpointing(backbone, enabled) and enabled:
        raise TypeError(f"{type(backbone).__name__} supports no activation checkpointing: it needs a `stages` list "
                        f"of nn.Sequential blocks (detectron2's ResNet) or to run its blocks through LayerCheckpointing")


def build_resnet(depth: int = 50, out_features: tuple[str, ...] = ("res5",), freeze_at: int = 1,
                 norm: str = "FrozenBN", channels_last_on_cpu: bool = True) -> ResNet:
    """A standard detectron2 ResNet (torchvision layout: stride in the 3x3 conv), as
    :class:`CPUFriendlyResNet` (``channels_last_on_cpu``: run the convolutions channels-last on CPU)."""
    stem = BasicStem(in_channels=3, out_channels=64, norm=norm)
    stages = ResNet.make_default_stages(depth=depth, stride_in_1x1=False, norm=norm)
    return CPUFriendlyResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at,
                             channels_last_on_cpu=channels_last_on_cpu)


def build_tiny_resnet(widths: tuple[int, ...] = (32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1),
                      stem_width: int = 32, out_features: tuple[str, ...] = ("res4",),
                      norm: str = "BN", freeze_at: int = 0) -> ResNet:
    """A narrow ResNet of BasicBlocks for tiny images and CPU runs.

    Stage i (named res{i+2}) has ``widths[i]`` channels and ``blocks[i]`` blocks; the stem has
    stride 4 and every later stage halves the resolution, so ``res4`` has stride 16.
    ``freeze_at`` follows detectron2: 1 freezes the stem, 2 also res2, and so on.
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
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


class _ConvBN(nn.Sequential):
    """conv (no bias) -> BN -> optional ReLU6; indices 0/1 keep the checkpoint's key names."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1, relu: bool = True):
        layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(out_ch)]
        if relu:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block as one flat ``conv`` Sequential (expand, depthwise, project).

    The flat layout numbers its layers conv.0..conv.7 (conv.0..conv.4 without expansion),
    which is how the ImageNet weights we use for the demo are stored.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        layers = []
        if expand_ratio != 1:
            layers += list(_ConvBN(in_ch, hidden, 1, 1))
        layers += list(_ConvBN(hidden, hidden, 3, stride, groups=hidden))
        layers += list(_ConvBN(hidden, out_ch, 1, 1, relu=False))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Backbone(LayerCheckpointing, Backbone):
    """MobileNetV2 (width 1.0) as a detectron2 backbone, for small CPU runs.

    Outputs ``stride8`` (32 ch), ``stride16`` (96 ch) and ``stride32`` (1280 ch) feature
    maps (B, C, H/s, W/s). Module names are ``features.{0..18}`` so that ImageNet weights
    in the flat MobileNetV2 layout load by name (see ``tools/prepare_demo_backbone.py``).
    BatchNorm is frozen (FrozenBatchNorm2d) and the first ``freeze_at`` feature blocks get
    no gradient. Only the blocks needed for ``out_features`` are built.
    """

    # (expand ratio t, channels c, repeats n, first stride s) of the paper's Table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
    OUTPUT_BLOCKS = {"stride8": (6, 32, 8), "stride16": (13, 96, 16), "stride32": (18, 1280, 32)}

    def __init__(self, out_features: tuple[str, ...] = ("stride16",), freeze_at: int = 0):
        super().__init__()
        unknown = set(out_features) - set(self.OUTPUT_BLOCKS)
        if unknown:
            raise ValueError(f"Unknown MobileNetV2 outputs {sorted(unknown)}; choose from {sorted(self.OUTPUT_BLOCKS)}")
        self._out_features = list(out_features)
        last = max(self.OUTPUT_BLOCKS[f][0] for f in out_features)
        blocks = [_ConvBN(3, 32, 3, 2)]
        in_ch = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                blocks.append(_InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        blocks.append(_ConvBN(in_ch, 1280, 1, 1))
        self.features = nn.Sequential(*blocks[: last + 1])
        self._block_to_name = {self.OUTPUT_BLOCKS[f][0]: f for f in out_features}
        self._out_feature_channels = {f: self.OUTPUT_BLOCKS[f][1] for f in out_features}
        self._out_feature_strides = {f: self.OUTPUT_BLOCKS[f][2] for f in out_features}
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        for block in self.features[:freeze_at]:
            for p in block.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        outputs = {}
        for i, block in enumerate(self.features):
            x = self.run_layer(block, x)
            if i in self._block_to_name:
                outputs[self._block_to_name[i]] = x
        return outputs
