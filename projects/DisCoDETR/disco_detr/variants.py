"""The detector variants and pre-training methods of the project: one row each, read by the configs
(configs/common/pretrain.py), the tests, the demo, the studies, the GPU check and the converters' callers.

A :class:`Variant` row names everything a detector variant brings: its canonical name (config file names,
output folders, test ids, tool arguments), the detector class, the paper model config and the demo presets
(paths relative to the repository root), the pre-training feature levels (paper and demo), DisCo's loss
weights, the optimiser's slower keys, the converter from the published checkpoint layout, and the one way
to shrink its detector config for the tests (``shrink``). Adding a variant: docs/detectors.md.

This module sits above ``modeling`` and ``convert``: no runtime package imports it.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from detectron2.config import LazyCall as L

from .convert.d_fine import convert_dfine
from .convert.detrex import convert_detrex
from .convert.rtdetr import convert_rtdetr
from .model_zoo.catalog import REPO_ROOT  # the repository root: row paths are relative to it
from .modeling.backbone import build_tiny_resnet
from .modeling.detectors import DABDETR, DFINE, DINO, RTDETR, ConditionalDETR, DeformableDETR

__all__ = ["METHODS", "REPO_ROOT", "SLOW_DEFORMABLE", "VARIANTS", "PretrainingMethod", "Variant", "config_path"]

#: the learning-rate factors of deformable attention's sampling offsets and reference points (x0.1)
SLOW_DEFORMABLE = MappingProxyType({"sampling_offsets": 0.1, "reference_points": 0.1})
#: the tests' detector size: d = 32, 4 heads, feed-forward 64, 1 encoder + 2 decoder layers, 12 queries
_TINY = {"d_model": 32, "num_heads": 4, "dim_feedforward": 64}


def config_path(relative: str) -> str:
    """The absolute path of a config named relative to the repository root (``configs/...``)."""
    return str(REPO_ROOT / relative)


def _tiny_backbone(features: tuple[str, ...], freeze_at: int | None):
    """A tiny ResNet (widths 8/16/32, FrozenBN) with outputs ``features``; ``freeze_at`` 4 freezes all of it."""
    kwargs = {"widths": (8, 16, 32), "blocks": (1, 1, 1), "stem_width": 8, "out_features": features,
              "norm": "FrozenBN"}
    if freeze_at is not None:
        kwargs["freeze_at"] = freeze_at
    return L(build_tiny_resnet)(**kwargs)


def _shrink_single_level(model, freeze_at: int | None = None) -> tuple[str, ...]:
    """Conditional / DAB-DETR: the tiny ResNet's res4 (stride 16) only."""
    model.backbone, model.in_feature = _tiny_backbone(("res4",), freeze_at), "res4"
    model.encoder.update(num_layers=1, **_TINY)
    model.decoder.update(num_layers=2, **_TINY)
    model.num_queries = 12
    return ("res4",)


def _shrink_deformable(model, freeze_at: int | None = None, *, features: tuple[str, ...] = ("res2", "res3", "res4"),
                       extra_levels: int = 1) -> tuple[str, ...]:
    """Deformable DETR / DINO: ``features`` of the tiny ResNet plus ``extra_levels``, 2 sampling points."""
    model.backbone, model.in_features = _tiny_backbone(features, freeze_at), features
    model.num_extra_levels = extra_levels
    model.norm_groups = 8
    for part, layers in ((model.encoder, 1), (model.decoder, 2)):
        part.update(num_layers=layers, num_points=2, num_levels=len(features) + extra_levels, **_TINY)
    model.num_queries = 12
    return features


def _shrink_rtdetr(model, freeze_at: int | None = None) -> tuple[str, ...]:
    """RT-DETR: strides 4/8/16 of the tiny ResNet, one RepVGG block per CSPRep layer, 2 sampling points."""
    features = ("res2", "res3", "res4")
    model.backbone, model.in_features = _tiny_backbone(features, freeze_at), features
    model.encoder.update(in_channels=(8, 16, 32), depth_mult=1 / 3, **_TINY)
    model.decoder.update(num_layers=2, num_points=2, **_TINY)
    model.num_queries = 12
    return features


def _shrink_dfine(model, freeze_at: int | None = None) -> tuple[str, ...]:
    """D-FINE: RT-DETR's tiny encoder (GELAN fusion), 2 decoder layers with (2, 3, 2) points, LQE hidden 16."""
    features = ("res2", "res3", "res4")
    model.backbone, model.in_features = _tiny_backbone(features, freeze_at), features
    model.encoder.update(in_channels=(8, 16, 32), depth_mult=1 / 3, **_TINY)
    model.decoder.update(num_layers=2, points_per_level=(2, 3, 2), **_TINY)
    model.num_queries = 12
    model.lqe_hidden_dim = 16
    return features


@dataclass(frozen=True)
class Variant:
    """One detector variant. Paths are relative to the repository root (:func:`config_path`).

    ``shrink(detector_config, freeze_at=None)`` changes a detector LazyConfig of this variant in place into
    the tests' tiny detector (tiny ResNet, d = 32, 1 + 2 layers, 12 queries; ``freeze_at=4`` freezes the whole
    backbone, as pre-training tests want) and returns the backbone levels it reads, which are the tiny
    pre-training feature levels too. ``converter(state, reference=model)`` renames a checkpoint of the
    published implementation (``converter_source``) to our keys and returns ``(state_dict, report)``.
    """

    name: str
    detector: type
    model_config: str                       # the paper detector: configs/common/models/...
    demo_config: str                        # the CPU demo's fine-tuning preset: configs/demo/<name>.py
    finetune_coco_config: str               # the paper's COCO fine-tuning (GPU check)
    paper_image_hw: tuple[int, int]         # training image size of the paper configs (GPU check)
    batch_per_gpu: int                      # batch per GPU of the paper configs (GPU check)
    feature_levels: tuple[str, ...]         # DisCo's object / crop features, paper backbone
    demo_feature_levels: tuple[str, ...]    # the same on the demo's MobileNetV2
    disco_loss_weights: Mapping[str, float]  # lambda_0 (weight_rec) and lambda_3 (weight_contrast)
    shrink: Callable[..., tuple[str, ...]]
    converter: Callable
    converter_source: str
    # DisCo / Siamese and demo optimiser (as the variant's fine-tuning configs); None: the optimiser's default
    lr_factor_keys: Mapping[str, float] | None = None
    # DETReg's optimiser (the release slows deformable attention's offsets and reference points)
    detreg_lr_factor_keys: Mapping[str, float] = field(default_factory=lambda: SLOW_DEFORMABLE)
    demo_pretrain_iters: int = 50
    two_stage: bool = False                 # queries selected from the encoder, supervised as ``_enc``

    def demo_pretrain_config(self, method: str) -> str:
        """The demo's pre-training preset of ``method`` (a key of :data:`METHODS`) for this variant."""
        return f"configs/demo/{method}_{self.name}.py"

    def pretrain_config(self, method: str) -> str:
        """The paper's pre-training config of ``method`` for this variant."""
        return f"configs/{method}_{self.name}.py"


@dataclass(frozen=True)
class PretrainingMethod:
    """One pre-training method as the configs and the demo name it: ``label`` for tables, ``proposals`` the
    proposal algorithm its data reads (tools/generate_proposals.py --method)."""

    name: str
    label: str
    proposals: str


def _detrex(name: str) -> Callable:
    """detrex's converter for our variant ``name`` (convert.detrex.LAYOUT_OF picks detrex's layout)."""
    return functools.partial(convert_detrex, variant=name)


def _weights(rec: float, contrast: float) -> Mapping[str, float]:
    return MappingProxyType({"weight_rec": rec, "weight_contrast": contrast})


_RES5, _RES3_5 = ("res5",), ("res3", "res4", "res5")
_STRIDE16, _STRIDE8_32 = ("stride16",), ("stride8", "stride16", "stride32")
_COCO_HW = (800, 1333)

#: canonical name -> row. DisCo's lambda_0 (weight_rec) is 5 for Conditional DETR (DAB-DETR takes its value:
#: the authors released no DAB-DETR pre-training) and 3 for the deformable-attention variants (Deformable DETR,
#: DINO, RT-DETR, D-FINE); lambda_3 (weight_contrast) is 2, 5 for multi-scale Deformable DETR (Table 3 (c)).
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant(name="cond", detector=ConditionalDETR,
            model_config="configs/common/models/conditional_detr_r50.py", demo_config="configs/demo/cond.py",
            finetune_coco_config="configs/finetune_cond_coco.py", paper_image_hw=_COCO_HW, batch_per_gpu=2,
            feature_levels=_RES5, demo_feature_levels=_STRIDE16, disco_loss_weights=_weights(5.0, 2.0),
            shrink=_shrink_single_level, converter=_detrex("cond"), converter_source="detrex",
            detreg_lr_factor_keys={}),
    Variant(name="dab", detector=DABDETR,
            model_config="configs/common/models/dab_detr_r50.py", demo_config="configs/demo/dab.py",
            finetune_coco_config="configs/finetune_dab_coco.py", paper_image_hw=_COCO_HW, batch_per_gpu=2,
            feature_levels=_RES5, demo_feature_levels=_STRIDE16, disco_loss_weights=_weights(5.0, 2.0),
            shrink=_shrink_single_level, converter=_detrex("dab"), converter_source="detrex",
            detreg_lr_factor_keys={}),
    Variant(name="deformable_ss", detector=DeformableDETR,
            model_config="configs/common/models/deformable_detr_ss_r50.py",
            demo_config="configs/demo/deformable_ss.py",
            finetune_coco_config="configs/finetune_deformable_ss_coco.py", paper_image_hw=_COCO_HW,
            batch_per_gpu=2, feature_levels=_RES5, demo_feature_levels=_STRIDE16,
            disco_loss_weights=_weights(3.0, 2.0),
            shrink=functools.partial(_shrink_deformable, features=("res4",), extra_levels=0),
            converter=_detrex("deformable_ss"), converter_source="detrex", lr_factor_keys=SLOW_DEFORMABLE,
            demo_pretrain_iters=150),
    Variant(name="deformable_ms", detector=DeformableDETR,
            model_config="configs/common/models/deformable_detr_r50.py", demo_config="configs/demo/deformable_ms.py",
            finetune_coco_config="configs/finetune_deformable_ms_coco.py", paper_image_hw=_COCO_HW,
            batch_per_gpu=2, feature_levels=_RES3_5, demo_feature_levels=_STRIDE8_32,
            disco_loss_weights=_weights(3.0, 5.0), shrink=_shrink_deformable, converter=_detrex("deformable_ms"),
            converter_source="detrex", lr_factor_keys=SLOW_DEFORMABLE, demo_pretrain_iters=150),
    Variant(name="dino", detector=DINO,
            model_config="configs/common/models/dino_r50.py", demo_config="configs/demo/dino.py",
            finetune_coco_config="configs/finetune_dino_coco.py", paper_image_hw=_COCO_HW, batch_per_gpu=2,
            feature_levels=_RES3_5, demo_feature_levels=_STRIDE8_32, disco_loss_weights=_weights(3.0, 2.0),
            shrink=_shrink_deformable, converter=_detrex("dino"), converter_source="detrex", two_stage=True),
    Variant(name="rtdetr", detector=RTDETR,
            model_config="configs/common/models/rt_detr_r50vd.py", demo_config="configs/demo/rtdetr.py",
            finetune_coco_config="configs/finetune_rtdetr_coco.py", paper_image_hw=(640, 640), batch_per_gpu=4,
            feature_levels=_RES3_5, demo_feature_levels=_STRIDE8_32, disco_loss_weights=_weights(3.0, 2.0),
            shrink=_shrink_rtdetr, converter=functools.partial(convert_rtdetr, source="release"),
            converter_source="the RT-DETR release", two_stage=True),
    Variant(name="dfine", detector=DFINE,
            model_config="configs/common/models/d_fine_r50vd.py", demo_config="configs/demo/dfine.py",
            finetune_coco_config="configs/finetune_dfine_coco.py", paper_image_hw=(640, 640), batch_per_gpu=4,
            feature_levels=_RES3_5, demo_feature_levels=_STRIDE8_32, disco_loss_weights=_weights(3.0, 2.0),
            shrink=_shrink_dfine, converter=functools.partial(convert_dfine, source="release"),
            converter_source="the D-FINE release", two_stage=True),
)}

#: the pre-training methods every variant has configs for (configs/<method>_<variant>.py and the demo's)
METHODS: dict[str, PretrainingMethod] = {m.name: m for m in (
    PretrainingMethod("detreg", "DETReg", "selective_search"),
    PretrainingMethod("siamese", "Siamese DETR", "edgeboxes"),
    PretrainingMethod("disco", "DisCo DETR", "edgeboxes"),
)}
