"""DINO (Zhang et al., ICLR 2023), 4-scale, on the two-stage base (:mod:`.two_stage`).

The shared Deformable DETR input projections and encoder (:class:`~.deformable_detr.MultiScaleDeformableDETR`),
and from :class:`~.two_stage.TwoStageDETR` the query selection and contrastive denoising. DINO adds:

* Proposal heads: ``enc_output`` + ``enc_output_norm`` (Linear + LayerNorm), ``enc_class_embed`` (d -> C),
  ``enc_bbox_embed`` (3-layer MLP, d -> 4 logit deltas). *Mixed* query selection: the content queries are the
  learned ``tgt_embed`` (N, d), the anchors the selected boxes.
* Decoder (:class:`DINODecoder`): deformable decoder layers driven by anchor boxes; each layer's positional
  query is ``ref_point_head(sine(anchor))`` and its anchor is refined by that layer's box head,
  ``ref_(l+1) = sigmoid(bbox_embed[l](h_l) + logit(ref_l))``, detached for the next layer.
* Look forward twice: layer l's box is ``sigmoid(bbox_embed[l](norm(h_l)) + logit(r))`` with r the
  *undetached* refined anchor of layer l - 1.
* Denoising: label embedding ``label_enc`` (C, d); 100 queries, label noise 0.5, box noise 1.0.
* Losses (:class:`~..criterion.SetCriterion`): focal class 1, L1 5, GIoU 2 (matcher 2 / 5 / 2) on every decoder
  layer, on the selected encoder proposals (``*_enc``) and on the denoising queries (``*_dn``).

Coordinates: boxes are normalised (cx, cy, w, h) of the image's un-padded size; the deformable attention gets
them multiplied by each level's valid ratios (w, h, w, h).

Pre-training (DisCo / Siamese DETR, DETReg): ``fusion_target = "content"`` (the fused feature is added to
``tgt_embed``'s slot; the position is recomputed from the anchor), the references DMOQF matches are the selected
anchors, the encoder heads are supervised like a layer (``*_enc``), denoising is off (``num_denoising=0``, no
``label_enc``). Transfer drops ``class_embed.*``, ``enc_class_embed.*``, ``label_enc.*``.

Deviations from the release (reasons in docs/experiments.md, "Design notes: DINO and RT-DETR"):

* padding is masked in eval too (detrex does not; tests/data/reference/README.md);
* invalid proposals (border, padding) are ranked last in the top-k, never among valid ones;
* denoising is off in pre-training, and the encoder heads are trained there.
"""
from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..layers import MLP, LayerCheckpointing, inverse_sigmoid, sine_embed_points
from .base import DecoderOutput, EncoderOutput
from .deformable_detr import DeformableDecoderLayer, DeformableEncoder, MultiScaleDeformableDETR
from .two_stage import EncoderSelection, TwoStageDETR, init_prediction_heads

__all__ = ["DINO", "DINODecoder", "EncoderSelection", "sine_embed_boxes"]


def sine_embed_boxes(boxes: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """(..., 4) normalised (cx, cy, w, h) -> (..., 2 * d_model) sine features ordered (y, x, w, h), d_model / 2
    per coordinate (detrex's ``get_sine_pos_embed`` with ``exchange_xy``, scale 2 pi)."""
    return torch.cat([sine_embed_points(boxes[..., :2], d_model, temperature),
                      sine_embed_points(boxes[..., 2:].flip(-1), d_model, temperature)], -1)


class DINODecoder(LayerCheckpointing, nn.Module):
    """Deformable decoder layers (:class:`~.deformable_detr.DeformableDecoderLayer`) driven by anchor boxes.

    forward(tgt (B, Q, d) content queries, reference (B, Q, 4) normalised cxcywh anchors (no gradient needed),
    encoded :class:`EncoderOutput`, box_heads (one per layer, d -> 4 logit deltas), self_attn_mask (Q, Q) bool
    True = blocked or None) -> (hidden (L, B, Q, d) after the final norm, references (L, B, Q, 4) the detached
    anchor each layer used, refined (L, B, Q, 4) each layer's refined anchor, undetached).
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.0, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.num_levels = num_levels
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(d_model, num_heads, dim_feedforward, dropout, num_levels, num_points)
            for _ in range(num_layers)
        )
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, reference: Tensor, encoded: EncoderOutput, box_heads: nn.ModuleList,
                self_attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        ratios = encoded.valid_ratios.to(reference.dtype)
        ratios = torch.cat([ratios, ratios], -1)[:, None]                           # (B, 1, L, 4)
        reference = reference.detach()
        hidden, used, refined = [], [], []
        for layer, box_head in zip(self.layers, box_heads):
            reference_input = reference[:, :, None] * ratios                           # (B, Q, L, 4)
            query_pos = self.ref_point_head(sine_embed_boxes(reference_input[:, :, 0], self.d_model))
            tgt = self.run_layer(layer, tgt, query_pos, reference_input, encoded.memory, encoded.spatial_shapes,
                                 encoded.level_start_index, encoded.mask, self_attn_mask)
            new_reference = (box_head(tgt) + inverse_sigmoid(reference)).sigmoid()
            used.append(reference)
            refined.append(new_reference)
            hidden.append(self.norm(tgt))
            reference = new_reference.detach()
        return torch.stack(hidden), torch.stack(used), torch.stack(refined)


@META_ARCH_REGISTRY.register()
class DINO(TwoStageDETR, MultiScaleDeformableDETR):
    """DINO (4-scale: backbone res3-res5 + one stride-64 level) on a detectron2 backbone.

    Args (besides :class:`~.base.DETRDetector`'s and :class:`~.two_stage.TwoStageDETR`'s):
        in_features: backbone outputs read, finest first.
        num_extra_levels: coarser levels made by conv3x3/s2 + GroupNorm, the first on the last backbone level
            (detrex's ChannelMapper).
        encoder: a :class:`~.deformable_detr.DeformableEncoder`; decoder: a :class:`DINODecoder`.
        position_offset, position_temperature: of the feature-map sine embedding (-0.5, 10000).
        norm_groups: GroupNorm groups of the input projections (32).
    """

    transfer_drop = ("class_embed.", "enc_class_embed.", "label_enc.")
    label_embedding_name = "label_enc"

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], num_extra_levels: int,
                 encoder: DeformableEncoder, decoder: DINODecoder, num_classes: int, num_queries: int,
                 criterion: nn.Module | None, pixel_mean: list[float], pixel_std: list[float],
                 num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 position_offset: float = -0.5, position_temperature: float = 10000.0, norm_groups: int = 32,
                 proposal_grid_size: float = 0.05, num_detections: int = 300, size_divisibility: int = 0):
        super().__init__(backbone=backbone, in_features=in_features, num_extra_levels=num_extra_levels,
                         encoder=encoder, decoder=decoder, num_classes=num_classes, num_queries=num_queries,
                         criterion=criterion, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         num_denoising=num_denoising, label_noise_ratio=label_noise_ratio,
                         box_noise_scale=box_noise_scale, proposal_grid_size=proposal_grid_size,
                         position_offset=position_offset, position_temperature=position_temperature,
                         norm_groups=norm_groups, num_detections=num_detections, size_divisibility=size_divisibility)
        d_model = self.d_model
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.enc_class_embed = nn.Linear(d_model, num_classes)
        self.enc_bbox_embed = MLP(d_model, d_model, 4, 3)
        self.class_embed = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(decoder.num_layers))
        self.bbox_embed = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(decoder.num_layers))
        self.label_enc = self.build_label_embedding(num_classes)
        self._reset_parameters()

    def _reset_parameters(self):
        """detrex's DINO init: xavier transformer weights, deformable attention's own init, normal level
        embeddings, focal prior 0.01 on every class bias, zero last box layers (boxes start at the anchors)."""
        self._reset_transformer(self.encoder, self.decoder, self.enc_output)
        init_prediction_heads([*self.class_embed, self.enc_class_embed], [*self.bbox_embed, self.enc_bbox_embed])

    # ---- the two-stage hooks -------------------------------------------------------------------------------
    def encode_memory(self, images: ImageList) -> EncoderOutput:
        """The deformable encoder (:meth:`MultiScaleDeformableDETR.encode`)."""
        return MultiScaleDeformableDETR.encode(self, images)

    def proposal_heads(self, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden = self.enc_output_norm(self.enc_output(memory))
        return hidden, self.enc_class_embed(hidden), self.enc_bbox_embed(hidden)

    def initial_content(self, encoded: EncoderOutput) -> Tensor:
        """``tgt_embed`` (N, d) for every image (mixed query selection)."""
        return self.tgt_embed.weight[None].expand(encoded.memory.shape[0], -1, -1)

    def _decode(self, encoded: EncoderOutput, content: Tensor, reference: Tensor,
                self_attn_mask: Tensor | None) -> DecoderOutput:
        hidden, used, refined = self.decoder(content, reference, encoded, self.bbox_embed, self_attn_mask)
        # look forward twice: layer l's box starts from layer l-1's refined anchor *with* its gradient
        previous = torch.cat([used[:1], refined[:-1]])
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, hidden)])
        boxes = torch.stack([(head(h) + inverse_sigmoid(r)).sigmoid()
                             for head, h, r in zip(self.bbox_embed, hidden, previous)])
        return DecoderOutput(hidden, logits, boxes, used)
