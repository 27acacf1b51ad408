"""The two-stage DETR base: encoder query selection and contrastive denoising, shared by DINO and RT-DETR.

:class:`TwoStageDETR` sits between :class:`~.base.DETRDetector` and a two-stage variant and owns the flow:

* ``encode`` = the variant's :meth:`~TwoStageDETR.encode_memory` (backbone, encoder) + query selection. Every
  encoder token becomes a proposal (:func:`~..layers.query_selection.encoder_proposals`, side
  ``proposal_grid_size * 2**level``, logit space); the memory, zeroed on invalid proposals, goes through the
  variant's :meth:`~TwoStageDETR.proposal_heads`; the top-N valid tokens by best class logit are kept.
  ``EncoderOutput.extras`` then holds ``topk_indices`` (B, N) long (highest score first), ``enc_logits``
  (B, N, C), ``enc_boxes`` (B, N, 4) ``sigmoid(box delta + proposal)`` with their gradient, and ``enc_hidden``
  (B, N, d) the heads' features of the selected tokens.
* ``initial_queries``: content from :meth:`~TwoStageDETR.initial_content`, reference = ``enc_boxes``
  detached, no positional query (the decoder derives it from the box at every layer).
* ``decode``: the variant's :meth:`~TwoStageDETR._decode` over the N queries; in training mode the output
  carries the encoder heads' prediction on the selected tokens (``DecoderOutput.encoder``, losses ``*_enc``).
* ``forward_train``: denoising groups (:mod:`..layers.denoising`) from the targets, their queries decoded in
  front of the N matching queries under the groups' attention mask, split off, and given to the criterion
  (``*_dn`` losses). A batch without any box has no group; its ``*_dn`` keys are still returned, as zeros
  that depend on the label embedding, so that every step has the same loss keys and the same set of
  parameters in its graph (DDP without ``find_unused_parameters``).

A variant supplies: ``encode_memory``, ``proposal_heads``, ``initial_content``, ``_decode`` (its decoder and
per-layer heads, given any queries and an optional self-attention mask), its label embedding (built with
:meth:`~TwoStageDETR.build_label_embedding` under the attribute named by ``label_embedding_name``, which is
the state-dict prefix) and ``transfer_drop``.

Coordinates: every box and reference is normalised (cx, cy, w, h) of each image's un-padded size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..layers.denoising import DenoisingGroups, build_denoising_groups, denoising_num_groups
from ..layers.query_selection import encoder_proposals, gather_tokens, select_topk, selection_scores
from .base import DecoderOutput, DETRDetector, EncoderOutput, EncoderPrediction, QueryInit, layer_suffixes

__all__ = ["EncoderSelection", "TwoStageDETR", "init_prediction_heads"]


def init_prediction_heads(class_heads: list[nn.Linear], box_heads: list[nn.Module], prior: float = 0.01):
    """The releases' head init: class biases at the focal prior ``prior``, last box layers zero (the boxes start at
    the anchors). ``box_heads`` are :class:`~..layers.MLP` (their ``layers[-1]`` is the output Linear)."""
    bias = -math.log((1 - prior) / prior)
    for head in class_heads:
        nn.init.constant_(head.bias, bias)
    for head in box_heads:
        nn.init.zeros_(head.layers[-1].weight)
        nn.init.zeros_(head.layers[-1].bias)


@dataclass
class EncoderSelection:
    """The query selection of a batch (:meth:`TwoStageDETR.select`): ``queries`` (content (B, N, d), position
    None, reference (B, N, 4) the selected boxes, detached); ``logits`` (B, N, C) and ``boxes`` (B, N, 4) the
    encoder heads' predictions on the selected tokens (boxes with their gradient); ``indices`` (B, N) the
    selected tokens, highest score first."""

    queries: QueryInit
    logits: Tensor
    boxes: Tensor
    indices: Tensor


class TwoStageDETR(DETRDetector):
    """Base of the two-stage variants (see the module docstring for the flow and the hooks).

    Args (besides the variant's, passed on to the next base class):
        num_denoising: denoising queries per batch (0 turns denoising off: no label embedding is built);
            split into ``num_denoising // max_gt`` groups of ``2 * max_gt`` queries
            (:func:`~..layers.denoising.denoising_num_groups`).
        label_noise_ratio, box_noise_scale: of the denoising groups (DINO and RT-DETR: 0.5, 1.0).
        proposal_grid_size: side of a level-0 encoder proposal (0.05).
    """

    fusion_target = "content"
    references_depend_on_image = True
    #: The attribute (and state-dict prefix) of the denoising queries' label embedding.
    label_embedding_name: ClassVar[str] = "label_enc"

    def __init__(self, *, num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 proposal_grid_size: float = 0.05, **kwargs):
        if num_denoising < 0 or not 0 <= label_noise_ratio <= 1 or box_noise_scale < 0:
            raise ValueError(f"bad denoising settings: num_denoising={num_denoising}, "
                             f"label_noise_ratio={label_noise_ratio}, box_noise_scale={box_noise_scale}")
        super().__init__(**kwargs)
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.proposal_grid_size = proposal_grid_size

    # ---- the hooks a variant fills in ---------------------------------------------------------------------
    def encode_memory(self, images: ImageList) -> EncoderOutput:
        """Backbone and encoder: the memory (B, S, d) and its levels, before query selection."""
        raise NotImplementedError

    def proposal_heads(self, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The encoder heads on memory (B, S, d) already zeroed on invalid proposals -> features (B, S, d) the
        heads read, class logits (B, S, C), box deltas (B, S, 4) in logit space (added to the proposals)."""
        raise NotImplementedError

    def initial_content(self, encoded: EncoderOutput) -> Tensor:
        """Content queries (B, N, d) of the N matching queries."""
        raise NotImplementedError

    def _decode(self, encoded: EncoderOutput, content: Tensor, reference: Tensor,
                self_attn_mask: Tensor | None) -> DecoderOutput:
        """Decoder and per-layer heads over any Q queries: content (B, Q, d), reference (B, Q, 4) (detached by
        the caller), self_attn_mask (Q, Q) bool, True = blocked, or None -> a DecoderOutput over Q queries."""
        raise NotImplementedError

    def build_label_embedding(self, num_rows: int, padding_idx: int | None = None) -> nn.Embedding | None:
        """The denoising queries' label embedding (num_rows, d), or None when denoising is off."""
        return nn.Embedding(num_rows, self.d_model, padding_idx=padding_idx) if self.num_denoising > 0 else None

    @property
    def label_embedding(self) -> nn.Embedding | None:
        return getattr(self, self.label_embedding_name, None)

    # ---- query selection ---------------------------------------------------------------------------------
    def encode(self, images: ImageList) -> EncoderOutput:
        """:meth:`encode_memory`, then query selection (:meth:`select_queries`) into ``extras``."""
        encoded = self.encode_memory(images)
        encoded.extras.update(self.select_queries(encoded))
        return encoded

    def select_queries(self, encoded: EncoderOutput) -> dict[str, Tensor]:
        """Every token's proposal scored by the encoder heads, the top-N valid ones kept (invalid proposals,
        on the border or on padding, only when fewer than N are valid). Returns the ``extras`` of the module
        docstring."""
        memory = encoded.memory
        proposals, valid = encoder_proposals(encoded.spatial_shapes, encoded.mask, grid_size=self.proposal_grid_size,
                                             dtype=memory.dtype)
        hidden, logits, deltas = self.proposal_heads(memory * valid.to(memory.dtype))
        indices = select_topk(selection_scores(logits), self.num_queries, valid)
        return {"topk_indices": indices, "enc_logits": gather_tokens(logits, indices),
                "enc_boxes": gather_tokens(deltas + proposals, indices).sigmoid(),
                "enc_hidden": gather_tokens(hidden, indices)}

    def select(self, encoded: EncoderOutput) -> EncoderSelection:
        """The selection :meth:`encode` made, with the matching queries built from it."""
        ex = encoded.extras
        queries = QueryInit(self.initial_content(encoded), None, ex["enc_boxes"].detach())
        return EncoderSelection(queries, ex["enc_logits"], ex["enc_boxes"], ex["topk_indices"])

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        """:meth:`initial_content` (B, N, d) and the selected boxes (B, N, 4), detached, per image."""
        return self.select(encoded).queries

    def encoder_prediction(self, encoded: EncoderOutput) -> EncoderPrediction:
        """The encoder heads' prediction on the selected tokens: logits (B, N, C), boxes (B, N, 4) with their
        gradient, hidden (B, N, d)."""
        ex = encoded.extras
        return EncoderPrediction(ex["enc_logits"], ex["enc_boxes"], ex["enc_hidden"])

    # ---- decoding ----------------------------------------------------------------------------------------
    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode the N matching queries from ``queries.content`` (B, N, d) and ``queries.reference`` (B, N, 4)
        boxes (``queries.position`` is not used). In training mode the output carries the encoder heads'
        prediction on the selected tokens (``DecoderOutput.encoder``)."""
        if queries.reference.shape[-1] != 4:
            raise ValueError(f"{type(self).__name__} decodes from (B, N, 4) reference boxes, "
                             f"got {tuple(queries.reference.shape)}")
        decoded = self._decode(encoded, queries.content, queries.reference, None)
        if self.training:
            decoded.encoder = self.encoder_prediction(encoded)
        return decoded

    # ---- training with denoising ---------------------------------------------------------------------------
    def denoising_groups(self, targets: list[dict]) -> DenoisingGroups | None:
        """The batch's contrastive denoising groups (None when off, in eval, or without any box)."""
        if not self.training or self.num_denoising == 0:
            return None
        max_gt = max((len(t["labels"]) for t in targets), default=0)
        return build_denoising_groups(targets, self.num_classes, self.num_queries,
                                      denoising_num_groups(self.num_denoising, max_gt),
                                      self.label_noise_ratio, self.box_noise_scale)

    def forward_train(self, images: ImageList, targets: list[dict]) -> dict[str, Tensor]:
        """Weighted losses of the selected encoder proposals (``*_enc``), every decoder layer (Hungarian) and,
        when ``num_denoising > 0``, the denoising queries (``*_dn``, fixed assignments; zeros for a batch
        without boxes)."""
        encoded = self.encode(images)
        queries = self.initial_queries(encoded)
        groups = self.denoising_groups(targets)
        if groups is None:
            losses = self.criterion(self.decode(encoded, queries), targets)
            if self.num_denoising > 0:
                losses.update(self.empty_denoising_losses())
            return losses
        content = torch.cat([groups.embed_labels(self.label_embedding).to(queries.content.dtype), queries.content], 1)
        reference = torch.cat([groups.boxes.to(queries.reference.dtype), queries.reference], 1)
        decoded, denoising = self._decode(encoded, content, reference, groups.attn_mask).split_denoising(groups)
        decoded.encoder = self.encoder_prediction(encoded)
        return self.criterion(decoded, targets, denoising)

    def empty_denoising_losses(self) -> dict[str, Tensor]:
        """The ``*_dn`` keys a batch with boxes has, each a zero that depends on the label embedding: the only
        parameters the denoising queries add to the graph."""
        zero = 0.0 * self.label_embedding.weight.sum()
        num_layers = self.decoder.num_layers
        return {name + suffix: zero for _, suffix in layer_suffixes(num_layers, self.criterion.aux_loss, "_dn")
                for name in self.criterion.weights}
