"""DINO (Zhang et al., ICLR 2023), 4-scale, as a family member.

What makes DINO, on top of the shared Deformable DETR encoder and decoder layers
(:mod:`.deformable_detr`, reused, not copied):

* **Mixed query selection.** Every encoder token becomes a proposal (:mod:`..layers.query_selection`:
  centre of the token, side ``0.05 * 2**level``, logit space, invalid near the border or on padding);
  ``enc_output`` (Linear + LayerNorm) of the memory (zeroed where the proposal is invalid) feeds the encoder
  heads ``enc_class_embed`` and ``enc_bbox_embed``; the top-N valid tokens (invalid ones only when fewer than
  N are valid; detrex ranks them with the rest) by their best class logit give the
  anchors ``sigmoid(enc_bbox_embed(.) + proposal)`` (detached), while the content queries stay the learned
  ``tgt_embed`` (N, d).
* **Anchor-box decoder.** At every layer the positional query is ``ref_point_head(sine(anchor))`` (the
  sine embedding of (x, y, w, h), ordered (y, x, w, h), d/2 features per coordinate), the deformable
  cross-attention samples around the box, and the anchor is refined by that layer's box head:
  ``ref_(l+1) = sigmoid(bbox_embed[l](h_l) + logit(ref_l))`` (``h_l`` before the decoder's final norm), then
  detached for the next layer.
* **Look forward twice.** The box a layer predicts for the loss is ``sigmoid(bbox_embed[l](norm(h_l)) +
  logit(r))`` with r the *undetached* refined anchor of the previous layer, so a layer's box loss also
  trains the previous layer's box head.
* **Contrastive denoising** (fine-tuning only): 100 denoising queries from noised ground truth
  (:mod:`..layers.denoising`: label noise 0.5, box noise 1.0, positive and negative copies, groups kept
  apart by the self-attention mask), their content from ``label_enc`` (num_classes, d), decoded in front of
  the matching queries; losses with fixed assignments (the positive copy reconstructs its box and class,
  the negative copy predicts no object), normalised by ``num_boxes * num_groups``.
* Heads: one class head and one box head per decoder layer (``class_embed.l``, ``bbox_embed.l``) plus the
  encoder's (``enc_class_embed``, ``enc_bbox_embed``); focal loss with DINO's weights (class 1, L1 5,
  GIoU 2; matcher 2 / 5 / 2) on every decoder layer, on the selected encoder proposals (``*_enc``) and on
  the denoising queries (``*_dn``).

Coordinates: every box is normalised (cx, cy, w, h) of the image's **un-padded** size; inside the deformable
attention it is multiplied by the level's valid ratios (w, h, w, h). As in Deformable DETR here, padding is
masked in eval too (detrex does not; see ``tests/data/reference/README.md``).

Pre-training (DisCo / Siamese DETR) through the contract of :mod:`.base`
-------------------------------------------------------------------------
* ``references_depend_on_image = True``: ``initial_queries`` runs query selection on the view's own memory;
  the references DMOQF matches proposals to are the centres of the selected anchors (B, N, 4).
* ``fusion_target = "content"``: the fused object feature is added to ``tgt_embed`` of the query slot; the
  positional query is recomputed from the anchor at every layer, so it is not a place to put it.
* **Denoising is off in pre-training.** The decision and its reasons: (1) the contract's one door is
  ``decode``, which decodes exactly the N (fused) matching queries: no denoising queries, no attention mask;
  DisCoDETR needs no denoising knowledge. (2) The authors' release (``openselfsup/models/necks/rt_tr.py``,
  RT-DETR) does build contrastive denoising groups from the pseudo boxes (all labelled 1, noised label drawn
  from the pre-training classes) and weights ``*_dn`` losses; but those queries receive no object feature
  from the other view, so they learn single-view box refinement of the proposals, which the cross-view
  L_loc on the fused queries already asks for; the release's pre-training loop does not run as released
  (it iterates over an integer), so there is no evidence for the choice. (3) Denoising's purpose, stabilising
  the class-labelled bipartite matching of fine-tuning, does not arise with n = 10 class-agnostic proposals.
  (4) ``label_enc`` is class-specific and dropped on transfer anyway. The pre-training configs therefore
  build the detector with ``num_denoising=0`` (no ``label_enc`` at all); fine-tuning trains it from scratch,
  as for a randomly initialised DINO.
* **Selection scores with two classes.** One rule in both stages: a token's score is its best class logit
  (``selection_scores``). In pre-training the heads are the 2-way (object, no-object) heads DisCoDETR
  trains with a softmax (DETReg: the one objectness logit).
* **The encoder heads are trained in pre-training, as RT-DETR's.** In training mode ``decode`` returns the
  encoder heads' prediction on the selected tokens as ``DecoderOutput.encoder`` (``enc_class_embed`` logits,
  boxes ``sigmoid(enc_bbox_embed(.) + proposal)`` with their gradient, hidden = the selected ``enc_output``
  rows). The pre-training losses walk ``DecoderOutput.supervised_layers()`` and so supervise it like a layer,
  with its own Hungarian matching to the view's proposals (suffix ``_enc``): DisCo's L_loc (object/no-object
  cross-entropy + L1 + GIoU) and L_rec (the matched row reconstructs the other view's crop feature), DETReg's
  objectness focal loss + L1 + GIoU. Reasons: (1) without a loss ``enc_output``, ``enc_class_embed`` and
  ``enc_bbox_embed`` keep their random initialisation, the selection is an arbitrary function of the memory
  and DMOQF matches proposals to arbitrary anchors; (2) fine-tuning would inherit untrained ``enc_output`` /
  ``enc_bbox_embed``; (3) it is DINO's own fine-tuning supervision of the encoder proposals (section 3.4),
  and the authors' ``rt_tr.py`` appends the encoder's top-k to the outputs its pre-training loss sees. The
  anchors the decoder starts from stay detached: the heads learn to score and box tokens, the top-k follows.
* Transfer drops ``class_embed.*``, ``enc_class_embed.*`` and ``label_enc.*`` (class-specific).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..layers import MLP, inverse_sigmoid, sine_embed_points
from ..layers.denoising import DenoisingGroups, build_denoising_groups, denoising_num_groups
from ..layers.query_selection import encoder_proposals, gather_tokens, select_topk, selection_scores
from .base import DecoderOutput, EncoderOutput, EncoderPrediction, QueryInit, layer_suffixes
from .deformable_detr import DeformableDecoderLayer, DeformableEncoder, MultiScaleDeformableDETR

__all__ = ["DINO", "DINODecoder", "EncoderSelection", "sine_embed_boxes"]


def sine_embed_boxes(boxes: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """(..., 4) normalised (cx, cy, w, h) -> (..., 2 * d_model) sine features ordered (y, x, w, h), d_model / 2
    per coordinate (detrex's ``get_sine_pos_embed`` with ``exchange_xy``, scale 2 pi)."""
    return torch.cat([sine_embed_points(boxes[..., :2], d_model, temperature),
                      sine_embed_points(boxes[..., 2:].flip(-1), d_model, temperature)], -1)


class DINODecoder(nn.Module):
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
            tgt = layer(tgt, query_pos, reference_input, encoded.memory, encoded.spatial_shapes,
                        encoded.level_start_index, encoded.mask, self_attn_mask)
            new_reference = (box_head(tgt) + inverse_sigmoid(reference)).sigmoid()
            used.append(reference)
            refined.append(new_reference)
            hidden.append(self.norm(tgt))
            reference = new_reference.detach()
        return torch.stack(hidden), torch.stack(used), torch.stack(refined)


@dataclass
class EncoderSelection:
    """Mixed query selection of a batch (:meth:`DINO.select`): ``queries`` (content = ``tgt_embed`` (B, N, d), position None,
    reference (B, N, 4) the selected anchors, detached); ``logits`` (B, N, C) and ``boxes`` (B, N, 4) the
    encoder heads' predictions on the selected tokens (boxes = the undetached anchors); ``indices`` (B, N)
    the selected tokens, highest score first."""

    queries: QueryInit
    logits: Tensor
    boxes: Tensor
    indices: Tensor


@META_ARCH_REGISTRY.register()
class DINO(MultiScaleDeformableDETR):
    """DINO (4-scale: backbone res3-res5 + one stride-64 level) on a detectron2 backbone.

    Args (besides :class:`~.base.DETRDetector`'s):
        in_features: backbone outputs read, finest first.
        num_extra_levels: coarser levels made by conv3x3/s2 + GroupNorm, the first on the last backbone level
            (detrex's ChannelMapper).
        encoder: a :class:`~.deformable_detr.DeformableEncoder`; decoder: a :class:`DINODecoder`.
        num_denoising: denoising queries per batch (DINO: 100; 0 turns denoising off and builds no
            ``label_enc``); split into
            ``num_denoising // max_gt`` groups of ``2 * max_gt`` queries, as DINO's release and detrex
            (:func:`~..layers.denoising.denoising_num_groups`).
        label_noise_ratio, box_noise_scale: of the denoising groups (0.5, 1.0).
        position_offset, position_temperature: of the feature-map sine embedding (-0.5, 10000).
        norm_groups: GroupNorm groups of the input projections (32).
        proposal_grid_size: side of a level-0 encoder proposal (0.05).
    """

    fusion_target = "content"
    references_depend_on_image = True
    transfer_drop = ("class_embed.", "enc_class_embed.", "label_enc.")

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], num_extra_levels: int,
                 encoder: DeformableEncoder, decoder: DINODecoder, num_classes: int, num_queries: int,
                 criterion: nn.Module | None, pixel_mean: list[float], pixel_std: list[float],
                 num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 position_offset: float = -0.5, position_temperature: float = 10000.0, norm_groups: int = 32,
                 proposal_grid_size: float = 0.05, num_detections: int = 300, size_divisibility: int = 0):
        super().__init__(backbone=backbone, in_features=in_features, num_extra_levels=num_extra_levels,
                         encoder=encoder, decoder=decoder, num_classes=num_classes, num_queries=num_queries,
                         criterion=criterion, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         position_offset=position_offset, position_temperature=position_temperature,
                         norm_groups=norm_groups, num_detections=num_detections, size_divisibility=size_divisibility)
        d_model = self.d_model
        if num_denoising < 0 or not 0 <= label_noise_ratio <= 1 or box_noise_scale < 0:
            raise ValueError(f"bad denoising settings: num_denoising={num_denoising}, "
                             f"label_noise_ratio={label_noise_ratio}, box_noise_scale={box_noise_scale}")
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.proposal_grid_size = proposal_grid_size

        self.tgt_embed = nn.Embedding(num_queries, d_model)
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.enc_class_embed = nn.Linear(d_model, num_classes)
        self.enc_bbox_embed = MLP(d_model, d_model, 4, 3)
        self.class_embed = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(decoder.num_layers))
        self.bbox_embed = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(decoder.num_layers))
        # the denoising queries' label embedding; absent when denoising is off (e.g. in pre-training)
        self.label_enc = nn.Embedding(num_classes, d_model) if num_denoising > 0 else None
        self._reset_parameters()

    def _reset_parameters(self):
        """detrex's DINO init: xavier transformer weights, deformable attention's own init, normal level
        embeddings, focal prior 0.01 on every class bias, zero last box layers (boxes start at the anchors)."""
        self._reset_transformer(self.encoder, self.decoder, self.enc_output)
        bias = -math.log((1 - 0.01) / 0.01)
        for head in [*self.class_embed, self.enc_class_embed]:
            nn.init.constant_(head.bias, bias)
        for head in [*self.bbox_embed, self.enc_bbox_embed]:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    # ---- encoder: MultiScaleDeformableDETR.encode, then query selection ------------------------------------
    def encode(self, images: ImageList) -> EncoderOutput:
        """The deformable encoder, then mixed query selection (:meth:`select_queries`) into ``extras``."""
        encoded = super().encode(images)
        encoded.extras.update(self.select_queries(encoded))
        return encoded

    def select_queries(self, encoded: EncoderOutput) -> dict[str, Tensor]:
        """Mixed query selection: every token's proposal scored by the encoder heads, the top-N valid ones kept.
        Returns ``topk_indices`` (B, N) long, highest score first; ``enc_logits`` (B, N, C) their class logits;
        ``enc_boxes`` (B, N, 4) their boxes ``sigmoid(enc_bbox_embed(.) + proposal)``, normalised cxcywh, with
        their gradient; ``enc_memory`` (B, S, d) the encoder heads' input (``enc_output`` of the memory)."""
        memory = encoded.memory
        proposals, valid = encoder_proposals(encoded.spatial_shapes, encoded.mask, grid_size=self.proposal_grid_size,
                                             dtype=memory.dtype)
        output_memory = self.enc_output_norm(self.enc_output(memory * valid.to(memory.dtype)))
        logits = self.enc_class_embed(output_memory)
        coords = self.enc_bbox_embed(output_memory) + proposals                    # (B, S, 4) logit space
        # invalid proposals (border, padding) rank last: detrex lets them compete with the one score their zeroed
        # memory gives, so on padded batches they can fill the top-k with (1, 1, 1, 1) anchors
        indices = select_topk(selection_scores(logits), self.num_queries, valid)
        return {"topk_indices": indices, "enc_logits": gather_tokens(logits, indices),
                "enc_boxes": gather_tokens(coords, indices).sigmoid(), "enc_memory": output_memory}

    def select(self, encoded: EncoderOutput) -> EncoderSelection:
        """The selection :meth:`encode` made: anchors (B, N, 4) normalised cxcywh (detached in the queries), the
        content queries ``tgt_embed``."""
        ex = encoded.extras
        b = encoded.memory.shape[0]
        content = self.tgt_embed.weight[None].expand(b, -1, -1)
        queries = QueryInit(content, None, ex["enc_boxes"].detach())
        return EncoderSelection(queries, ex["enc_logits"], ex["enc_boxes"], ex["topk_indices"])

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        """``tgt_embed`` (B, N, d) content queries and the selected anchors (B, N, 4), per image."""
        return self.select(encoded).queries

    def encoder_prediction(self, encoded: EncoderOutput) -> EncoderPrediction:
        """The encoder heads' prediction on the selected tokens: logits (B, N, C), boxes (B, N, 4) with their
        gradient, hidden (B, N, d) the selected rows of ``enc_memory``."""
        ex = encoded.extras
        return EncoderPrediction(ex["enc_logits"], ex["enc_boxes"], gather_tokens(ex["enc_memory"], ex["topk_indices"]))

    # ---- decoder ---------------------------------------------------------------------------------------
    def _decode(self, encoded: EncoderOutput, content: Tensor, reference: Tensor,
                self_attn_mask: Tensor | None) -> DecoderOutput:
        hidden, used, refined = self.decoder(content, reference, encoded, self.bbox_embed, self_attn_mask)
        # look forward twice: layer l's box starts from layer l-1's refined anchor *with* its gradient
        previous = torch.cat([used[:1], refined[:-1]])
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, hidden)])
        boxes = torch.stack([(head(h) + inverse_sigmoid(r)).sigmoid()
                             for head, h, r in zip(self.bbox_embed, hidden, previous)])
        return DecoderOutput(hidden, logits, boxes, used)

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode the N matching queries from ``queries.content`` (B, N, d) and ``queries.reference``
        (B, N, 4) anchors (``queries.position`` is not used: it is recomputed from the anchors). In training mode
        the output carries the encoder heads' prediction on the selected tokens (``DecoderOutput.encoder``)."""
        if queries.reference.shape[-1] != 4:
            raise ValueError(f"DINO decodes from (B, N, 4) anchor boxes, got {tuple(queries.reference.shape)}")
        decoded = self._decode(encoded, queries.content, queries.reference, None)
        if self.training:
            decoded.encoder = self.encoder_prediction(encoded)
        return decoded

    # ---- training ----------------------------------------------------------------------------------------
    def denoising_groups(self, targets: list[dict]) -> DenoisingGroups | None:
        """The batch's contrastive denoising groups (None when off, in eval, or without any box)."""
        if not self.training or self.num_denoising == 0:
            return None
        max_gt = max((len(t["labels"]) for t in targets), default=0)
        return build_denoising_groups(targets, self.num_classes, self.num_queries,
                                      denoising_num_groups(self.num_denoising, max_gt),
                                      self.label_noise_ratio, self.box_noise_scale)

    def forward_train(self, images: ImageList, targets: list[dict]) -> dict[str, Tensor]:
        """DINO's losses: the selected encoder proposals (``*_enc``), every decoder layer (Hungarian) and, when
        ``num_denoising > 0``, the denoising queries (``*_dn``, fixed assignments; zeros for a batch without
        boxes), weighted by the criterion's weights."""
        criterion = self.criterion
        encoded = self.encode(images)
        queries = self.initial_queries(encoded)
        groups = self.denoising_groups(targets)
        if groups is None:
            losses = criterion(self.decode(encoded, queries), targets)
            if self.num_denoising > 0:
                # keep the keys and touch label_enc, so logging and DDP see the same graph every step
                zero = 0.0 * self.label_enc.weight.sum()
                for _, suffix in layer_suffixes(self.decoder.num_layers, criterion.aux_loss, "_dn"):
                    for name in criterion.weights:
                        losses[name + suffix] = zero
            return losses
        content = torch.cat([groups.embed_labels(self.label_enc).to(queries.content.dtype), queries.content], 1)
        reference = torch.cat([groups.boxes.to(queries.reference.dtype), queries.reference], 1)
        decoded, denoising = self._decode(encoded, content, reference, groups.attn_mask).split_denoising(groups)
        decoded.encoder = self.encoder_prediction(encoded)
        return criterion(decoded, targets, denoising)
