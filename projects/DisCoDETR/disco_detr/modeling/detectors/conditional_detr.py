"""Conditional DETR (Meng et al., ICCV 2021) as a member of the DETR family.

The same class is fine-tuned on labelled data and pre-trained by DisCo DETR, through the
contract of :mod:`.base`: the learned positional queries are ``QueryInit.position`` (the
field DisCo fuses object features into), and the reference points are a function of them,
``sigmoid(MLP(query_pos))`` (normalised (x, y) in [0, 1]), recomputed inside :meth:`decode`
from whatever positional queries it receives.
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
    DETREncoder,
    LayerCheckpointing,
    PositionEmbeddingSine,
    inverse_sigmoid,
    multi_head_attention,
    sine_embed_points,
)
from .base import DecoderOutput, DETRDetector, EncoderOutput, QueryInit

__all__ = ["ConditionalDETR", "ConditionalDecoder", "ConditionalDecoderLayer", "SingleLevelDETR"]


class ConditionalDecoderLayer(nn.Module):
    """Decoder layer with conditional spatial cross-attention.

    Self-attention adds the positional query to queries and keys. Cross-attention
    concatenates, per head, the content query with the spatial query (the sine embedding of
    the reference point, scaled by the decoder's transformation) and the content key with
    the key's position embedding; the first layer also adds the positional query to the
    content query, as in the paper (only that layer has the ``ca_qpos`` projection).
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float, is_first: bool):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.is_first = is_first
        proj = ["sa_qcontent", "sa_qpos", "sa_kcontent", "sa_kpos", "sa_v", "sa_out",
                "ca_qcontent", "ca_kcontent", "ca_kpos", "ca_v", "ca_qpos_sine", "ca_out"]
        if is_first:
            proj.append("ca_qpos")
        self.proj = nn.ModuleDict({name: nn.Linear(d_model, d_model) for name in proj})
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, memory_mask: Tensor | None,
                query_pos: Tensor, query_sine_embed: Tensor) -> Tensor:
        """tgt, query_pos, query_sine_embed: (B, N, d); memory, pos: (B, HW, d); mask (B, HW)."""
        p = self.proj
        drop = self.dropout if self.training else 0.0
        q = p["sa_qcontent"](tgt) + p["sa_qpos"](query_pos)
        k = p["sa_kcontent"](tgt) + p["sa_kpos"](query_pos)
        out = multi_head_attention(q, k, p["sa_v"](tgt), self.num_heads, dropout=drop, record=("self_attn", self))
        tgt = self.norm1(tgt + self.drop(p["sa_out"](out)))

        q = p["ca_qcontent"](tgt)
        k = p["ca_kcontent"](memory)
        k_pos = p["ca_kpos"](pos)
        if self.is_first:
            q = q + p["ca_qpos"](query_pos)
            k = k + k_pos
        b, n, d = q.shape
        h = self.num_heads
        q = torch.cat([q.view(b, n, h, d // h), p["ca_qpos_sine"](query_sine_embed).view(b, n, h, d // h)], -1)
        k = torch.cat([k.view(b, -1, h, d // h), k_pos.view(b, -1, h, d // h)], -1)
        out = multi_head_attention(q.flatten(2), k.flatten(2), p["ca_v"](memory), h, memory_mask, drop,
                                   record=("cross_attn", self))
        tgt = self.norm2(tgt + self.drop(p["ca_out"](out)))
        return self.ffn(tgt)


class ConditionalDecoder(LayerCheckpointing, nn.Module):
    """Conditional DETR decoder.

    forward(memory (B,HW,d), pos (B,HW,d), memory_mask (B,HW), query_pos (B,N,d), tgt (B,N,d)
    content queries or None = zeros) -> hs (L, B, N, d) normalised outputs of every layer,
    reference (B, N, 2) normalised (x, y) reference points derived from ``query_pos``.
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(d_model, num_heads, dim_feedforward, dropout, is_first=i == 0)
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)

    def reference_points(self, query_pos: Tensor) -> Tensor:
        """(..., N, d) positional queries -> (..., N, 2) normalised (x, y) reference points."""
        return self.ref_point_head(query_pos).sigmoid()

    def forward(self, memory: Tensor, pos: Tensor, memory_mask: Tensor | None,
                query_pos: Tensor, tgt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        reference = self.reference_points(query_pos)
        base_sine = sine_embed_points(reference, self.d_model)
        if tgt is None:
            tgt = torch.zeros_like(query_pos)
        outputs = []
        for i, layer in enumerate(self.layers):
            scale = 1.0 if i == 0 else self.query_scale(tgt)
            tgt = self.run_layer(layer, tgt, memory, pos, memory_mask, query_pos, base_sine * scale)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs), reference


class SingleLevelDETR(DETRDetector):
    """What the one-level variants (Conditional DETR, DAB-DETR) share: the backbone output
    ``in_feature`` through a 1x1 input projection to width d, its sine position embedding
    (d/2 features per axis, ``position_offset`` / ``position_temperature``), and the
    encoder and decoder modules. Subclasses add their queries and heads."""

    def __init__(self, *, backbone: Backbone, in_feature: str, encoder: nn.Module, decoder: nn.Module,
                 num_classes: int, num_queries: int, criterion: nn.Module | None, pixel_mean: list[float],
                 pixel_std: list[float], position_offset: float, position_temperature: float,
                 num_detections: int = 100, size_divisibility: int = 0):
        d_model = decoder.d_model
        super().__init__(backbone=backbone, num_classes=num_classes, num_queries=num_queries, d_model=d_model,
                         criterion=criterion, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         num_detections=num_detections, size_divisibility=size_divisibility)
        self.in_feature = in_feature
        in_channels = backbone.output_shape()[in_feature].channels
        self.input_proj = nn.Conv2d(in_channels, d_model, kernel_size=1)
        self.position_embedding = PositionEmbeddingSine(d_model // 2, position_temperature, offset=position_offset)
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, images: ImageList) -> EncoderOutput:
        """Backbone, input projection, sine positions and the encoder on a padded batch: one level
        of (B, H*W, d) tokens, ``self.encoder(src, pos, key_padding_mask)``."""
        features = self.backbone(images.tensor)
        feat = features[self.in_feature]
        (mask,) = self.level_masks(images, [feat])
        pos = self.position_embedding(mask).to(feat.dtype)
        src, mask, pos, shapes, starts, ratios = self.flatten_levels([self.input_proj(feat)], [mask], [pos])
        memory = self.encoder(src, pos, mask)
        return EncoderOutput(memory, pos, mask, shapes, starts, ratios, list(images.image_sizes), features)


@META_ARCH_REGISTRY.register()
class ConditionalDETR(SingleLevelDETR):
    """Conditional DETR on a detectron2 backbone (one feature level).

    Args (besides :class:`~.base.DETRDetector`'s):
        in_feature: the backbone output the transformer reads (res5 in the paper).
        encoder, decoder: :class:`~disco_detr.modeling.layers.DETREncoder` and
            :class:`ConditionalDecoder` of one width d.
        position_offset, position_temperature: of the feature-map sine embedding (d/2
            features per axis, see :class:`PositionEmbeddingSine`); the Conditional DETR
            release uses offset 0 and temperature 10000.
    """

    def __init__(self, *, backbone: Backbone, in_feature: str, encoder: DETREncoder,
                 decoder: ConditionalDecoder, num_classes: int, num_queries: int,
                 criterion: nn.Module | None, pixel_mean: list[float], pixel_std: list[float],
                 position_offset: float = 0.0, position_temperature: float = 10000.0,
                 num_detections: int = 100, size_divisibility: int = 0):
        super().__init__(backbone=backbone, in_feature=in_feature, encoder=encoder, decoder=decoder,
                         num_classes=num_classes, num_queries=num_queries, criterion=criterion,
                         pixel_mean=pixel_mean, pixel_std=pixel_std, position_offset=position_offset,
                         position_temperature=position_temperature, num_detections=num_detections,
                         size_divisibility=size_divisibility)
        d_model = self.d_model
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self._reset_parameters()

    def _reset_parameters(self):
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        prior_prob = 0.01
        nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        """The learned positional queries (B, N, d), zero content and their reference points (B, N, 2)."""
        b = encoded.memory.shape[0]
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        return QueryInit(torch.zeros_like(query_pos), query_pos, self.decoder.reference_points(query_pos))

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode from ``queries.position`` and ``queries.content`` (B, N, d); the reference points
        are recomputed from the positional queries (``queries.reference`` is not read)."""
        hs, reference = self.decoder(encoded.memory, encoded.pos, encoded.mask, queries.position, queries.content)
        delta = self.bbox_embed(hs)
        offset = torch.cat([inverse_sigmoid(reference), torch.zeros_like(reference)], -1)
        boxes = (delta + offset).sigmoid()
        references = reference[None].expand(hs.shape[0], -1, -1, -1)
        return DecoderOutput(hs, self.class_embed(hs), boxes, references)
