"""Tiny detectors of every variant for the tests, all shrunk by the variant table's one rule
(``disco_detr.variants.VARIANTS[name].shrink``: tiny ResNet, d = 32, 4 heads, 1 encoder + 2 decoder layers,
12 queries).

- :func:`tiny_config` / :func:`tiny_detector`: the fine-tuning detector of the demo preset
  (configs/demo/<name>.py), for the deployment and fine-tuning tests;
- :func:`tiny_pretraining`: the DisCo pre-training config tests/configs/tiny_disco.py (n = 4 boxes, 64-96 px
  views, 32-px crops, the demo's unlabelled split) around the variant's paper detector, frozen.
"""
import os

import torch
from detectron2.config import LazyConfig, instantiate

from disco_detr.variants import VARIANTS, config_path

from conftest import REPO, perturb_parameters_


def tiny_config(variant):
    """configs/demo/<variant>.py with its detector shrunk (the fine-tuning tests' tiny detector)."""
    cfg = LazyConfig.load(config_path(VARIANTS[variant].demo_config))
    VARIANTS[variant].shrink(cfg.model)
    return cfg


def tiny_detector(variant, seed=0):
    torch.manual_seed(seed)
    return perturb_parameters_(instantiate(tiny_config(variant).model)).eval()


def tiny_pretraining(variant):
    """tests/configs/tiny_disco.py around ``variant``'s paper DisCo detector (configs/disco_<variant>.py), shrunk
    with a frozen backbone, with the variant's DisCo loss weights and the shrunk detector's levels as features.
    Conditional DETR's is tiny_disco.py itself: its detector is the demo's (tests/configs/tiny_cond.py), the one
    the recorded regression ran."""
    cfg = LazyConfig.load(os.path.join(REPO, "tests", "configs", "tiny_disco.py"))
    if variant == "cond":
        return cfg
    row = VARIANTS[variant]
    cfg.model.detector = LazyConfig.load(config_path(row.pretrain_config("disco"))).model.detector
    cfg.model.feature_levels = row.shrink(cfg.model.detector, freeze_at=4)
    cfg.model.update(row.disco_loss_weights)
    cfg.train.output_dir = f"./output/test_tiny_disco_{variant}"
    return cfg
