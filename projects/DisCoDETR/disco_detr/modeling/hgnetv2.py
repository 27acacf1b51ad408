"""PP-HGNetV2 (B0-B5), the backbone of D-FINE and DEIM, as a detectron2 ``Backbone`` built from timm's layers.

The layers are timm's ``HighPerfGpuNet`` (``timm.models.hgnet``; timm is imported when a backbone is built),
whose modules, key names and architecture table equal the D-FINE release's ``HGNetv2`` (checked layer for layer
against transformers' ``HGNetV2Backbone`` by ``tests/test_hgnetv2.py`` and its fixture): stem
``stem.stem{1,2a,2b,3,4}``, stages ``stages.{0..3}`` with ``downsample`` (depthwise 3x3/s2 conv + BN, stages
1-3) and ``blocks.{b}`` (``layers.{k}`` conv 3x3 or light 1x1 + depthwise kxk, then the ``aggregation``
squeeze / excitation 1x1 convs; residual from the second block on). Every conv is followed by BN and, except
the downsample and a light layer's 1x1, ReLU and (``use_lab``) a learnable scalar affine ``lab``. timm's ImageNet
head is not built. Release checkpoints convert with :mod:`disco_detr.convert.hgnetv2`.

Outputs: ``stem`` (stride 4), ``stage1`` (stride 4), ``stage2`` / ``stage3`` / ``stage4`` (strides 8 / 16 / 32;
D-FINE's ``return_idx [1, 2, 3]``), each (B, C, ceil-divided H, W), channels from the architecture (B4:
128 / 512 / 1024 / 2048 for stage1-4). Stages after the last requested output are not built.

Deviations from the release (docs/hgnetv2.md):
- ``freeze_at`` follows detectron2 (0 trains everything, 1 freezes the stem, k >= 2 the stem and stage1 ..
  stage{k-1}); the release's ``freeze_at=0, freeze_stem_only=True`` (L, X) is ``freeze_at=1`` here, its
  ``freeze_at=-1`` (S, M, DEIM) is ``freeze_at=0``.
- ``norm="FrozenBN"`` is the release's ``freeze_norm=True``; ``"BN"`` its ``freeze_norm=False`` (training-mode
  BN); ``"SyncBN"`` synchronises the batch statistics across workers. Frozen parts always get frozen BN.
"""
from __future__ import annotations

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import Backbone
from torch import nn

from .layers.checkpointing import LayerCheckpointing
from .layers.sync_batch_norm import SyncBatchNorm2d

__all__ = ["HGNETV2_NAMES", "HGNetV2", "build_hgnetv2", "hgnetv2_arch"]

#: D-FINE's names (B0 .. B5) -> timm's model names
HGNETV2_NAMES = {f"B{i}": f"hgnetv2_b{i}" for i in range(6)}
#: B0-B3 use the learnable affine blocks (timm's registered models and the D-FINE S / M configs), B4-B5 not
_DEFAULT_LAB = {"B0": True, "B1": True, "B2": True, "B3": True, "B4": False, "B5": False}


def hgnetv2_arch(name: str) -> dict:
    """timm's architecture entry of HGNetV2 ``name`` (``"B0"`` .. ``"B5"``): ``stem_type``, ``stem_chs`` and
    ``stage1`` .. ``stage4`` rows (in, mid, out channels, blocks, downsample, light block, kernel, layers)."""
    if name not in HGNETV2_NAMES:
        raise ValueError(f"unknown HGNetV2 {name!r}; choose from {sorted(HGNETV2_NAMES)}")
    from timm.models.hgnet import model_cfgs

    return dict(model_cfgs[HGNETV2_NAMES[name]])


def _to_frozen(module: nn.Module) -> nn.Module:
    """``module`` with its BatchNorms (any kind) replaced by ``FrozenBatchNorm2d`` holding their statistics."""
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


def _to_sync(module: nn.Module) -> nn.Module:
    """Every ``nn.BatchNorm2d`` in ``module`` (in place) as the project's :class:`SyncBatchNorm2d`."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return module


class HGNetV2(LayerCheckpointing, Backbone):
    """HGNetV2 as a detectron2 ``Backbone`` (see the module docstring for names, outputs and conventions).

    Args:
        name: ``"B0"`` .. ``"B5"`` (D-FINE S: B0, M: B2, L: B4, X: B5); ignored when ``arch`` is given.
        use_lab: learnable affine blocks after the activations; ``None``: the name's default (B0-B3 yes).
        out_features: subset of ``stem``, ``stage1`` .. ``stage4``.
        freeze_at: detectron2 convention (module docstring).
        norm: ``"FrozenBN"``, ``"BN"`` or ``"SyncBN"``.
        arch: a timm-style architecture dict (see :func:`hgnetv2_arch`), e.g. a tiny one for tests.

    forward: images (B, 3, H, W), normalised by the caller -> {name: (B, C, H', W')}. On CPU the layers run
    channels-last and the outputs come back contiguous.
    """

    def __init__(self, name: str = "B4", *, use_lab: bool | None = None,
                 out_features: tuple[str, ...] = ("stage2", "stage3", "stage4"), freeze_at: int = 0,
                 norm: str = "FrozenBN", arch: dict | None = None):
        super().__init__()
        from timm.models.hgnet import HighPerfGpuNet

        if arch is None:
            arch = hgnetv2_arch(name)
        if use_lab is None:
            use_lab = _DEFAULT_LAB.get(name, False)
        if norm not in ("FrozenBN", "BN", "SyncBN"):
            raise ValueError(f"norm must be 'FrozenBN', 'BN' or 'SyncBN', got {norm!r}")
        names = ["stem", "stage1", "stage2", "stage3", "stage4"]
        out_features = tuple(out_features)
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"out_features {out_features}: choose a non-empty subset of {names}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in [0, 5], got {freeze_at}")
        net = HighPerfGpuNet(cfg=arch, num_classes=0, head_hidden_size=None, use_lab=use_lab)
        self.use_lab = use_lab
        self._out_features = [n for n in names if n in out_features]
        num_stages = max(names.index(f) for f in out_features)
        self.stem = net.stem
        self.stages = nn.ModuleList(list(net.stages)[:num_stages])
        strides = {"stem": 4}
        channels = {"stem": arch["stem_chs"][-1]}
        stride = 4
        for i in range(num_stages):
            row = arch[f"stage{i + 1}"]
            stride *= 2 if row[4] else 1
            strides[f"stage{i + 1}"], channels[f"stage{i + 1}"] = stride, row[2]
        self._out_feature_strides = {n: strides[n] for n in self._out_features}
        self._out_feature_channels = {n: channels[n] for n in self._out_features}
        if norm == "FrozenBN":
            _to_frozen(self)
        elif norm == "SyncBN":
            _to_sync(self)
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> HGNetV2:
        """Freeze the stem (``freeze_at >= 1``) and stage1 .. stage{freeze_at - 1}: no gradients, frozen BN."""
        for part in [self.stem, *self.stages][:freeze_at]:
            for p in part.parameters():
                p.requires_grad_(False)
            _to_frozen(part)  # converts the BNs inside ``part`` in place
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"HGNetV2 takes (B, C, H, W) images, got shape {tuple(x.shape)}")
        channels_last = x.device.type == "cpu"  # oneDNN convolutions take NHWC without reordering
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for i, stage in enumerate(self.stages):
            x = stage.downsample(x)
            for block in stage.blocks:
                x = self.run_layer(block, x)
            if f"stage{i + 1}" in self._out_features:
                outputs[f"stage{i + 1}"] = x
        return {n: out.contiguous() for n, out in outputs.items()} if channels_last else outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


def build_hgnetv2(name: str = "B4", out_features: tuple[str, ...] = ("stage2", "stage3", "stage4"),
                  freeze_at: int = 1, norm: str = "FrozenBN", use_lab: bool | None = None,
                  arch: dict | None = None) -> HGNetV2:
    """:class:`HGNetV2` for LazyConfigs. The defaults are D-FINE L / X (stem frozen, frozen BN); D-FINE S / M
    and DEIM train everything with training-mode BN: ``freeze_at=0, norm="BN"``."""
    return HGNetV2(name, use_lab=use_lab, out_features=tuple(out_features), freeze_at=freeze_at, norm=norm,
                   arch=arch)
