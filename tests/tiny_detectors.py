"""Tiny fine-tuning detectors of every variant for the deployment tests (tests/test_export.py,
tests/test_predict.py): the demo configs (configs/demo/<variant>.py) with a tiny ResNet backbone, d = 32,
4 heads, 1 encoder + 2 decoder layers, 12 queries."""
import os

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate

from disco_detr.modeling import build_tiny_resnet

from conftest import REPO, perturb_parameters_

#: variant -> demo config (the fine-tuning presets every variant has)
VARIANTS = {"conditional": "cond", "deformable_ss": "deformable_ss", "deformable_ms": "deformable_ms",
            "dab": "dab", "dino": "dino", "rt_detr": "rtdetr"}


def _backbone(features):
    return L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8, out_features=features,
                                norm="FrozenBN")


def tiny_config(variant):
    """configs/demo/<variant>.py with a tiny detector: tiny ResNet, d = 32, 4 heads, 1 + 2 layers, 12 queries."""
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "demo", f"{VARIANTS[variant]}.py"))
    m = cfg.model
    small = dict(d_model=32, num_heads=4, dim_feedforward=64)
    if variant in ("conditional", "dab"):
        m.backbone, m.in_feature = _backbone(("res4",)), "res4"
        m.encoder.update(num_layers=1, **small)
        m.decoder.update(num_layers=2, **small)
    elif variant == "rt_detr":
        m.backbone, m.in_features = _backbone(("res2", "res3", "res4")), ("res2", "res3", "res4")
        m.encoder.update(in_channels=(8, 16, 32), depth_mult=1 / 3, **small)
        m.decoder.update(num_layers=2, num_points=2, **small)
    else:
        features = ("res4",) if variant == "deformable_ss" else ("res2", "res3", "res4")
        m.backbone, m.in_features = _backbone(features), features
        m.num_extra_levels = 0 if variant == "deformable_ss" else 1
        m.norm_groups = 8
        for part, layers in ((m.encoder, 1), (m.decoder, 2)):
            part.update(num_layers=layers, num_points=2, num_levels=len(features) + m.num_extra_levels, **small)
    m.num_queries = 12
    return cfg


def tiny_detector(variant, seed=0):
    torch.manual_seed(seed)
    return perturb_parameters_(instantiate(tiny_config(variant).model)).eval()
