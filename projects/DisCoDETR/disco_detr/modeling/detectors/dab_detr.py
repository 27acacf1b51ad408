"""DAB-DETR (Liu et al., ICLR 2022: dynamic anchor boxes) as a member of the DETR family.

What makes the variant, on top of Conditional DETR's dense encoder and conditional cross-attention:

* the queries are learned 4-d anchor boxes ``anchor_embed`` (N, 4) in logit space (detrex's
  ``anchor_box_embed``; sigmoid gives normalised (cx, cy, w, h)), and the content queries start at zero;
* every decoder layer recomputes its positional query from its current anchor: the sine embedding of
  (cx, cy, w, h) -> ``ref_point_head`` MLP(2d, d, d); the spatial query of the cross-attention is the
  (cy, cx) part of that embedding, scaled by ``query_scale(content)`` (layers > 0) and modulated by the
  predicted reference size over the anchor size (width on the x part, height on the y part);
* after every layer the shared box head refines the anchor, ``anchor_{i+1} = sigmoid(bbox_embed(h_i) +
  logit(anchor_i))`` (``h_i`` before the final LayerNorm), detached before it feeds the next layer's
  positional query, as DAB-DETR and detrex do; layer i predicts ``sigmoid(bbox_embed(norm(h_i)) +
  logit(anchor_i))`` with the undetached anchor;
* the encoder scales the feature-map position embedding by ``query_scale(src)`` in every layer, the
  FFNs use a learned PReLU, and the feature-map sine embedding uses temperature 20 (offset 0).

Pre-training contract (:mod:`.base`): ``initial_queries`` returns zero content, no positional query and
``reference`` = the anchors' sigmoid (B, N, 4); DMOQF matches proposals to the anchor centres, and the
fused object feature enters the *content* query (``fusion_target = "content"``), since the positional
query is recomputed from the anchor in every layer. ``decode`` starts from ``QueryInit.content`` and
``QueryInit.reference`` (the anchors), whatever it is given.
"""
from __future__ import annotations

import math

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import Tensor, nn

from ..layers import (
    FFN,
    MLP,
    DETREncoderLayer,
    LayerCheckpointing,
    inverse_sigmoid,
    sine_embed_points,
)
from .base import DecoderOutput, EncoderOutput, QueryInit
from .conditional_detr import ConditionalDecoderLayer, SingleLevelDETR

__all__ = ["DABDETR", "DABDecoder", "DABEncoder", "PReLUFFN", "sine_embed_boxes"]

#: clamp of the logit of anchors in [0, 1] (DAB-DETR's and detrex's ``inverse_sigmoid`` use 1e-3)
ANCHOR_EPS = 1e-3


def sine_embed_boxes(boxes: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """Sine embedding of normalised boxes (DAB-DETR's positional query input).

    boxes: (..., 4) normalised (cx, cy, w, h) -> (..., 2 * d_model), ordered (cy, cx, w, h) features,
    d_model / 2 interleaved sin/cos features per coordinate (each coordinate x 2 pi, temperature T), so
    the first d_model channels equal :func:`sine_embed_points` of the centre.
    """
    centre = sine_embed_points(boxes[..., :2], d_model, temperature)  # (cy, cx)
    size = sine_embed_points(boxes[..., [3, 2]], d_model, temperature)  # (w, h): the function puts [..., 1] first
    return torch.cat([centre, size], -1)


class PReLUFFN(FFN):
    """:class:`~disco_detr.modeling.layers.FFN` with a learned PReLU (one weight, init 0.25) in place of ReLU:
    LayerNorm(x + Linear(Dropout(PReLU(Linear(x))))), (..., d) -> (..., d)."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__(d_model, dim_feedforward, dropout)
        self.activation = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x))))))


class DABEncoderLayer(DETREncoderLayer):
    """The post-norm DETR encoder layer with a PReLU FFN."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__(d_model, num_heads, dim_feedforward, dropout)
        self.ffn = PReLUFFN(d_model, dim_feedforward, dropout)


class DABEncoder(LayerCheckpointing, nn.Module):
    """DAB-DETR's encoder: every layer adds ``pos * query_scale(src)`` to its queries and keys.

    forward(src (B, HW, d), pos (B, HW, d), key_padding_mask (B, HW) True on padding) -> memory (B, HW, d).
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            DABEncoderLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.query_scale = MLP(d_model, d_model, d_model, 2)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            src = self.run_layer(layer, src, pos * self.query_scale(src), key_padding_mask)
        return src


class DABDecoderLayer(ConditionalDecoderLayer):
    """Conditional DETR's decoder layer (self-attention, per-head concatenated content/position
    cross-attention; only the first layer has ``ca_qpos``) with a PReLU FFN."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float, is_first: bool):
        super().__init__(d_model, num_heads, dim_feedforward, dropout, is_first)
        self.ffn = PReLUFFN(d_model, dim_feedforward, dropout)


class DABDecoder(LayerCheckpointing, nn.Module):
    """DAB-DETR decoder with per-layer anchor refinement.

    forward(memory (B, HW, d), pos (B, HW, d), memory_mask (B, HW) True on padding, anchors (B, N, 4)
    normalised (cx, cy, w, h) in (0, 1), tgt (B, N, d) content queries, bbox_embed the detector's box head
    (d -> 4 logit-space offsets)) -> hs (L, B, N, d) every layer's output after the final LayerNorm,
    references (L, B, N, 4) the anchor each layer started from (layer 0: ``anchors``; layer i + 1: the
    refinement after layer i, not detached, so that box losses reach the earlier layers as in DAB-DETR).
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.0, modulate_hw_attn: bool = True):
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            DABDecoderLayer(d_model, num_heads, dim_feedforward, dropout, is_first=i == 0) for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        # the reference size (w, h) the attention is modulated by; without it the spatial query is unmodulated
        self.ref_anchor_head = MLP(d_model, d_model, 2, 2) if modulate_hw_attn else None

    def forward(self, memory: Tensor, pos: Tensor, memory_mask: Tensor | None, anchors: Tensor, tgt: Tensor,
                bbox_embed: nn.Module) -> tuple[Tensor, Tensor]:
        d = self.d_model
        anchor = anchors
        outputs, references = [], []
        for i, layer in enumerate(self.layers):
            references.append(anchor)
            current = anchor if i == 0 else anchor.detach()
            sine = sine_embed_boxes(current, d)
            query_pos = self.ref_point_head(sine)
            spatial = sine[..., :d]  # (cy, cx) features of the centre
            if i > 0:
                spatial = spatial * self.query_scale(tgt)
            if self.ref_anchor_head is not None:
                ref_wh = self.ref_anchor_head(tgt).sigmoid()
                spatial = torch.cat([
                    spatial[..., :d // 2] * (ref_wh[..., 1] / current[..., 3])[..., None],  # y part by height
                    spatial[..., d // 2:] * (ref_wh[..., 0] / current[..., 2])[..., None],  # x part by width
                ], -1)
            tgt = self.run_layer(layer, tgt, memory, pos, memory_mask, query_pos, spatial)
            outputs.append(self.norm(tgt))
            if i < len(self.layers) - 1:
                anchor = (bbox_embed(tgt) + inverse_sigmoid(current, ANCHOR_EPS)).sigmoid()
        return torch.stack(outputs), torch.stack(references)


@META_ARCH_REGISTRY.register()
class DABDETR(SingleLevelDETR):
    """DAB-DETR on a detectron2 backbone (one feature level), single pattern, shared heads.

    Args (besides :class:`~.base.DETRDetector`'s):
        in_feature: the backbone output the transformer reads (res5 in the paper).
        encoder, decoder: :class:`DABEncoder` and :class:`DABDecoder` of one width d.
        position_offset, position_temperature: of the feature-map sine embedding (d/2 features per
            axis); DAB-DETR and detrex use offset 0 and temperature 20.
        random_anchor_centres: initialise the anchor centres uniformly in [0, 1] (detrex's
            ``freeze_anchor_box_centers`` / DAB-DETR's ``random_refpoints_xy``; the centres are learned
            either way, as in both releases), else all four coordinates N(0, 1) in logit space.
    """

    fusion_target = "content"

    def __init__(self, *, backbone: Backbone, in_feature: str, encoder: DABEncoder, decoder: DABDecoder,
                 num_classes: int, num_queries: int, criterion: nn.Module | None,
                 pixel_mean: list[float], pixel_std: list[float], position_offset: float = 0.0,
                 position_temperature: float = 20.0, random_anchor_centres: bool = True,
                 num_detections: int = 100, size_divisibility: int = 0):
        super().__init__(backbone=backbone, in_feature=in_feature, encoder=encoder, decoder=decoder,
                         num_classes=num_classes, num_queries=num_queries, criterion=criterion,
                         pixel_mean=pixel_mean, pixel_std=pixel_std, position_offset=position_offset,
                         position_temperature=position_temperature, num_detections=num_detections,
                         size_divisibility=size_divisibility)
        d_model = self.d_model
        self.anchor_embed = nn.Embedding(num_queries, 4)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self._reset_parameters(random_anchor_centres)

    def _reset_parameters(self, random_anchor_centres: bool):
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        if random_anchor_centres:
            with torch.no_grad():
                centres = torch.rand_like(self.anchor_embed.weight[:, :2])
                self.anchor_embed.weight[:, :2] = inverse_sigmoid(centres, ANCHOR_EPS)
        prior_prob = 0.01
        nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def anchors(self) -> Tensor:
        """The learned anchors (N, 4), normalised (cx, cy, w, h) in (0, 1)."""
        return self.anchor_embed.weight.sigmoid()

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        """Zero content (B, N, d), no positional query (recomputed from the anchor in every layer) and the
        anchors (B, N, 4) normalised (cx, cy, w, h) as references; the same for every image."""
        b = encoded.memory.shape[0]
        anchors = self.anchors()[None].expand(b, -1, -1)
        content = encoded.memory.new_zeros(b, self.num_queries, self.d_model)
        return QueryInit(content, None, anchors)

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode from ``queries.content`` (B, N, d) and the anchors ``queries.reference`` (B, N, 4)
        (``queries.position`` is not read). Layer i's boxes are ``sigmoid(bbox_embed(hs_i) + logit(ref_i))``."""
        if queries.reference.shape[-1] != 4:
            raise ValueError(f"DAB-DETR decodes from 4-d anchor boxes, got references of shape "
                             f"{tuple(queries.reference.shape)}")
        hs, references = self.decoder(encoded.memory, encoded.pos, encoded.mask, queries.reference, queries.content,
                                      self.bbox_embed)
        boxes = (self.bbox_embed(hs) + inverse_sigmoid(references, ANCHOR_EPS)).sigmoid()
        return DecoderOutput(hs, self.class_embed(hs), boxes, references)

