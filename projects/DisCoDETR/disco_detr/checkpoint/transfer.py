"""What a pre-training -> fine-tuning transfer actually loads, and whether the two models fit.

Inputs are state dicts of a bare detector (keys without the ``detector.`` prefix of the
pre-training wrapper): name -> tensor. Nothing here touches a model's weights.

* :func:`module_group` puts a detector key into backbone / encoder / decoder / heads / other
  by the first component of its name (the detectors share these attribute names).
* :func:`load_shares` counts, per group and overall, the keys and elements (numel) of the
  fine-tuning model that a transfer loads (same name and same shape) out of all it has.
* :func:`architecture` reads the backbone family and the transformer width d from the keys and
  shapes alone, so a checkpoint and a model can be compared without their configs.
* :func:`matching_finetune_configs` names the fine-tuning configs that fit the pre-training run
  a checkpoint came from (its ``config.yaml`` or ``log.txt``, and the configs/ naming convention).
"""
from __future__ import annotations

import os
import re
from collections import Counter

import torch

__all__ = ["GROUPS", "module_group", "load_shares", "architecture", "describe_architecture",
           "finetune_configs_for", "matching_finetune_configs"]

GROUPS = ("backbone", "encoder", "decoder", "heads", "other")
#: First name components (besides any containing "encoder" / "decoder") that belong to a group.
_ENCODER = ("input_proj", "level_embed", "enc_output", "enc_output_norm")
_DECODER = ("query_embed", "anchor_embed", "tgt_embed", "reference_points")
_HEADS = ("class", "bbox", "score", "label", "lqe")
#: ResNet depth from blocks per stage and block kind: depth = 2 + blocks * (3 bottleneck, 2 basic).
_STANDARD_RESNET_WIDTHS = {True: (256, 512, 1024, 2048), False: (64, 128, 256, 512)}


def module_group(key: str) -> str:
    """The group of a detector state-dict key: ``backbone.*`` -> backbone; class / box / score /
    label modules and quality estimators (DINO's ``enc_class_embed``, RT-DETR's ``enc_score_head``, D-FINE's
    ``lqe_layers``, ...) -> heads; anything
    named ``*decoder*`` or a query embedding -> decoder; ``*encoder*``, the input projection, level
    embedding and encoder output (query selection) -> encoder; the rest -> other."""
    first = key.split(".", 1)[0]
    if first == "backbone":
        return "backbone"
    if any(word in first for word in _HEADS):
        return "heads"
    if "decoder" in first or first in _DECODER:
        return "decoder"
    if "encoder" in first or first in _ENCODER:
        return "encoder"
    return "other"


def load_shares(loaded: dict, model_state: dict) -> dict:
    """Per group (and ``"overall"``): ``keys_loaded`` / ``keys_total`` and ``numel_loaded`` /
    ``numel_total`` of ``model_state``, and ``share`` = numel_loaded / numel_total (None for a
    group the model does not have). A key counts as loaded only when ``loaded`` holds it with the
    model's shape: keys the model lacks never count."""
    counts = {g: {"keys_loaded": 0, "keys_total": 0, "numel_loaded": 0, "numel_total": 0}
              for g in (*GROUPS, "overall")}
    for key, value in model_state.items():
        fits = key in loaded and tuple(loaded[key].shape) == tuple(value.shape)
        for g in (module_group(key), "overall"):
            counts[g]["keys_total"] += 1
            counts[g]["numel_total"] += value.numel()
            counts[g]["keys_loaded"] += int(fits)
            counts[g]["numel_loaded"] += value.numel() if fits else 0
    for c in counts.values():
        c["share"] = c["numel_loaded"] / c["numel_total"] if c["numel_total"] else None
    return counts


def _backbone_family(state: dict) -> str | None:
    """"MobileNetV2", "R50", "R18", "ResNet-vd-50", "ResNet-8 (widths 8/16/32)", ... or None (no backbone keys)."""
    keys = [k[len("backbone."):] for k in state if k.startswith("backbone.")]
    if not keys:
        return None
    if any(k.startswith("features.") for k in keys):
        return "MobileNetV2"
    blocks: dict[str, set] = {}
    for k in keys:
        m = re.match(r"(res\d+)\.(\d+)\.", k)
        if m:
            blocks.setdefault(m.group(1), set()).add(int(m.group(2)))
    if not blocks or not any(k.startswith("stem.") for k in keys):
        return f"an unknown backbone ({keys[0]}, ...)"
    stages = sorted(blocks, key=lambda s: int(s[3:]))
    bottleneck = any(k.startswith(f"{stages[0]}.0.conv3.") for k in keys)
    depth = 2 + sum(len(blocks[s]) for s in stages) * (3 if bottleneck else 2)
    last_conv = "conv3" if bottleneck else "conv2"
    widths = tuple(int(state[f"backbone.{s}.{max(blocks[s])}.{last_conv}.weight"].shape[0])
                   for s in stages if f"backbone.{s}.{max(blocks[s])}.{last_conv}.weight" in state)
    vd = any(k.startswith("stem.conv2") or k.startswith("stem.stem") for k in keys)
    name = f"ResNet-vd-{depth}" if vd else f"R{depth}"
    if widths != _STANDARD_RESNET_WIDTHS[bottleneck][:len(widths)]:
        name = f"{name} (widths {'/'.join(map(str, widths))})"
    return name


def _d_model(state: dict) -> int | None:
    """The transformer width: the most common size of the encoder's and decoder's LayerNorm weights."""
    sizes = Counter(int(v.shape[0]) for k, v in state.items()
                    if module_group(k) in ("encoder", "decoder") and re.search(r"norm\d*\.weight$", k)
                    and v.dim() == 1)
    return sizes.most_common(1)[0][0] if sizes else None


def architecture(state: dict[str, torch.Tensor]) -> dict:
    """``{"backbone": family or None, "d_model": int or None}`` of a detector state dict."""
    return {"backbone": _backbone_family(state), "d_model": _d_model(state)}


def describe_architecture(arch: dict) -> str:
    """``{"backbone": "MobileNetV2", "d_model": 128}`` -> "MobileNetV2, d = 128"."""
    backbone = arch["backbone"] or "no backbone weights"
    return f"{backbone}, d = {arch['d_model']}" if arch["d_model"] else backbone


def finetune_configs_for(pretrain_config: str) -> list[str]:
    """The fine-tuning configs that fit a pre-training config by the configs/ naming convention
    (``demo/<method>_<v>.py`` -> ``demo/<v>.py``, ``small/<method>_<v>.py`` -> ``small/<v>.py``; ``<method>_<v>[_q100].py`` ->
    ``finetune_<v>_{voc,coco}[_q100].py``, method disco / siamese / detreg), the ones that exist
    when the folder does; [] for a name outside the convention."""
    folder, name = os.path.split(os.path.normpath(pretrain_config))
    m = re.fullmatch(r"(?:disco|siamese|detreg)_(.+?)(_q\d+)?\.py", name)
    if not m:
        return []
    variant, suffix = m.group(1), m.group(2) or ""
    if os.path.basename(folder) in ("demo", "small"):
        candidates = [os.path.join(folder, f"{variant}{suffix}.py")]
    else:
        candidates = [os.path.join(folder, f"finetune_{variant}_{ds}{suffix}.py") for ds in ("voc", "coco")]
    if os.path.isdir(folder):
        candidates = [c for c in candidates if os.path.isfile(c)]
    return candidates


def _pretrain_config_file(run_dir: str) -> str | None:
    """The ``--config-file`` of the run that wrote ``run_dir``, from detectron2's ``log.txt``."""
    log = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(log):
        return None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.search(r"config_file='([^']+)'", line) or re.search(r"args\.config_file=(\S+?):?$", line.strip())
            if m:
                return m.group(1)
    return None


def matching_finetune_configs(checkpoint: str) -> list[str]:
    """The fine-tuning configs that fit the pre-training run of ``checkpoint`` (a local path): the
    ``finetune_config`` key of the run's ``config.yaml`` (top level or ``train.finetune_config``, which
    configs/common/pretrain.py sets) when it has one, else the convention of
    :func:`finetune_configs_for` applied to the run's config file (from its ``log.txt``); [] when
    neither is known."""
    run_dir = os.path.dirname(os.path.abspath(checkpoint))
    dump = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(dump):
        with open(dump, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"\s*finetune_config:\s*['\"]?([^'\"\s]+)", line)
                if m:
                    return [m.group(1)]
    config = _pretrain_config_file(run_dir)
    return finetune_configs_for(config) if config else []
