"""LazyConfig loading with strict command-line overrides, and the presets of configs/ by name.

detectron2's ``LazyConfig`` resolves relative imports only inside the loaded file's folder, so a
config of one's own, kept outside configs/, builds on a preset with :func:`preset` in one line::

    from disco_detr.config import preset
    dataloader, lr_multiplier, model, optimizer, train = preset("small/cond")

and on a pre-training entry point with :func:`pretraining_config` (docs/own_data.md).
"""
from __future__ import annotations

import os

from detectron2.config import LazyConfig
from omegaconf import DictConfig, OmegaConf

__all__ = ["SECTIONS", "apply_overrides", "load_config", "preset", "preset_path", "pretraining_config"]

_MISSING = object()
#: the sections of every training config, in the order :func:`preset` returns them
SECTIONS = ("dataloader", "lr_multiplier", "model", "optimizer", "train")
#: configs/ of the source checkout (the package is installed in development mode: setup.py develop)
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir, "configs")


def apply_overrides(cfg, overrides: list[str] | None, source: str = "the config"):
    """``cfg`` with ``key=value`` overrides applied. detectron2 silently *adds* an overridden key that
    does not exist, so a typo such as ``train.max_iters=10`` would be ignored. Here such an override
    raises ``KeyError`` naming the key and ``source``; prefix the key with ``+`` to add a new key on
    purpose."""
    plain = []
    for override in overrides or []:
        if "=" not in override:
            raise ValueError(f"Override {override!r} is not of the form key=value")
        key = override.split("=", 1)[0]
        if key.startswith("+"):
            plain.append(override[1:])
            continue
        if OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is _MISSING:
            raise KeyError(f"Config key {key!r} does not exist in {source} "
                           f"(use +{key}=... to add a new key on purpose)")
        plain.append(override)
    return LazyConfig.apply_overrides(cfg, plain)


def load_config(config_file: str, overrides: list[str] | None = None):
    """Load a LazyConfig file (.py or a saved .yaml) and apply ``key=value`` overrides
    (:func:`apply_overrides`)."""
    return apply_overrides(LazyConfig.load(config_file), overrides, config_file)


def preset_path(name: str) -> str:
    """The file of a preset: ``name`` relative to configs/ with or without ``.py`` ("demo/cond",
    "small/disco_cond", "finetune_cond_voc"), or a path to an existing config file."""
    if os.path.isfile(name):
        return os.path.abspath(name)
    path = os.path.normpath(os.path.join(CONFIGS_DIR, name if name.endswith(".py") else name + ".py"))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no preset {name!r}: {path} does not exist (presets are the files under "
                                f"{os.path.normpath(CONFIGS_DIR)}, named without configs/ and .py)")
    return path


def preset(name: str, keys: tuple[str, ...] | None = SECTIONS):
    """A preset of configs/ by name (:func:`preset_path`), loaded fresh: the tuple of its ``keys``
    sections (default :data:`SECTIONS`: dataloader, lr_multiplier, model, optimizer, train), or the
    whole config with ``keys=None``."""
    path = preset_path(name)
    return LazyConfig.load(path) if keys is None else LazyConfig.load(path, tuple(keys))


def pretraining_config(method: str, variant: str, preset: str = "paper") -> DictConfig:
    """The whole config (:data:`SECTIONS`) that configs/common/pretrain.py's ``pretraining(method,
    variant, preset)`` builds: ``method`` disco / siamese / detreg, ``variant`` a key of
    disco_detr.variants.VARIANTS, ``preset`` paper / small / demo; ``train.finetune_config`` names its
    fine-tuning counterpart."""
    build = LazyConfig.load(preset_path("common/pretrain"), "pretraining")
    sections = build(method, variant, preset=preset)
    return DictConfig({key: getattr(sections, key) for key in SECTIONS}, flags={"allow_objects": True})
