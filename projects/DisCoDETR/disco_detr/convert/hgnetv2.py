"""Convert HGNetV2 checkpoints to :class:`disco_detr.modeling.hgnetv2.HGNetV2` names.

Three source layouts (``source``):

``"dfine"``  the D-FINE release's ``HGNetv2`` (Peterande/D-FINE ``src/nn/backbone/hgnetv2.py``; DEIM's is the
            same): ``stem.stem{1,2a,2b,3,4}.{conv,bn,lab}``, ``stages.{s}.downsample.{conv,bn}``,
            ``stages.{s}.blocks.{b}.layers.{k}.{conv,bn,lab}`` (light layers ``.conv1`` / ``.conv2``), and
            ``aggregation.{0,1}``: our names already. Full detector checkpoints (``dfine_{s,m,l,x}_coco.pth``) hold
            them under ``backbone.`` inside ``model`` or ``ema.module``; the ImageNet files
            ``PPHGNetV2_B{n}_stage1.pth`` hold them bare (their classifier keys are dropped).
``"timm"``   timm ``hgnetv2_b{n}``: the same names; ``head.*`` is dropped.
``"hf"``     transformers ``HGNetV2Backbone`` (5.x): ``embedder.stem*`` -> ``stem.stem*``,
            ``encoder.stages.`` -> ``stages.``, ``convolution`` -> ``conv``, ``normalization`` -> ``bn``; inside
            ``DFineForObjectDetection`` under ``model.backbone.model.``.

The backbone's prefix inside the file is found from the first stem convolution (or given as ``source_prefix``);
keys outside it, BN step counters and classifier heads are dropped. The converted tensors must equal, key for key
and shape for shape, one of B0-B5 (with the learnable affine blocks exactly where the file has ``lab`` keys) or
the given ``reference``; otherwise a ``KeyError`` / ``ValueError`` names the offending keys.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..modeling.hgnetv2 import HGNETV2_NAMES, HGNetV2
from .resnet_vd import _find_prefix

__all__ = ["HGNETV2_SOURCES", "convert_hgnetv2", "hgnetv2_shapes"]

_HF_RENAMES = [(re.compile(p), r) for p, r in [
    (r"^embedder\.", "stem."),
    (r"^encoder\.stages\.", "stages."),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".bn."),
]]
# source -> (key of the first stem convolution, keys dropped inside the backbone)
_SOURCES = {
    "dfine": ("stem.stem1.conv.weight", re.compile(r"num_batches_tracked$|^(head|fc|last_conv)\.")),
    "timm": ("stem.stem1.conv.weight", re.compile(r"num_batches_tracked$|^head\.")),
    "hf": ("embedder.stem1.convolution.weight", re.compile(r"num_batches_tracked$")),
}
HGNETV2_SOURCES = tuple(_SOURCES)


def hgnetv2_shapes(name: str, use_lab: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of :class:`HGNetV2` ``name`` with all four stages (no BN step counters), built on ``meta``."""
    with torch.device("meta"):
        model = HGNetV2(name, use_lab=use_lab, out_features=("stage4",), norm="BN")
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _rename(local: str, source: str) -> str:
    if source == "hf":
        for pattern, repl in _HF_RENAMES:
            local = pattern.sub(repl, local)
    return local


def _match_reference(converted: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    use_lab = any(".lab." in k for k in converted)
    got = {k: tuple(v.shape) for k, v in converted.items()}
    candidates = {}
    for name in HGNETV2_NAMES:
        shapes = hgnetv2_shapes(name, use_lab)
        if shapes == got:
            return shapes
        candidates[name] = len(set(shapes.items()) ^ set(got.items()))
    best = min(candidates, key=candidates.get)
    expected = hgnetv2_shapes(best, use_lab)
    missing = [k for k in expected if k not in got][:10]
    unexpected = [k for k in got if k not in expected][:10]
    bad = [f"{k}: {got[k]} vs {expected[k]}" for k in got if k in expected and got[k] != expected[k]][:10]
    raise KeyError(f"the tensors match no HGNetV2 B0-B5 (use_lab={use_lab}); nearest {best}: missing {missing}, "
                   f"unexpected {unexpected}, shape mismatches {bad}")


def convert_hgnetv2(state: Mapping[str, torch.Tensor], source: str, prefix: str = "", *,
                    source_prefix: str | None = None,
                    reference: nn.Module | Mapping[str, torch.Tensor] | None = None,
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a ``source``-layout HGNetV2 state dict to :class:`HGNetV2` names.

    Args:
        state: tensor dict (:func:`disco_detr.convert.resnet_vd.unwrap_state_dict` on a loaded file).
        source: ``"dfine"``, ``"timm"`` or ``"hf"`` (module docstring).
        prefix: prepended to every output key (``"backbone."`` for a detector's ``init_checkpoint``).
        source_prefix: the backbone's prefix inside ``state``; found from the stem key when ``None``.
        reference: an :class:`HGNetV2` (all four stages) or its state dict to check against; by default the
            B0-B5 architecture that the converted shapes match.

    Returns:
        (converted, dropped): the renamed tensors (not copies) and the input keys not converted.
    """
    if source not in _SOURCES:
        raise KeyError(f"unknown source {source!r}; choose from {HGNETV2_SOURCES}")
    anchor, drop = _SOURCES[source]
    if source_prefix is None:
        source_prefix = _find_prefix(state.keys(), anchor, source)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped = []
    for key, value in state.items():
        if not key.startswith(source_prefix) or not isinstance(value, torch.Tensor) or drop.search(
                key[len(source_prefix):]):
            dropped.append(key)
            continue
        new = _rename(key[len(source_prefix):], source)
        if new in converted:
            raise ValueError(f"{key!r} and {origin[new]!r} both map to {new!r}")
        converted[new], origin[new] = value, key
    if not converted:
        raise KeyError(f"no {source!r} backbone keys under the prefix {source_prefix!r}")
    if reference is None:
        _match_reference(converted)
    else:
        ref_state = reference.state_dict() if isinstance(reference, nn.Module) else reference
        expected = {k: tuple(v.shape) for k, v in ref_state.items() if not k.endswith("num_batches_tracked")}
        missing = [k for k in expected if k not in converted]
        unexpected = [f"{origin[k]} -> {k}" for k in converted if k not in expected]
        bad = [f"{origin[k]} -> {k}: {tuple(v.shape)} vs {expected[k]}"
               for k, v in converted.items() if k in expected and tuple(v.shape) != expected[k]]
        if missing or unexpected:
            raise KeyError(f"missing keys {missing[:20]}; unexpected keys {unexpected[:20]}")
        if bad:
            raise ValueError(f"shape mismatch: {bad[:20]}")
    return {prefix + k: v for k, v in converted.items()}, dropped
