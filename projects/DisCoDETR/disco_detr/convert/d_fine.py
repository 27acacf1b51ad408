"""Convert D-FINE checkpoints to :class:`disco_detr.modeling.detectors.d_fine.DFINE` names.

Two source layouts (``source``):

``"hf"``       transformers' ``DFineForObjectDetection`` / ``DFineModel`` (5.x in-memory names, e.g. the hub's
               ``ustc-community/dfine-*``): ``model.encoder_input_proj``, ``model.encoder.aifi.{i}.layers.{j}``
               (``self_attn.{q,k,v,o}_proj``, ``mlp.layers.{0,1}``), ``model.decoder.layers.{i}``
               (``encoder_attn``, ``gateway``, ``mlp.layers``), ``model.decoder.{pre_bbox_head,lqe_layers,
               class_embed,bbox_embed,query_pos_head}``. ``DFineForObjectDetection`` stores the decoder heads a
               second time at the top level (``class_embed.{i}``, ``bbox_embed.{i}``): the copies must be equal
               and are merged. The backbone (``model.backbone.model.*``) must be a ResNet-vd
               (:func:`~.resnet_vd.convert_resnet_vd`, ``source="hf"``).
``"release"``  the D-FINE release (Peterande/D-FINE ``src/zoo/dfine``; checkpoints hold ``{"model": ...,
               "ema": {"module": ...}}``, pick one with :func:`~.resnet_vd.unwrap_state_dict`): ``backbone.*``
               (PResNet: :func:`~.resnet_vd.convert_resnet_vd` ``source="rtdetr"``; HGNetv2 backbones are
               converted by their own module); ``encoder.*`` (HybridEncoder: AIFI in
               ``encoder.encoder.{i}.layers.{j}`` with stacked ``in_proj_weight``; RepNCSPELAN4 ``cv1..cv4``, its
               CSP branches ``cv2.0`` / ``cv3.0`` and their 3x3 convs ``cv2.1`` / ``cv3.1``; SCDown
               ``downsample_convs.{i}.0.cv{1,2}``); ``decoder.*`` (DFINETransformer: ``decoder.layers``,
               ``decoder.lqe_layers``, ``pre_bbox_head`` on the transformer or on its decoder,
               ``enc_output.{proj,norm}``, ``dec_score_head``, ``dec_bbox_head``, ``query_pos_head``,
               ``denoising_class_embed``; the ``anchors`` / ``valid_mask`` buffers are recomputed here). Its AIFI
               position embedding swaps rows and columns on non-square maps as RT-DETR's release does: build
               the encoder with ``aifi_position="release"`` for its checkpoints.

The distribution's constants (``up``, ``reg_scale``) are stored as tensors by both sources; they must equal the
target model's and are dropped. Every other source key must map to a key of the target model (``reference``)
with the same shape and every target key must be filled (errors name the offending keys).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from .rtdetr import _RELEASE_IN_PROJ, _aifi_layer, _rules, convert_two_stage
from .rtdetr import _decoder_layer as _rtdetr_decoder_layer

__all__ = ["DFINE_SOURCES", "convert_dfine"]

DFINE_SOURCES = ("hf", "release")


def _mlp_to_fc(rest: str) -> str:
    """transformers' D-FINE MLP names (``mlp.layers.{0,1}``) -> RT-DETR's (``fc1``, ``fc2``)."""
    return re.sub(r"^mlp\.layers\.([01])\.", lambda m: f"fc{int(m[1]) + 1}.", rest)


def _decoder_layer(rest: str) -> str:
    """transformers' D-FINE decoder layer names -> ours: RT-DETR's, plus the gate."""
    return rest if rest.startswith("gateway.") else _rtdetr_decoder_layer(_mlp_to_fc(rest))


_HF_RULES = _rules([
    (r"^encoder_input_proj\.(\d+)\.([01])\.(.+)$", lambda m: f"encoder.input_proj.{m[1]}.{m[2]}.{m[3]}"),
    (r"^encoder\.aifi\.(\d+)\.layers\.(\d+)\.(.+)$", lambda m: f"encoder.aifi.{m[1]}.{m[2]}.{_aifi_layer(_mlp_to_fc(m[3]))}"),
    (r"^encoder\.(lateral_convs|fpn_blocks|downsample_convs|pan_blocks)\.(.+)$", lambda m: f"encoder.{m[1]}.{m[2]}"),
    (r"^(enc_output|enc_score_head|enc_bbox_head|denoising_class_embed)\.(.+)$", lambda m: f"{m[1]}.{m[2]}"),
    (r"^decoder\.layers\.(\d+)\.(.+)$", lambda m: f"decoder.layers.{m[1]}.{_decoder_layer(m[2])}"),
    (r"^decoder\.query_pos_head\.(.+)$", lambda m: f"decoder.query_pos_head.{m[1]}"),
    (r"^decoder\.(pre_bbox_head|lqe_layers|class_embed|bbox_embed)\.(.+)$", lambda m: f"{m[1]}.{m[2]}"),
])


def _release_elan(rest: str) -> str:
    """The release's RepNCSPELAN4 / SCDown names -> ours (GELANBlock / SCDown)."""
    for pattern, target in ((r"^cv1\.", "conv1."), (r"^cv2\.0\.", "csp_rep1."), (r"^cv2\.1\.", "conv2."),
                            (r"^cv3\.0\.", "csp_rep2."), (r"^cv3\.1\.", "conv3."), (r"^cv4\.", "conv4.")):
        if re.match(pattern, rest):
            return re.sub(pattern, target, rest)
    raise KeyError(rest)


def _release_scdown(rest: str) -> str:
    return re.sub(r"^cv([12])\.", r"conv\1.", rest)


_RELEASE_RULES = _rules([
    (r"^encoder\.input_proj\.(\d+)\.conv\.(.+)$", lambda m: f"encoder.input_proj.{m[1]}.0.{m[2]}"),
    (r"^encoder\.input_proj\.(\d+)\.norm\.(.+)$", lambda m: f"encoder.input_proj.{m[1]}.1.{m[2]}"),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.(self_attn\.out_proj|norm1|norm2|linear1|linear2)\.(.+)$",
     lambda m: f"encoder.aifi.{m[1]}.{m[2]}.{m[3]}.{m[4]}"),
    (r"^encoder\.lateral_convs\.(.+)$", lambda m: f"encoder.lateral_convs.{m[1]}"),
    (r"^encoder\.(fpn_blocks|pan_blocks)\.(\d+)\.(.+)$", lambda m: f"encoder.{m[1]}.{m[2]}.{_release_elan(m[3])}"),
    (r"^encoder\.downsample_convs\.(\d+)\.0\.(.+)$",
     lambda m: f"encoder.downsample_convs.{m[1]}.{_release_scdown(m[2])}"),
    (r"^decoder\.enc_output\.proj\.(.+)$", lambda m: f"enc_output.0.{m[1]}"),
    (r"^decoder\.enc_output\.norm\.(.+)$", lambda m: f"enc_output.1.{m[1]}"),
    (r"^decoder\.(enc_score_head|enc_bbox_head|denoising_class_embed)\.(.+)$", lambda m: f"{m[1]}.{m[2]}"),
    (r"^decoder\.decoder\.layers\.(\d+)\.(self_attn\.out_proj|norm1|norm3|cross_attn|gateway|linear[12])\.(.+)$",
     lambda m: f"decoder.layers.{m[1]}.{m[2]}.{m[3]}"),
    (r"^decoder\.query_pos_head\.(.+)$", lambda m: f"decoder.query_pos_head.{m[1]}"),
    (r"^decoder\.(?:decoder\.)?(pre_bbox_head|lqe_layers)\.(.+)$", lambda m: f"{m[1]}.{m[2]}"),
    (r"^decoder\.dec_score_head\.(\d+)\.(.+)$", lambda m: f"class_embed.{m[1]}.{m[2]}"),
    (r"^decoder\.dec_bbox_head\.(\d+)\.(.+)$", lambda m: f"bbox_embed.{m[1]}.{m[2]}"),
])

# tensors of the source that are constants or derived buffers on our side: checked or recomputed, not loaded
_CONSTANTS = re.compile(r"(^|\.)(up|reg_scale)$")
_DERIVED = re.compile(r"(num_points_scale|\.anchors|\.valid_mask)$")


def _check_constants(state: Mapping[str, torch.Tensor], model: nn.Module | None) -> list[str]:
    """The source's ``up`` / ``reg_scale`` tensors against the model's values; returns their keys."""
    keys = [k for k in state if _CONSTANTS.search(k)]
    for key in keys:
        name = _CONSTANTS.search(key)[2]
        ours = getattr(model, name, None) if model is not None else None
        if ours is not None and abs(float(state[key].reshape(-1)[0]) - float(ours)) > 1e-6:
            raise ValueError(f"{key!r} = {float(state[key].reshape(-1)[0])} but the model is built with "
                             f"{name}={ours}")
    return keys


def convert_dfine(state: Mapping[str, torch.Tensor], source: str, reference: nn.Module | Mapping[str, torch.Tensor],
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a ``source``-layout D-FINE state dict (``"hf"`` or ``"release"``) to our layout.

    Args:
        state: tensor dict (:func:`~.resnet_vd.unwrap_state_dict` of a loaded file).
        reference: the target :class:`DFINE` (or its state dict; then ``up`` / ``reg_scale`` are not checked):
            every converted key must exist in it with the same shape, and every one of its keys must be filled.

    Returns:
        (converted, dropped): our names -> tensors, and the source keys deliberately not used (constants,
        derived buffers, merged duplicate heads, the denoising embedding of a target built without denoising).
    """
    if source not in DFINE_SOURCES:
        raise KeyError(f"unknown source {source!r}; choose from {DFINE_SOURCES}")
    model = reference if isinstance(reference, nn.Module) else None
    skip = _check_constants(state, model) + [k for k in state if _DERIVED.search(k)]
    rules = _HF_RULES if source == "hf" else _RELEASE_RULES
    converted, dropped = convert_two_stage(state, source, reference, rules, _RELEASE_IN_PROJ, "D-FINE", skip)
    return converted, skip + dropped
