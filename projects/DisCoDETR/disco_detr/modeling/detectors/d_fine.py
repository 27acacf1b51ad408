"""D-FINE (Peng et al., "D-FINE: Redefine Regression Task in DETRs as Fine-grained Distribution Refinement",
ICLR 2025) on RT-DETR (:mod:`.rt_detr`: hybrid encoder, IoU-aware query selection, contrastive denoising).

What D-FINE adds to RT-DETR (numbers: the release's defaults and transformers' ``DFineConfig``):

* Encoder: the hybrid encoder with D-FINE's fusion (``HybridEncoder(fusion="gelan")``: GELAN blocks, SCDown);
  no decoder input projection (the encoder width is the decoder width).
* Decoder layer (:class:`DFineDecoderLayer`): RT-DETR's, with the cross-attention residual replaced by a gate
  (``gateway``: ``LN(g1 * tgt + g2 * attn)``, ``(g1, g2) = sigmoid(Linear(2d, 2d)([tgt, attn]))``) and a
  deformable cross-attention without value / output projections and with ``points_per_level`` (P_l) points
  per level (:class:`DFineDeformableAttention`, offsets scaled by ``ref_wh / P_l * 0.5``). The query position
  MLP's output is clamped to [-10, 10].
* Fine-grained distribution refinement (FDR): layer 0's ``pre_bbox_head`` refines the selected box into the
  initial box ``b0 = sigmoid(pre_bbox_head(h_0) + logit(ref))``; every layer l predicts, per edge, logits over
  ``max_num_bins + 1`` bins, ``corners_l = bbox_embed[l](h_l + h_{l-1}.detach()) + corners_{l-1}``; the edge
  distance is the expectation of :func:`weighting_function` (W, ``up`` 0.5, ``reg_scale`` 4) under
  softmax(corners_l), and :func:`distance_to_box` turns the four distances into the layer's box around
  ``b0`` (detached). Layer l + 1's reference is layer l's box, detached.
* Localisation quality estimation (:class:`LQE`): each layer's class logits plus MLP(top-4 probabilities and
  their mean, per edge) (a shift of every class logit).
* Losses (:class:`~..criterion.d_fine.DFineCriterion`): VFL 1, L1 5, GIoU 2, FGL 0.15, DDF 1.5.

Outputs (:class:`DFineDecoderOutput`): a :class:`~.base.DecoderOutput` whose ``logits`` are the LQE-rescaled
logits (L, B, N, C) and ``boxes`` the FDR boxes (L, B, N, 4), plus ``corners`` (L, B, N, 4 * (bins + 1)), the
initial boxes ``initial`` (B, N, 4) (detached ``b0``), and layer 0's un-rescaled logits and ``b0`` as the
``pre`` prediction (supervised as ``*_pre``).

Coordinates: boxes, references and distances are normalised (cx, cy, w, h) of each image's un-padded size
(edge distances in units of ``box_wh / reg_scale``); deformable attention gets the references multiplied by
each level's valid ratios, as RT-DETR's. Without padding the model computes what transformers' D-FINE computes.

Pre-training: as RT-DETR (fusion into the selected content queries; transfer drops the class heads, the
encoder's score head and the denoising label embedding; the distribution heads, ``pre_bbox_head`` and LQE
transfer). What the distillation does there: docs/pretraining.md.

Deviations from the release (docs/detectors.md, "D-FINE"): padding is masked, as in RT-DETR; matching is
per layer (no union set across layers for the box and distribution losses); ``eval_idx`` is the last layer;
the query position is clamped to [-10, 10] and the FFN output to the float16 range, as transformers' port does.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from ..criterion.d_fine import distribution_losses
from ..criterion.losses import box_losses
from ..criterion.set_criterion import flatten_indices, num_boxes_across_workers
from ..layers import MLP, LayerCheckpointing, inverse_sigmoid
from ..layers.denoising import DenoisingGroups
from ..layers.distribution import distance_to_box, weighting_function
from ..layers.ms_deform_attn import ms_deform_attn
from ..layers.recording import emit, is_recording
from .base import DecoderOutput, DenoisingOutput, EncoderOutput, layer_suffixes
from .rt_detr import RTDETR, RTDETRDecoderLayer
from .two_stage import init_prediction_heads

__all__ = ["DFINE", "PRETRAINING_WEIGHTS", "DFineDecoder", "DFineDecoderLayer", "DFineDecoderOutput",
           "DFineDeformableAttention", "DFineDenoisingOutput", "LQE"]

#: the weights of :meth:`DFINE.pretraining_losses`: fine-tuning's FGL, DDF and initial-box L1 / GIoU
PRETRAINING_WEIGHTS = {"loss_fgl": 0.15, "loss_ddf": 1.5, "loss_bbox": 5.0, "loss_giou": 2.0}


# ---- decoder ----------------------------------------------------------------------------------------------
class DFineDeformableAttention(nn.Module):
    """D-FINE's multi-scale deformable attention: no value or output projection, ``points_per_level`` P_l points
    on level l (sum P = T per head).

    ``sampling_offsets``: Linear(d, H * T * 2), rows (head, point, xy), points level-major;
    ``attention_weights``: Linear(d, H * T), softmax over the T points of a head.
    forward(query (B, Nq, d), reference (B, Nq, L, 4) normalised cxcywh, value (B, S, d), spatial_shapes (L, 2),
    level_start_index (L,), padding_mask (B, S) bool or None) -> (B, Nq, d). Point p of level l samples at
    ``ref_xy + offset * ref_wh * offset_scale / P_l``. The samples go through the project's
    :func:`~..layers.ms_deform_attn.ms_deform_attn` with every level padded to max P_l points of weight 0.
    Inside :func:`~..layers.recording.record_attention` it emits site ``"deformable"`` as
    :class:`~..layers.MultiScaleDeformableAttention` does (padded points with weight 0).
    """

    def __init__(self, d_model: int = 256, num_heads: int = 8, points_per_level: tuple[int, ...] = (4, 4, 4),
                 offset_scale: float = 0.5):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model, self.num_heads, self.offset_scale = d_model, num_heads, offset_scale
        self.points_per_level = tuple(int(p) for p in points_per_level)
        self.num_levels = len(self.points_per_level)
        total = sum(self.points_per_level)
        self.sampling_offsets = nn.Linear(d_model, num_heads * total * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * total)
        scale = [1.0 / p for p in self.points_per_level for _ in range(p)]
        self.register_buffer("point_scale", torch.tensor(scale), persistent=False)
        level = [lvl for lvl, p in enumerate(self.points_per_level) for _ in range(p)]
        self.register_buffer("point_level", torch.tensor(level), persistent=False)     # (T,) each point's level
        # (L, P_max) index into the T points of a head (padded slots repeat point 0) and their validity
        p_max = max(self.points_per_level)
        starts = [sum(self.points_per_level[:lvl]) for lvl in range(self.num_levels)]
        index = [[s + min(p, n - 1) for p in range(p_max)] for s, n in zip(starts, self.points_per_level)]
        valid = [[p < n for p in range(p_max)] for n in self.points_per_level]
        self.register_buffer("point_index", torch.tensor(index).flatten(), persistent=False)
        self.register_buffer("point_valid", torch.tensor(valid), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The release's init: head h's points on a ray at angle 2*pi*h/H (max-norm), point p of a level at
        distance p + 1; uniform attention weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values                    # (H, 2)
        distance = torch.cat([torch.arange(1, p + 1, dtype=torch.float64) for p in self.points_per_level])
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((directions[:, None] * distance[None, :, None]).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        b, nq, _ = query.shape
        heads, levels, total = self.num_heads, self.num_levels, sum(self.points_per_level)
        if reference.shape != (b, nq, levels, 4):
            raise ValueError(f"reference must be (B, Nq, L={levels}, 4), got {tuple(reference.shape)}")
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, value.shape[1], heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(b, nq, heads, total, 2)
        weights = self.attention_weights(query).view(b, nq, heads, total).softmax(-1)
        ref = reference[:, :, None, self.point_level]                                       # (B, Nq, 1, T, 4)
        scale = self.point_scale.to(offsets.dtype)[:, None] * self.offset_scale
        locations = ref[..., :2] + offsets * scale * ref[..., 2:]                           # (B, Nq, H, T, 2)
        p_max = self.point_valid.shape[1]
        locations = locations[:, :, :, self.point_index].view(b, nq, heads, levels, p_max, 2)
        weights = weights[:, :, :, self.point_index].view(b, nq, heads, levels, p_max)
        weights = weights * self.point_valid.to(weights.dtype)
        shapes = torch.as_tensor(spatial_shapes, device=query.device)
        if is_recording():   # analysis plots: site "deformable" (padded points carry weight 0)
            emit("deformable", self, locations=locations, weights=weights, spatial_shapes=shapes)
        return ms_deform_attn(value, shapes, level_start_index, locations, weights)


class Gate(nn.Module):
    """``LN(g1 * x + g2 * y)`` with ``(g1, g2) = sigmoid(Linear(2d, 2d)([x, y]))``; x, y (..., d)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.gate = nn.Linear(2 * d_model, 2 * d_model)
        self.norm = nn.LayerNorm(d_model)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)   # both gates 0.5 at init, as the release

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        g1, g2 = torch.sigmoid(self.gate(torch.cat([x, y], -1))).chunk(2, -1)
        return self.norm(g1 * x + g2 * y)


class DFineDecoderLayer(RTDETRDecoderLayer):
    """RT-DETR's post-norm layer with D-FINE's cross-attention (:class:`DFineDeformableAttention`) and its
    gated residual (``gateway`` in place of ``norm2``); the FFN output is clamped to the float16 range before
    the last LayerNorm. tgt (B, N, d) -> (B, N, d)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float,
                 points_per_level: tuple[int, ...], offset_scale: float = 0.5):
        super().__init__(d_model, num_heads, dim_feedforward, dropout, len(points_per_level), 1)
        self.cross_attn = DFineDeformableAttention(d_model, num_heads, points_per_level, offset_scale)
        del self.norm2
        self.gateway = Gate(d_model)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference: Tensor, memory: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, memory_mask: Tensor | None, attn_mask: Tensor | None = None) -> Tensor:
        tgt = self.norm1(tgt + self.dropout1(self._self_attention(tgt + query_pos, tgt, attn_mask)))
        out = self.cross_attn(tgt + query_pos, reference, memory, spatial_shapes, level_start_index, memory_mask)
        tgt = self.gateway(tgt, self.dropout2(out))
        ffn = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3((tgt + self.dropout3(ffn)).clamp(min=-65504, max=65504))


class DFineDecoder(LayerCheckpointing, nn.Module):
    """The stack of :class:`DFineDecoderLayer` and the query position head MLP(4 -> 2d -> d).

    Args: num_layers, d_model, num_heads, dim_feedforward, dropout; ``points_per_level`` (the release's
    ``num_points``, one entry per level); ``offset_scale`` (0.5). The heads live on the detector.
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.0, points_per_level: tuple[int, ...] | list[int] = (4, 4, 4),
                 offset_scale: float = 0.5):
        super().__init__()
        self.d_model = d_model
        self.num_layers = num_layers
        self.num_levels = len(points_per_level)
        self.layers = nn.ModuleList(
            DFineDecoderLayer(d_model, num_heads, dim_feedforward, dropout, tuple(points_per_level), offset_scale)
            for _ in range(num_layers))
        self.query_pos_head = MLP(4, 2 * d_model, d_model, 2)


class LQE(nn.Module):
    """Localisation quality estimation: logits (B, N, C) + MLP(stats) (B, N, 1), stats = per edge the top-k
    bin probabilities of softmax(corners) and their mean (4 * (k + 1) values); corners (B, N, 4 * (bins + 1))."""

    def __init__(self, top_k: int = 4, hidden_dim: int = 64, num_layers: int = 2, max_num_bins: int = 32):
        super().__init__()
        self.top_k, self.max_num_bins = top_k, max_num_bins
        self.reg_conf = MLP(4 * (top_k + 1), hidden_dim, 1, num_layers)
        nn.init.zeros_(self.reg_conf.layers[-1].weight)
        nn.init.zeros_(self.reg_conf.layers[-1].bias)

    def forward(self, logits: Tensor, corners: Tensor) -> Tensor:
        b, n, _ = corners.shape
        prob = corners.view(b, n, 4, self.max_num_bins + 1).softmax(-1)
        top = prob.topk(self.top_k, dim=-1).values
        stats = torch.cat([top, top.mean(-1, keepdim=True)], -1).reshape(b, n, -1)
        return logits + self.reg_conf(stats)


# ---- outputs ----------------------------------------------------------------------------------------------
@dataclass
class DFineDenoisingOutput(DenoisingOutput):
    """:class:`~.base.DenoisingOutput` plus D-FINE's: ``corners`` (L, B, Q_dn, 4 * (bins + 1)), ``initial``
    (B, Q_dn, 4) the detached initial boxes, ``pre_logits`` (B, Q_dn, C) and ``pre_boxes`` (B, Q_dn, 4)."""

    corners: Tensor | None = None
    initial: Tensor | None = None
    pre_logits: Tensor | None = None
    pre_boxes: Tensor | None = None


@dataclass
class DFineDecoderOutput(DecoderOutput):
    """:class:`~.base.DecoderOutput` (logits LQE-rescaled, boxes from FDR) plus ``corners`` (L, B, N,
    4 * (bins + 1)) the edge-distribution logits, ``initial`` (B, N, 4) the detached initial boxes ``b0`` every
    layer's distances are measured from, ``pre_logits`` (B, N, C) layer 0's logits before LQE and
    ``pre_boxes`` (B, N, 4) ``b0`` with its gradient (the ``*_pre`` prediction)."""

    corners: Tensor | None = None
    initial: Tensor | None = None
    pre_logits: Tensor | None = None
    pre_boxes: Tensor | None = None

    def split_denoising(self, groups: DenoisingGroups) -> tuple[DFineDecoderOutput, DFineDenoisingOutput]:
        decoded, denoising = super().split_denoising(groups)
        dn_corners, corners = groups.split(self.corners, dim=2)
        dn_initial, initial = groups.split(self.initial, dim=1)
        dn_pre_logits, pre_logits = groups.split(self.pre_logits, dim=1)
        dn_pre_boxes, pre_boxes = groups.split(self.pre_boxes, dim=1)
        decoded = DFineDecoderOutput(**{f.name: getattr(decoded, f.name) for f in dataclasses.fields(DecoderOutput)},
                                     corners=corners, initial=initial, pre_logits=pre_logits, pre_boxes=pre_boxes)
        denoising = DFineDenoisingOutput(denoising.logits, denoising.boxes, denoising.groups, dn_corners, dn_initial,
                                         dn_pre_logits, dn_pre_boxes)
        return decoded, denoising


# ---- the detector -----------------------------------------------------------------------------------------
@META_ARCH_REGISTRY.register()
class DFINE(RTDETR):
    """D-FINE on a detectron2 backbone (see the module docstring).

    Args (besides :class:`~.rt_detr.RTDETR`'s, whose ``decoder`` is a :class:`DFineDecoder` here and whose
    ``encoder`` is built with ``fusion="gelan"``):
        max_num_bins (32), reg_scale (4.0), up (0.5): the distribution's bins and :func:`weighting_function`.
        lqe_top_k (4), lqe_hidden_dim (64), lqe_layers (2): :class:`LQE`.
        pretraining_weights, ddf_temperature: the weights of :meth:`pretraining_losses` (default
            :data:`PRETRAINING_WEIGHTS`, fine-tuning's) and DDF's temperature (5).
        criterion: :class:`~..criterion.d_fine.DFineCriterion` (None in pre-training).
    """

    def __init__(self, *, max_num_bins: int = 32, reg_scale: float = 4.0, up: float = 0.5, lqe_top_k: int = 4,
                 lqe_hidden_dim: int = 64, lqe_layers: int = 2,
                 pretraining_weights: dict[str, float] | None = None, ddf_temperature: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.pretraining_weights = dict(pretraining_weights or PRETRAINING_WEIGHTS)
        self.ddf_temperature = ddf_temperature
        d, num_layers = self.d_model, self.decoder.num_layers
        self.max_num_bins, self.reg_scale, self.up = max_num_bins, float(reg_scale), float(up)
        self.decoder_input_proj = nn.ModuleList(nn.Identity() for _ in self.in_features)
        self.bbox_embed = nn.ModuleList(MLP(d, d, 4 * (max_num_bins + 1), 3) for _ in range(num_layers))
        self.pre_bbox_head = MLP(d, d, 4, 3)
        self.lqe_layers = nn.ModuleList(LQE(lqe_top_k, lqe_hidden_dim, lqe_layers, max_num_bins)
                                        for _ in range(num_layers))
        self.register_buffer("bin_values", weighting_function(max_num_bins, up, reg_scale), persistent=False)
        init_prediction_heads([], [*self.bbox_embed, self.pre_bbox_head])
        for layer in self.decoder.layers:
            layer.cross_attn.reset_parameters()

    def _decode(self, encoded: EncoderOutput, content: Tensor, reference: Tensor,
                self_attn_mask: Tensor | None) -> DFineDecoderOutput:
        ratios = encoded.valid_ratios.to(reference.dtype).repeat(1, 1, 2)[:, None]   # (B, 1, L, 4)
        bins = self.bin_values.to(reference.dtype)
        ref, tgt = reference, content
        prev_hidden, prev_corners = 0, 0
        hidden, logits, boxes, refs, corners_all = [], [], [], [], []
        for i, (layer, class_head, box_head, lqe) in enumerate(zip(self.decoder.layers, self.class_embed,
                                                                   self.bbox_embed, self.lqe_layers)):
            pos = self.decoder.query_pos_head(ref).clamp(min=-10, max=10)
            tgt = self.decoder.run_layer(layer, tgt, pos, ref[:, :, None] * ratios, encoded.memory,
                                         encoded.spatial_shapes, encoded.level_start_index, encoded.mask,
                                         self_attn_mask)
            if i == 0:
                pre_boxes = (self.pre_bbox_head(tgt) + inverse_sigmoid(ref)).sigmoid()
                pre_logits = class_head(tgt)
                initial = pre_boxes.detach()
            corners = box_head(tgt + prev_hidden) + prev_corners
            distance = corners.view(*corners.shape[:2], 4, -1).softmax(-1) @ bins
            box = distance_to_box(initial, distance, self.reg_scale)
            layer_logits = pre_logits if i == 0 else class_head(tgt)
            hidden.append(tgt)
            logits.append(lqe(layer_logits, corners))
            boxes.append(box)
            refs.append(ref)
            corners_all.append(corners)
            prev_hidden, prev_corners = tgt.detach(), corners
            ref = box.detach()
        return DFineDecoderOutput(torch.stack(hidden), torch.stack(logits), torch.stack(boxes), torch.stack(refs),
                                  corners=torch.stack(corners_all), initial=initial, pre_logits=pre_logits,
                                  pre_boxes=pre_boxes)

    def pretraining_losses(self, decoded: DFineDecoderOutput, targets: list[dict],
                           matches: dict[str, list[tuple[Tensor, Tensor]]]) -> dict[str, Tensor]:
        """In pre-training (docs/pretraining.md, "D-FINE"): FGL and DDF of every decoder layer the method matched,
        on the method's boxes (``targets``) and matching (``matches``, by loss suffix), and L1 + GIoU of the
        initial boxes (``*_pre``) under layer 0's matching (their only supervision: every layer's box is built
        on them detached). Weighted by ``pretraining_weights``."""
        num_boxes = num_boxes_across_workers(targets, decoded.boxes.device)
        w = self.pretraining_weights
        losses = {}
        num_layers = decoded.logits.shape[0]
        for layer, suffix in layer_suffixes(num_layers):
            if suffix not in matches:
                continue
            values = distribution_losses(decoded.corners[layer], decoded.initial, decoded.boxes[layer], targets,
                                         num_boxes, matches[suffix], decoded.corners[-1], decoded.logits[-1],
                                         self.bin_values, self.reg_scale, self.ddf_temperature)
            losses.update({f"{name}{suffix}": value * w[name] for name, value in values.items()})
        first = layer_suffixes(num_layers)[0][1]
        if first in matches:
            batch_ids, query_ids, _ = flatten_indices(matches[first], decoded.boxes.device)
            tgt = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, matches[first])])
            l1, giou = box_losses(decoded.pre_boxes[batch_ids, query_ids].float(), tgt.float(), num_boxes)
            losses.update({"loss_bbox_pre": w["loss_bbox"] * l1, "loss_giou_pre": w["loss_giou"] * giou})
        return losses

    def empty_denoising_losses(self) -> dict[str, Tensor]:
        """RT-DETR's zero ``*_dn`` losses plus the ``*_dn_pre`` keys of the initial boxes."""
        losses = super().empty_denoising_losses()
        zero = 0.0 * self.label_embedding.weight.sum()
        losses.update({f"{name}_dn_pre": zero for name in self.criterion.pre_weights})
        return losses

