"""ResNet-vd ("bag of tricks" variant D) as a detectron2 backbone: the RT-DETR backbone.

Differences from the detectron2 / torchvision ResNet:

* deep stem: three 3x3 convolutions (stride 2, 1, 1; widths 32/32/64 for ResNet-50-vd), each
  followed by BN + ReLU, then max-pool 3x3/s2/p1: the stem has stride 4;
* bottleneck blocks carry their stride on the 3x3 convolution;
* the projection shortcut of a downsampling block is average-pool 2x2/s2 (``ceil_mode=True``)
  followed by conv1x1 (stride 1) + BN, instead of a strided conv1x1; the first block of the
  first stage (stride 1) has a plain conv1x1 + BN projection.

As in the PyTorch RT-DETR release (``PResNet``), the first block of every stage has a
projection shortcut and all other blocks an identity shortcut. All convolutions are bias-free.

Module names follow detectron2's ResNet so that checkpoints read naturally:
``stem.conv{1,2,3}``, ``res{2..5}.{block}.conv{1,2,3}`` and ``res{s}.0.shortcut`` (each a
detectron2 ``Conv2d`` whose BN is ``.norm``). ``disco_detr.convert.resnet_vd`` converts the
RT-DETR release, timm ``resnet50d`` and HuggingFace ``RTDetrResNet`` layouts to these names.

ResNet-50-vd (``build_resnet_vd(50)``) has 23,527,264 parameters: timm's ``resnet50d`` built
locally (timm 1.0.31, ``pretrained=False``) has 25,576,264 parameters, of which its ImageNet
classifier ``fc`` holds 2048 x 1000 + 1000 = 2,049,000; ``tests/test_resnet_vd.py`` checks both. With
``norm="FrozenBN"`` the 53,248 BN scales and shifts are buffers, so ``parameters()`` counts only the
23,474,016 convolution weights; with ``norm="BN"`` it counts all 23,527,264.
"""
from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone
from torch import nn

from .backbone import fold_frozen_batchnorm

__all__ = ["RESNET_VD_DEPTHS", "RESNET50_VD_NUM_PARAMS", "BottleneckVdBlock", "ResNetVd", "ResNetVdStem",
           "build_resnet_vd"]

#: blocks per stage (res2..res5) of the bottleneck ResNet-vd depths
RESNET_VD_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
#: parameters of ResNet-50-vd without classifier (timm ``resnet50d`` minus ``fc``; see module docstring)
RESNET50_VD_NUM_PARAMS = 23_527_264


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, norm) -> Conv2d:
    conv = Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=(kernel - 1) // 2, bias=False,
                  norm=get_norm(norm, out_ch))
    weight_init.c2_msra_fill(conv)
    return conv


class ResNetVdStem(CNNBlockBase):
    """Deep stem: conv3x3/s2, conv3x3, conv3x3 (each + norm + ReLU), max-pool 3x3/s2/p1.

    Input (B, in_channels, H, W); output (B, widths[2], ceil(ceil(H/2)/2), ...) i.e. stride 4.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, int, int] = (32, 32, 64), norm="FrozenBN"):
        if len(widths) != 3:
            raise ValueError(f"ResNet-vd stem needs three widths, got {widths}")
        super().__init__(in_channels, widths[-1], 4)
        self.conv1 = _conv(in_channels, widths[0], 3, 2, norm)
        self.conv2 = _conv(widths[0], widths[1], 3, 1, norm)
        self.conv3 = _conv(widths[1], widths[2], 3, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckVdBlock(CNNBlockBase):
    """Bottleneck 1x1 -> 3x3 (stride) -> 1x1 with a ResNet-vd shortcut; ReLU after the residual add.

    ``projection`` adds a conv1x1 + norm shortcut; with ``stride`` 2 it is preceded by
    ``AvgPool2d(2, 2, ceil_mode=True)`` (padding 0, so ``count_include_pad`` has no effect and the
    partial windows of odd sizes average only the pixels they cover). Without ``projection`` the
    shortcut is the identity, which needs ``in_channels == out_channels`` and stride 1.
    Input (B, in_channels, H, W); output (B, out_channels, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 projection: bool = False, norm="FrozenBN"):
        super().__init__(in_channels, out_channels, stride)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if not projection and (in_channels != out_channels or stride != 1):
            raise ValueError("an identity shortcut needs in_channels == out_channels and stride 1")
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, 1, norm)
        self.conv2 = _conv(bottleneck_channels, bottleneck_channels, 3, stride, norm)
        self.conv3 = _conv(bottleneck_channels, out_channels, 1, 1, norm)
        self.shortcut = _conv(in_channels, out_channels, 1, 1, norm) if projection else None
        self.shortcut_pool = nn.AvgPool2d(2, 2, 0, ceil_mode=True) if projection and stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        short = x
        if self.shortcut_pool is not None:
            short = self.shortcut_pool(short)
        if self.shortcut is not None:
            short = self.shortcut(short)
        return F.relu_(out + short)


class ResNetVd(Backbone):
    """ResNet-vd with bottleneck blocks as a detectron2 ``Backbone``.

    Stage ``i`` (0-based) is named ``res{i+2}``, has ``depths[i]`` blocks, ``widths[i]`` output
    channels, bottleneck width ``widths[i] // bottleneck_ratio`` and stride ``4 * 2**i`` (stage 0
    keeps the stem's stride 4; later stages downsample in their first block). ``stem`` (stride 4,
    ``stem_widths[-1]`` channels) is also a valid output name. Stages after the last requested output
    are not built (as in detectron2's ResNet). Defaults are ResNet-50-vd.

    ``norm``: any :func:`detectron2.layers.get_norm` name; ``"FrozenBN"`` (the default, as RT-DETR and
    DisCo pre-training use it) gives ``FrozenBatchNorm2d`` with eps 1e-5.
    ``freeze_at``: 0 trains everything, 1 freezes the stem, k >= 2 the stem and the first k-1 stages
    (detectron2's convention; frozen blocks also get frozen BN). The RT-DETR release's
    ``freeze_at=0`` (stem only) is ``freeze_at=1`` here; its ``freeze_at=-1`` is ``freeze_at=0``.

    forward: images (B, in_channels, H, W), already normalised by the caller -> dict name -> (B, C, H', W')
    with H' = ceil(H / stride) (for every H, W: convolutions pad, pools use ceil_mode or padding). Convolutions
    followed by a frozen BN run as one convolution (``FrozenBNConv2d``); on CPU the stages run channels-last
    and the outputs come back contiguous.
    """

    def __init__(self, stem_widths: tuple[int, ...] = (32, 32, 64), depths: tuple[int, ...] = (3, 4, 6, 3),
                 widths: tuple[int, ...] = (256, 512, 1024, 2048), bottleneck_ratio: int = 4, in_channels: int = 3,
                 out_features: tuple[str, ...] = ("res3", "res4", "res5"), freeze_at: int = 0, norm="FrozenBN"):
        super().__init__()
        if len(depths) != len(widths) or not depths:
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} must be non-empty and of equal length")
        if any(d < 1 for d in depths):
            raise ValueError(f"every stage needs at least one block, got depths {tuple(depths)}")
        if any(w % bottleneck_ratio for w in widths):
            raise ValueError(f"widths {tuple(widths)} must be divisible by bottleneck_ratio {bottleneck_ratio}")
        names = ["stem"] + [f"res{i + 2}" for i in range(len(depths))]
        out_features = tuple(out_features)
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"out_features {out_features}: choose a non-empty subset of {names}")
        if not 0 <= freeze_at <= len(depths) + 1:
            raise ValueError(f"freeze_at must be in [0, {len(depths) + 1}], got {freeze_at}")
        self.stem_widths, self.depths, self.widths = tuple(stem_widths), tuple(depths), tuple(widths)
        self.bottleneck_ratio = bottleneck_ratio
        self._out_features = [n for n in names if n in out_features]

        self.stem = ResNetVdStem(in_channels, tuple(stem_widths), norm)
        self._out_feature_strides = {"stem": 4}
        self._out_feature_channels = {"stem": stem_widths[-1]}
        num_stages = max(names.index(f) for f in out_features)
        self.stage_names, self.stages = [], []
        in_ch = stem_widths[-1]
        for i in range(num_stages):
            blocks = [
                BottleneckVdBlock(in_ch if b == 0 else widths[i], widths[i],
                                  bottleneck_channels=widths[i] // bottleneck_ratio,
                                  stride=2 if (b == 0 and i > 0) else 1, projection=b == 0, norm=norm)
                for b in range(depths[i])
            ]
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            self._out_feature_strides[name] = 4 * 2 ** i
            self._out_feature_channels[name] = widths[i]
            in_ch = widths[i]
        self._out_feature_strides = {k: v for k, v in self._out_feature_strides.items() if k in self._out_features}
        self._out_feature_channels = {k: v for k, v in self._out_feature_channels.items() if k in self._out_features}
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> ResNetVd:
        """Freeze the stem (``freeze_at >= 1``) and stages res2 .. res{freeze_at} (detectron2 convention)."""
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return fold_frozen_batchnorm(self)  # conv -> frozen BN as one convolution (see FrozenBNConv2d)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ResNetVd takes (B, C, H, W) images, got shape {tuple(x.shape)}")
        outputs = {}
        channels_last = x.device.type == "cpu"  # oneDNN convolutions take NHWC without reordering
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return {name: out.contiguous() for name, out in outputs.items()} if channels_last else outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


def build_resnet_vd(depth: int = 50, out_features: tuple[str, ...] = ("res3", "res4", "res5"), freeze_at: int = 1,
                    norm="FrozenBN", *, stem_widths: tuple[int, ...] | None = None,
                    depths: tuple[int, ...] | None = None, widths: tuple[int, ...] | None = None,
                    bottleneck_ratio: int = 4) -> ResNetVd:
    """ResNet-{50,101,152}-vd (stem 32/32/64, widths 256/512/1024/2048) for LazyConfigs.

    ``stem_widths`` / ``depths`` / ``widths`` override the table entries (tiny CPU models), e.g. the
    RT-DETR reference fixture's backbone is ``build_resnet_vd(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1),
    widths=(16, 32, 64, 128))``. The default ``freeze_at=1`` freezes the stem, as RT-DETR's R50-vd
    config does (its ``freeze_at: 0``); BN is frozen everywhere by ``norm="FrozenBN"``.
    Only bottleneck depths exist here (the release's basic-block ResNet-18/34-vd are not implemented).
    """
    if depths is None:
        if depth not in RESNET_VD_DEPTHS:
            raise ValueError(f"ResNet-vd depth {depth} not supported; choose from {sorted(RESNET_VD_DEPTHS)}")
        depths = RESNET_VD_DEPTHS[depth]
    return ResNetVd(stem_widths=tuple(stem_widths or (32, 32, 64)), depths=tuple(depths),
                    widths=tuple(widths or (256, 512, 1024, 2048)), bottleneck_ratio=bottleneck_ratio,
                    out_features=tuple(out_features), freeze_at=freeze_at, norm=norm)
