"""Deformable DETR (Zhu et al., ICLR 2021), plain (no box refinement, not two-stage), as a family member.

Single- and multi-scale come from the same class by configuration:

* multi-scale (the paper's default): backbone levels res3-res5 (strides 8/16/32), each through a conv1x1 +
  GroupNorm(32) input projection, plus ``num_extra_levels`` = 1 stride-64 level made by a conv3x3/s2 +
  GroupNorm on the backbone's *last* level (before its projection), as the release and detrex's
  ``ChannelMapper`` do: 4 levels;
* single-scale: ``in_features=("res5",)`` and ``num_extra_levels=0``: one level.

Encoder: deformable self-attention over all levels (queries = tokens + position + level embedding, values
= tokens). Decoder: dense self-attention among the queries, deformable cross-attention into the memory.
Queries: ``query_embed`` (N, 2d) is split into (positional query, content query); reference points are
``sigmoid(reference_points(query_pos))`` (normalised (x, y) of the un-padded image), recomputed in
:meth:`DeformableDETR.decode` from ``QueryInit.position`` (the pre-training contract, :mod:`.base`).
Boxes: ``sigmoid(bbox_embed(h) + [inverse_sigmoid(ref), 0, 0])`` (normalised cxcywh), one class head and
one box head shared by every decoder layer, as in the plain model of the paper.

Coordinates inside the deformable attention are normalised by the *padded* map of each level: a
reference (x, y) of the un-padded image is multiplied by the level's valid ratios (w, h) first.

Padding: the encoder and decoder mask it (padded values are zeroed before sampling, positions are
normalised by the un-padded extent; detrex instead treats padding as image content in eval). The input
projections' GroupNorm statistics span the whole padded map, as in the release, so an image's outputs
still depend slightly on how much padding its batch adds.
"""
from __future__ import annotations

import math

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..layers import (
    FFN,
    MLP,
    LayerCheckpointing,
    MultiheadAttention,
    MultiScaleDeformableAttention,
    PositionEmbeddingSine,
    inverse_sigmoid,
)
from ..layers.ms_deform_attn_checks import level_sizes
from .base import DecoderOutput, DETRDetector, EncoderOutput, QueryInit

__all__ = [
    "DeformableDETR",
    "DeformableDecoder",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "encoder_reference_points",
]


def encoder_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor) -> Tensor:
    """Reference points of the encoder tokens, per level they sample.

    spatial_shapes (L, 2) (h, w); valid_ratios (B, L, 2) (w, h) un-padded fractions ->
    (B, S, L, 2) normalised (x, y): the pixel centre of each token, normalised by the un-padded extent of
    its own level, then scaled to the padded map of every level it samples (as the release does).
    """
    points = []
    for lvl, (h, w) in enumerate(level_sizes(spatial_shapes)):
        ys, xs = torch.meshgrid(   # pixel centres 0.5, 1.5, ... (h, w may be traced 0-dim tensors)
            torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            indexing="ij",
        )
        ys = ys.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        xs = xs.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((xs, ys), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention (+dropout, residual, LayerNorm), then the FFN."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float,
                 num_levels: int, num_points: int):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(d_model, num_heads, num_levels, num_points)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Tensor | None) -> Tensor:
        out = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        return self.ffn(self.norm1(src + self.dropout(out)))


class DeformableEncoder(LayerCheckpointing, nn.Module):
    """Stack of :class:`DeformableEncoderLayer`.

    forward(src (B, S, d) flattened levels, pos (B, S, d) with level embeddings, spatial_shapes (L, 2),
    level_start_index (L,), valid_ratios (B, L, 2), padding_mask (B, S) True on padding) -> (B, S, d).
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.1, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.num_levels = num_levels
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, num_heads, dim_feedforward, dropout, num_levels, num_points)
            for _ in range(num_layers)
        )

    def forward(self, src: Tensor, pos: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                valid_ratios: Tensor, padding_mask: Tensor | None) -> Tensor:
        reference = encoder_reference_points(spatial_shapes, valid_ratios).to(src.dtype)
        for layer in self.layers:
            src = self.run_layer(layer, src, pos, reference, spatial_shapes, level_start_index, padding_mask)
        return src


class DeformableDecoderLayer(nn.Module):
    """Post-norm layer: dense self-attention among the queries (position added to queries and keys), then
    deformable cross-attention into the memory (position added to the query), then the FFN."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float,
                 num_levels: int, num_points: int):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MultiScaleDeformableAttention(d_model, num_heads, num_levels, num_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, memory_mask: Tensor | None,
                self_attn_mask: Tensor | None = None) -> Tensor:
        """``self_attn_mask``: (N, N) bool, True where query i must not see query j (DINO's denoising groups)."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, attn_mask=self_attn_mask)))
        out = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                              memory_mask)
        tgt = self.norm2(tgt + self.dropout2(out))
        return self.ffn(tgt)


class DeformableDecoder(LayerCheckpointing, nn.Module):
    """Stack of :class:`DeformableDecoderLayer` (no final norm, no box refinement).

    forward(tgt (B, N, d) content queries, query_pos (B, N, d), reference (B, N, 2) normalised (x, y) of
    the un-padded image, encoded :class:`EncoderOutput`) -> (L, B, N, d) every layer's output.
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.1, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.num_levels = num_levels
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(d_model, num_heads, dim_feedforward, dropout, num_levels, num_points)
            for _ in range(num_layers)
        )

    def forward(self, tgt: Tensor, query_pos: Tensor, reference: Tensor, encoded: EncoderOutput) -> Tensor:
        reference_input = reference[:, :, None] * encoded.valid_ratios[:, None].to(reference.dtype)
        outputs = []
        for layer in self.layers:
            tgt = self.run_layer(layer, tgt, query_pos, reference_input, encoded.memory, encoded.spatial_shapes,
                                 encoded.level_start_index, encoded.mask)
            outputs.append(tgt)
        return torch.stack(outputs)


class MultiScaleDeformableDETR(DETRDetector):
    """What the deformable-encoder variants (Deformable DETR, DINO) share: detrex's ChannelMapper input
    projections (conv1x1 + GroupNorm per backbone level, conv3x3/s2 + GroupNorm for each extra level, the
    first on the last backbone level), sine + level position embeddings and the deformable encoder.
    Subclasses build their queries, decoder and heads.

    Args (besides :class:`~.base.DETRDetector`'s): in_features, num_extra_levels, encoder, decoder (its
    ``num_levels`` must equal ``len(in_features) + num_extra_levels``), position_offset,
    position_temperature, norm_groups (see :class:`DeformableDETR`).
    """

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], num_extra_levels: int,
                 encoder: DeformableEncoder, decoder: nn.Module, num_classes: int, num_queries: int,
                 criterion: nn.Module | None, pixel_mean: list[float], pixel_std: list[float],
                 position_offset: float = -0.5, position_temperature: float = 10000.0, norm_groups: int = 32,
                 num_detections: int = 100, size_divisibility: int = 0):
        d_model = decoder.d_model
        super().__init__(backbone=backbone, num_classes=num_classes, num_queries=num_queries, d_model=d_model,
                         criterion=criterion, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         num_detections=num_detections, size_divisibility=size_divisibility)
        self.in_features = list(in_features)
        num_levels = len(self.in_features) + num_extra_levels
        if encoder.d_model != d_model:
            raise ValueError(f"encoder width {encoder.d_model} != decoder width {d_model}")
        if encoder.num_levels != num_levels or decoder.num_levels != num_levels:
            raise ValueError(f"{len(self.in_features)} backbone levels {self.in_features} + {num_extra_levels} extra "
                             f"= {num_levels} levels, but the encoder is built for {encoder.num_levels} and the "
                             f"decoder for {decoder.num_levels}")
        shapes = backbone.output_shape()
        missing = [f for f in self.in_features if f not in shapes]
        if missing:
            raise ValueError(f"backbone has no output {missing}; it gives {sorted(shapes)}")
        self.num_levels = num_levels
        proj = [nn.Sequential(nn.Conv2d(shapes[f].channels, d_model, kernel_size=1), nn.GroupNorm(norm_groups, d_model))
                for f in self.in_features]
        in_channels = shapes[self.in_features[-1]].channels
        for _ in range(num_extra_levels):
            proj.append(nn.Sequential(nn.Conv2d(in_channels, d_model, kernel_size=3, stride=2, padding=1),
                                      nn.GroupNorm(norm_groups, d_model)))
            in_channels = d_model
        self.input_proj = nn.ModuleList(proj)
        self.position_embedding = PositionEmbeddingSine(d_model // 2, position_temperature, offset=position_offset)
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        self.encoder = encoder
        self.decoder = decoder

    def _reset_transformer(self, *modules: nn.Module):
        """The releases' init of the shared parts: xavier weights of ``modules`` with deformable attention's own
        init, normal level embeddings, xavier input projections with zero bias."""
        for module in modules:
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            for m in module.modules():
                if isinstance(m, MultiScaleDeformableAttention):
                    m.reset_parameters()
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1.0)
            nn.init.zeros_(proj[0].bias)

    def feature_maps(self, features: dict[str, Tensor]) -> list[Tensor]:
        """Backbone outputs -> the projected levels (B, d, h_l, w_l), finest first."""
        maps = [proj(features[f]) for proj, f in zip(self.input_proj, self.in_features)]
        x = features[self.in_features[-1]]
        for proj in self.input_proj[len(self.in_features):]:
            x = proj(x)
            maps.append(x)
        return maps

    def encode(self, images: ImageList) -> EncoderOutput:
        """Backbone, input projections, sine positions + level embeddings, and the deformable encoder."""
        features = self.backbone(images.tensor)
        maps = self.feature_maps(features)
        masks = self.level_masks(images, maps)
        pos = [self.position_embedding(m).to(x.dtype) + self.level_embed[lvl].view(1, -1, 1, 1).to(x.dtype)
               for lvl, (m, x) in enumerate(zip(masks, maps))]
        src, mask, pos, shapes, starts, ratios = self.flatten_levels(maps, masks, pos)
        memory = self.encoder(src, pos, shapes, starts, ratios, mask)
        return EncoderOutput(memory, pos, mask, shapes, starts, ratios, list(images.image_sizes), features)


@META_ARCH_REGISTRY.register()
class DeformableDETR(MultiScaleDeformableDETR):
    """Deformable DETR on a detectron2 backbone, single- or multi-scale.

    Args (besides :class:`~.base.DETRDetector`'s):
        in_features: backbone outputs read, finest first (("res3", "res4", "res5") multi-scale, ("res5",)
            single-scale).
        num_extra_levels: coarser levels added by conv3x3/s2 + GroupNorm, the first on the last backbone
            level, the next ones on the previous extra level (1 multi-scale, 0 single-scale).
        encoder, decoder: :class:`DeformableEncoder` / :class:`DeformableDecoder` of one width d, built for
            ``len(in_features) + num_extra_levels`` levels.
        position_offset, position_temperature: of the feature-map sine embedding (the release: -0.5, 10000).
        norm_groups: GroupNorm groups of the input projections (32).
    """

    fusion_target = "position"

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], num_extra_levels: int,
                 encoder: DeformableEncoder, decoder: DeformableDecoder, num_classes: int, num_queries: int,
                 criterion: nn.Module | None, pixel_mean: list[float], pixel_std: list[float],
                 position_offset: float = -0.5, position_temperature: float = 10000.0, norm_groups: int = 32,
                 num_detections: int = 100, size_divisibility: int = 0):
        super().__init__(backbone=backbone, in_features=in_features, num_extra_levels=num_extra_levels,
                         encoder=encoder, decoder=decoder, num_classes=num_classes, num_queries=num_queries,
                         criterion=criterion, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         position_offset=position_offset, position_temperature=position_temperature,
                         norm_groups=norm_groups, num_detections=num_detections, size_divisibility=size_divisibility)
        d_model = self.d_model
        self.query_embed = nn.Embedding(num_queries, 2 * d_model)
        self.reference_points = nn.Linear(d_model, 2)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self._reset_parameters()

    def _reset_parameters(self):
        """The release's initialisation: xavier transformer weights, deformable attention's own init, normal
        level embeddings, xavier input projections with zero bias, focal prior 0.01 on the class bias, a zero
        last box layer with w, h biased to sigmoid(-2)."""
        self._reset_transformer(self.encoder, self.decoder)
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.zeros_(self.reference_points.bias)
        nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        nn.init.constant_(self.bbox_embed.layers[-1].bias[2:], -2.0)

    def reference_from_position(self, query_pos: Tensor) -> Tensor:
        """(..., N, d) positional queries -> (..., N, 2) normalised (x, y) reference points in [0, 1]."""
        return self.reference_points(query_pos).sigmoid()

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        """The learned (positional, content) query halves (B, N, d) each and their references (B, N, 2)."""
        b = encoded.memory.shape[0]
        query_pos, content = self.query_embed.weight.split(self.d_model, dim=1)
        query_pos = query_pos[None].expand(b, -1, -1)
        return QueryInit(content[None].expand(b, -1, -1), query_pos, self.reference_from_position(query_pos))

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode from ``queries.content`` and ``queries.position`` (B, N, d); the reference points are
        recomputed from the positional queries (``queries.reference`` is not read)."""
        reference = self.reference_from_position(queries.position)
        hs = self.decoder(queries.content, queries.position, reference, encoded)
        offset = torch.cat([inverse_sigmoid(reference), torch.zeros_like(reference)], -1)
        boxes = (self.bbox_embed(hs) + offset).sigmoid()
        references = reference[None].expand(hs.shape[0], -1, -1, -1)
        return DecoderOutput(hs, self.class_embed(hs), boxes, references)
