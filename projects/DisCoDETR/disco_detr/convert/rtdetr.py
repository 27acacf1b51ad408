"""Convert RT-DETR checkpoints to :class:`disco_detr.modeling.detectors.rt_detr.RTDETR` names.

Two source layouts (``source``):

``"hf"``       HuggingFace transformers ``RTDetrForObjectDetection`` / ``RTDetrModel`` (e.g. the hub's
               ``PekingU/rtdetr_r50vd``). Both generations of names are accepted: the in-memory names of
               transformers 5.x (``model.encoder.aifi.{i}.layers.{j}``, ``self_attn.o_proj``, ``mlp.fc1``) and the
               names of hub files saved by 4.x (``model.encoder.encoder.{i}.layers.{j}``, ``self_attn.out_proj``,
               ``fc1``). 4.x ``RTDetrForObjectDetection`` also stores the decoder heads a second time at the top
               level (``class_embed.{i}``, ``bbox_embed.{i}``, one tensor in memory): the copies must be equal
               and are merged. The backbone (``model.backbone.model.*``) goes through
               :func:`~.resnet_vd.convert_resnet_vd` (``source="hf"``).
``"release"``  the PyTorch RT-DETR release (lyuwenyu/RT-DETR ``rtdetr_pytorch``): ``backbone.*`` (PResNet,
               :func:`~.resnet_vd.convert_resnet_vd` ``source="rtdetr"``), ``encoder.*`` (HybridEncoder; AIFI in
               ``encoder.encoder.{i}.layers.{j}`` with ``nn.MultiheadAttention``'s stacked ``in_proj_weight`` /
               ``in_proj_bias``, rows q, k, v, split here), ``decoder.*`` (RTDETRTransformer: ``input_proj.{l}.{conv,
               norm}``, ``decoder.layers``, ``dec_score_head``, ``dec_bbox_head``, ``enc_*``, ``query_pos_head``,
               ``denoising_class_embed``). Release training checkpoints hold ``{"model": ..., "ema": {"module": ...}}``;
               pick one with :func:`~.resnet_vd.unwrap_state_dict` (``key="ema.module"`` for the published weights).

Every source key must map to a key of the target model (``reference``) with the same shape and every target
key must be filled: otherwise a ``KeyError`` / ``ValueError`` names the offending keys. BN step counters
(``num_batches_tracked``) are carried where the target has them. Our layout, for reference: ``backbone.*``,
``encoder.{input_proj,aifi,lateral_convs,fpn_blocks,downsample_convs,pan_blocks}.*``, ``decoder_input_proj.*``,
``enc_output.*``, ``enc_score_head.*``, ``enc_bbox_head.*``, ``denoising_class_embed.*``, ``decoder.layers.*``,
``decoder.query_pos_head.*``, ``class_embed.{i}.*``, ``bbox_embed.{i}.*``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .resnet_vd import convert_resnet_vd

__all__ = ["RTDETR_SOURCES", "convert_rtdetr", "convert_two_stage", "fill_and_check"]

RTDETR_SOURCES = ("hf", "release")

Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _rules(pairs) -> list[Rule]:
    return [(re.compile(p), f) for p, f in pairs]


def _aifi_layer(rest: str) -> str:
    """HF AIFI layer names (4.x or 5.x) -> ours."""
    for pattern, target in ((r"^self_attn\.(q|k|v)_proj\.", r"self_attn.\1_proj."),
                            (r"^self_attn\.(?:o|out)_proj\.", "self_attn.out_proj."),
                            (r"^self_attn_layer_norm\.", "norm1."), (r"^(?:mlp\.)?fc1\.", "linear1."),
                            (r"^(?:mlp\.)?fc2\.", "linear2."), (r"^final_layer_norm\.", "norm2.")):
        if re.match(pattern, rest):
            return re.sub(pattern, target, rest)
    raise KeyError(rest)


def _decoder_layer(rest: str) -> str:
    """HF decoder layer names (4.x or 5.x) -> ours."""
    for pattern, target in ((r"^self_attn\.(q|k|v)_proj\.", r"self_attn.\1_proj."),
                            (r"^self_attn\.(?:o|out)_proj\.", "self_attn.out_proj."),
                            (r"^self_attn_layer_norm\.", "norm1."), (r"^encoder_attn\.", "cross_attn."),
                            (r"^encoder_attn_layer_norm\.", "norm2."), (r"^(?:mlp\.)?fc1\.", "linear1."),
                            (r"^(?:mlp\.)?fc2\.", "linear2."), (r"^final_layer_norm\.", "norm3.")):
        if re.match(pattern, rest):
            return re.sub(pattern, target, rest)
    raise KeyError(rest)


_HF_RULES = _rules([
    (r"^encoder_input_proj\.(\d+)\.([01])\.(.+)$", lambda m: f"encoder.input_proj.{m[1]}.{m[2]}.{m[3]}"),
    (r"^encoder\.(?:aifi|encoder)\.(\d+)\.layers\.(\d+)\.(.+)$",
     lambda m: f"encoder.aifi.{m[1]}.{m[2]}.{_aifi_layer(m[3])}"),
    (r"^encoder\.(lateral_convs|fpn_blocks|downsample_convs|pan_blocks)\.(.+)$", lambda m: f"encoder.{m[1]}.{m[2]}"),
    (r"^decoder_input_proj\.(\d+)\.([01])\.(.+)$", lambda m: f"decoder_input_proj.{m[1]}.{m[2]}.{m[3]}"),
    (r"^(enc_output|enc_score_head|enc_bbox_head|denoising_class_embed)\.(.+)$", lambda m: f"{m[1]}.{m[2]}"),
    (r"^decoder\.layers\.(\d+)\.(.+)$", lambda m: f"decoder.layers.{m[1]}.{_decoder_layer(m[2])}"),
    (r"^decoder\.query_pos_head\.(.+)$", lambda m: f"decoder.query_pos_head.{m[1]}"),
    (r"^decoder\.class_embed\.(\d+)\.(.+)$", lambda m: f"class_embed.{m[1]}.{m[2]}"),
    (r"^decoder\.bbox_embed\.(\d+)\.(.+)$", lambda m: f"bbox_embed.{m[1]}.{m[2]}"),
])

_RELEASE_RULES = _rules([
    (r"^encoder\.input_proj\.(.+)$", lambda m: f"encoder.input_proj.{m[1]}"),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.(self_attn\.out_proj|norm1|norm2|linear1|linear2)\.(.+)$",
     lambda m: f"encoder.aifi.{m[1]}.{m[2]}.{m[3]}.{m[4]}"),
    (r"^encoder\.(lateral_convs|fpn_blocks|downsample_convs|pan_blocks)\.(.+)$", lambda m: f"encoder.{m[1]}.{m[2]}"),
    (r"^decoder\.input_proj\.(\d+)\.conv\.(.+)$", lambda m: f"decoder_input_proj.{m[1]}.0.{m[2]}"),
    (r"^decoder\.input_proj\.(\d+)\.norm\.(.+)$", lambda m: f"decoder_input_proj.{m[1]}.1.{m[2]}"),
    (r"^decoder\.(enc_output|enc_score_head|enc_bbox_head|denoising_class_embed)\.(.+)$",
     lambda m: f"{m[1]}.{m[2]}"),
    (r"^decoder\.decoder\.layers\.(\d+)\.(self_attn\.out_proj|norm[123]|cross_attn|linear[12])\.(.+)$",
     lambda m: f"decoder.layers.{m[1]}.{m[2]}.{m[3]}"),
    (r"^decoder\.query_pos_head\.(.+)$", lambda m: f"decoder.query_pos_head.{m[1]}"),
    (r"^decoder\.dec_score_head\.(\d+)\.(.+)$", lambda m: f"class_embed.{m[1]}.{m[2]}"),
    (r"^decoder\.dec_bbox_head\.(\d+)\.(.+)$", lambda m: f"bbox_embed.{m[1]}.{m[2]}"),
])

# stacked q/k/v of nn.MultiheadAttention in the release -> the prefix of our three projections
_RELEASE_IN_PROJ = _rules([
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     lambda m: f"encoder.aifi.{m[1]}.{m[2]}.self_attn.{{}}_proj.{m[3]}"),
    (r"^decoder\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     lambda m: f"decoder.layers.{m[1]}.self_attn.{{}}_proj.{m[2]}"),
])


def _apply(rules: list[Rule], key: str) -> str | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            try:
                return target(m)
            except KeyError:
                return None
    return None


def _model_prefix(keys) -> str:
    """'model.' when the file is an RTDetrForObjectDetection, '' for a bare RTDetrModel."""
    return "model." if any(k.startswith("model.encoder_input_proj.") for k in keys) else ""


def fill_and_check(converted: dict[str, torch.Tensor], origin: dict[str, str], ref_state: Mapping[str, torch.Tensor],
                   model_name: str) -> list[str]:
    """Finish a converted state dict in place against the target's ``ref_state``: BN step counters filled with
    zeros where only the target has them; the denoising label embedding dropped when the target is built
    without denoising (its source keys are returned); then every target key filled, no key without a place,
    every shape equal (``KeyError`` / ``ValueError`` naming the keys otherwise). ``origin``: our key -> source key."""
    expected = {k: tuple(v.shape) for k, v in ref_state.items()}
    dropped = []
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in converted:
            converted[k] = torch.zeros((), dtype=torch.long)
            origin[k] = "(new)"
    for k in [k for k in converted if k.startswith("denoising_class_embed.") and k not in expected]:
        dropped.append(origin.pop(k))
        del converted[k]
    missing = [k for k in expected if k not in converted]
    if missing:
        raise KeyError(f"missing keys for the {model_name} model: {missing[:20]}"
                       + (f" ... ({len(missing)} in all)" if len(missing) > 20 else ""))
    unexpected = [f"{origin[k]} -> {k}" for k in converted if k not in expected]
    if unexpected:
        raise KeyError(f"keys with no place in the {model_name} model: {unexpected[:20]}")
    bad = [f"{origin[k]} -> {k}: {tuple(v.shape)} vs {expected[k]}" for k, v in converted.items()
           if tuple(v.shape) != expected[k]]
    if bad:
        raise ValueError(f"shape mismatch: {bad[:20]}")
    return dropped


def convert_rtdetr(state: Mapping[str, torch.Tensor], source: str, reference: nn.Module | Mapping[str, torch.Tensor],
                   ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a ``source``-layout RT-DETR state dict (``"hf"`` or ``"release"``) to our layout.

    Args:
        state: tensor dict (:func:`~.resnet_vd.unwrap_state_dict` of a loaded file).
        reference: the target :class:`RTDETR` (or its state dict): every converted key must exist in it with
            the same shape, and every one of its keys must be filled.

    Returns:
        (converted, dropped): our names -> tensors (views of the inputs where no split is needed), and the
        source keys deliberately not used (the merged duplicate heads of HF 4.x; the denoising label
        embedding when the target is built with ``num_denoising=0``).
    """
    if source not in RTDETR_SOURCES:
        raise KeyError(f"unknown source {source!r}; choose from {RTDETR_SOURCES}")
    rules = _HF_RULES if source == "hf" else _RELEASE_RULES
    return convert_two_stage(state, source, reference, rules, _RELEASE_IN_PROJ, "RT-DETR")


def convert_two_stage(state: Mapping[str, torch.Tensor], source: str,
                      reference: nn.Module | Mapping[str, torch.Tensor], rules: list[Rule], in_proj: list[Rule],
                      model_name: str, skip: tuple[str, ...] | list[str] = ()) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The renaming RT-DETR's and D-FINE's converters share, for a transformers (``source="hf"``) or release layout:
    every key but the backbone's and ``skip`` through ``rules`` (transformers: relative to ``model.`` when the file
    is a ``*ForObjectDetection``, whose top-level copies of the decoder heads must equal ``decoder.*`` and are
    merged); the release's stacked ``in_proj_*`` (``in_proj`` rules) split into q, k, v; the ResNet-vd backbone
    through :func:`~.resnet_vd.convert_resnet_vd`; then :func:`fill_and_check`. Returns (converted, dropped)."""
    ref_state = reference.state_dict() if isinstance(reference, nn.Module) else reference
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped: list[str] = []
    unmapped: list[str] = []

    def put(new: str, value: torch.Tensor, key: str):
        if new in converted:
            raise ValueError(f"{key!r} and {origin[new]!r} both map to {new!r}")
        converted[new], origin[new] = value, key

    if source == "hf":
        prefix = _model_prefix(state.keys())
        backbone_source, backbone_prefix = "hf", f"{prefix}backbone.model."
    else:
        prefix, backbone_source, backbone_prefix = "", "rtdetr", "backbone."
    duplicates = {}
    for key, value in state.items():
        if key.startswith(backbone_prefix) or key in skip:
            continue
        if source == "hf" and prefix and re.match(r"^(class_embed|bbox_embed)\.\d+\.", key):  # top-level head copies
            duplicates[key] = value
            continue
        split = _apply(in_proj, key) if source != "hf" else None
        if split is not None:
            if value.shape[0] % 3:
                raise ValueError(f"{key!r}: {tuple(value.shape)} does not stack q, k, v")
            for name, part in zip("qkv", value.chunk(3, 0)):
                put(split.format(name), part, key)
            continue
        new = _apply(rules, key[len(prefix):]) if key.startswith(prefix) else None
        if new is None:
            unmapped.append(key)
        else:
            put(new, value, key)
    for key, value in duplicates.items():
        twin = f"{prefix}decoder.{key}"
        if twin in state and not torch.equal(state[twin], value):
            raise ValueError(f"{key!r} differs from {twin!r}; they are one tensor in the {model_name} model")
        if twin not in state:
            put(_apply(rules, f"decoder.{key}"), value, key)
        else:
            dropped.append(key)
    if unmapped:
        raise KeyError(f"unexpected {source!r} {model_name} keys (no rule maps them): {unmapped[:20]}"
                       + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 20 else ""))

    backbone_ref = {k[len("backbone."):]: v for k, v in ref_state.items() if k.startswith("backbone.")}
    backbone, _ = convert_resnet_vd({k: v for k, v in state.items() if k.startswith(backbone_prefix)},
                                    backbone_source, "backbone.", source_prefix=backbone_prefix,
                                    reference=backbone_ref)
    for k, v in backbone.items():
        put(k, v, k)
    dropped += fill_and_check(converted, origin, ref_state, model_name)
    return converted, dropped
