"""Contrastive denoising groups (DINO, Zhang et al. 2023; also RT-DETR), variant-neutral.

During fine-tuning a denoising detector decodes, besides its N matching queries, extra queries made from
noised ground truth. Each *group* holds every ground-truth box of the image twice: a **positive** copy
(box corners moved by less than ``box_noise_scale`` x half the box size: the decoder must reconstruct the
box and its class) and a **negative** copy (corners moved by ``[1, 2)`` x that: the decoder must predict
"no object"). Labels are replaced by a random class with probability ``label_noise_ratio / 2``.

API (all coordinates are normalised cxcywh, by each image's un-padded size)::

    num_groups = denoising_num_groups(num_denoising, max_gt)  # DINO and RT-DETR: num_denoising // max_gt
    groups = build_denoising_groups(targets, num_classes, num_queries, num_groups,
                                    label_noise_ratio=0.5, box_noise_scale=1.0, generator=None)
    content = groups.embed_labels(label_embedding)            # (B, Q_dn, d); the caller owns the embedding
    # decoder input: cat([content, matching content], 1), cat([groups.boxes, matching references], 1),
    # self-attention mask groups.attn_mask (Q_dn + N, Q_dn + N), True = blocked
    dn_out, match_out = groups.split(decoder_output, dim=2)   # any tensor with the query axis at ``dim``
    indices = groups.matches()                                # per image (query_ids, target_ids) of positives
    # denoising loss: the usual box/class losses with these fixed indices, normalised by
    # num_boxes * groups.num_groups (DINO and RT-DETR); negatives only enter the classification term.

:class:`DenoisingGroups` fields (B images, ``G = groups.group_size = 2 * max_gt``, ``Q_dn = num_groups * G``):

* ``labels`` (B, Q_dn) int64: noised labels, ``-1`` on padding slots (images with fewer than max_gt boxes);
* ``boxes`` (B, Q_dn, 4): noised boxes in [0, 1]; padding slots hold (0.5, 0.5, 0.5, 0.5) (logit 0, as detrex);
* ``valid`` (B, Q_dn) bool: not padding; ``positive`` (B, Q_dn) bool: valid and in a group's positive half;
* ``gt_index`` (B, Q_dn) int64: the ground-truth box each slot was made from (``-1`` on padding);
* ``attn_mask`` (Q_dn + N, Q_dn + N) bool, True = query i must not attend to query j: the matching queries
  (the last N) never see a denoising query, and no denoising query sees another group's queries (it does see
  its own group and the matching queries, as in DINO and RT-DETR);
* ``num_groups``, ``group_size``, ``num_queries`` (N), ``num_denoising`` (Q_dn).

Layout of the denoising part, per group g: slots ``[g*G, g*G + max_gt)`` positives (slot ``g*G + t`` from
ground-truth box t), ``[g*G + max_gt, (g+1)*G)`` negatives (slot ``g*G + max_gt + t`` from box t). The
denoising queries come first in the decoder input, the N matching queries after them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh

__all__ = [
    "DenoisingGroups",
    "build_denoising_groups",
    "denoising_attn_mask",
    "denoising_num_groups",
]


def denoising_num_groups(num_denoising: int, max_gt: int) -> int:
    """``num_denoising // max_gt`` groups (at least 1), i.e. about ``2 * num_denoising`` denoising queries
    (a positive and a negative copy of every box per group).

    This is the releases' rule. DINO's release and detrex first double ``dn_number`` (positive and
    negative queries) and then divide by twice the largest ground-truth count: ``(2 * 100) // (2 * 10)``
    = 10 groups = 200 queries for dn_number = 100 and 10 boxes. RT-DETR's release divides
    ``num_denoising`` by the largest count directly, which is the same number. (DINO's release skips the
    division when ``2 * dn_number < 100``; its configs never do that and detrex does not either, so that
    branch is not reproduced.)
    """
    return max(1, num_denoising // max(1, max_gt))


def denoising_attn_mask(num_groups: int, group_size: int, num_queries: int,
                        device: torch.device | str | None = None) -> Tensor:
    """(Q_dn + N, Q_dn + N) bool self-attention mask, True = blocked, ``Q_dn = num_groups * group_size``,
    denoising queries first: matching queries see no denoising query; a denoising query sees its own group
    and the matching queries only."""
    q_dn = num_groups * group_size
    mask = torch.zeros(q_dn + num_queries, q_dn + num_queries, dtype=torch.bool, device=device)
    mask[q_dn:, :q_dn] = True
    group = torch.arange(q_dn, device=device) // group_size
    mask[:q_dn, :q_dn] = group[:, None] != group[None, :]
    return mask


@dataclass
class DenoisingGroups:
    """The denoising queries of one batch (see the module docstring for the layout and shapes)."""

    labels: Tensor
    boxes: Tensor
    valid: Tensor
    positive: Tensor
    gt_index: Tensor
    attn_mask: Tensor
    num_groups: int
    group_size: int
    num_queries: int

    @property
    def num_denoising(self) -> int:
        return self.num_groups * self.group_size

    def embed_labels(self, embedding: nn.Module | Tensor) -> Tensor:
        """Content queries (B, Q_dn, d) of the noised labels: ``embedding`` is an ``nn.Embedding`` (or its
        (C', d) weight) owned by the caller; padding slots get zeros."""
        weight = embedding.weight if isinstance(embedding, nn.Module) else embedding
        content = weight[self.labels.clamp(min=0)]
        return content * self.valid[..., None].to(content.dtype)

    def split(self, x: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
        """Split a tensor whose axis ``dim`` runs over Q_dn + N queries into (denoising, matching) parts."""
        if x.shape[dim] != self.num_denoising + self.num_queries:
            raise ValueError(f"axis {dim} of shape {tuple(x.shape)} is not Q_dn + N = "
                             f"{self.num_denoising} + {self.num_queries}")
        return x.split([self.num_denoising, self.num_queries], dim=dim)

    def matches(self) -> list[tuple[Tensor, Tensor]]:
        """Per image (query_ids, target_ids), int64 on the boxes' device: every positive denoising slot and
        the ground-truth box it was made from (indices into the denoising part)."""
        out = []
        for pos, gt in zip(self.positive, self.gt_index):
            ids = pos.nonzero().squeeze(1)
            out.append((ids, gt[ids]))
        return out


def build_denoising_groups(targets: list[dict], num_classes: int, num_queries: int, num_groups: int,
                           label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                           generator: torch.Generator | None = None) -> DenoisingGroups | None:
    """Noised ground truth for contrastive denoising.

    Args:
        targets: B dicts with "labels" (T_b,) int64 in [0, num_classes) and "boxes" (T_b, 4) normalised cxcywh.
        num_classes: noised labels are drawn uniformly from [0, num_classes).
        num_queries: N matching queries decoded after the denoising ones (for the attention mask).
        num_groups: groups of 2 * max_gt queries (:func:`denoising_num_groups`).
        label_noise_ratio: a label is replaced by a uniformly drawn class with probability ratio / 2 (<= 0: off).
        box_noise_scale: each corner (x0, y0, x1, y1) moves by ``u * scale * (w/2 or h/2)`` with a random sign,
            ``u ~ U[0, 1)`` for positives and ``U[1, 2)`` for negatives; boxes are clipped to [0, 1] (<= 0: off).
        generator: for reproducible noise (its device must match the targets').

    Returns:
        :class:`DenoisingGroups`, or None when no image has a box (nothing to denoise).
    """
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    num_gts = [len(t["labels"]) for t in targets]
    max_gt = max(num_gts, default=0)
    if max_gt == 0:
        return None
    device = targets[0]["boxes"].device
    b, group = len(targets), 2 * max_gt
    q_dn = num_groups * group

    labels = torch.full((b, max_gt), -1, dtype=torch.long, device=device)
    boxes = torch.full((b, max_gt, 4), 0.5, device=device)
    for i, t in enumerate(targets):
        labels[i, :num_gts[i]] = t["labels"].to(device)
        boxes[i, :num_gts[i]] = t["boxes"].to(device).float()
    gt_index = torch.arange(max_gt, device=device)[None].expand(b, -1)
    gt_index = torch.where(labels >= 0, gt_index, torch.full_like(gt_index, -1))

    # one group = [positives | negatives]; repeat the groups
    labels = labels.repeat(1, 2 * num_groups)
    boxes = boxes.repeat(1, 2 * num_groups, 1)
    gt_index = gt_index.repeat(1, 2 * num_groups)
    valid = labels >= 0
    negative = (torch.arange(q_dn, device=device) % group >= max_gt)[None].expand(b, -1)
    positive = valid & ~negative

    def rand(shape):
        return torch.rand(shape, device=device, generator=generator)

    if label_noise_ratio > 0:
        flip = (rand(labels.shape) < label_noise_ratio * 0.5) & valid
        new = (rand(labels.shape) * num_classes).long().clamp(max=num_classes - 1)
        labels = torch.where(flip, new, labels)
    if box_noise_scale > 0:
        xyxy = box_cxcywh_to_xyxy(boxes)
        half = boxes[..., 2:].repeat(1, 1, 2) * 0.5
        sign = (rand(boxes.shape) < 0.5).float() * 2 - 1
        magnitude = rand(boxes.shape) + negative[..., None].float()
        xyxy = (xyxy + sign * magnitude * half * box_noise_scale).clamp(0.0, 1.0)
        noised = box_xyxy_to_cxcywh(xyxy)
        boxes = torch.where(valid[..., None], noised, boxes)
    return DenoisingGroups(labels, boxes, valid, positive, gt_index,
                           denoising_attn_mask(num_groups, group, num_queries, device), num_groups, group, num_queries)
