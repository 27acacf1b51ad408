"""Encoder proposals and top-k query selection (two-stage DETRs: DINO, RT-DETR), variant-neutral.

Two-stage DETRs turn every encoder token into a proposal box and start the decoder from the best
k of them. This module holds the two pieces that do not depend on the variant; the variant keeps its
own heads (how memory becomes scores and box deltas) and decides what the selected rows become.

Conventions
-----------
* Tokens: a multi-scale map flattened level by level, each level row-major (token ``y * w + x``),
  levels concatenated (S = sum h_l * w_l), as in :mod:`.ms_deform_attn` and ``EncoderOutput``.
* ``mask`` (B, S) bool is True on padding (``EncoderOutput.mask``); ``spatial_shapes`` (L, 2) long
  holds ``(h_l, w_l)`` of the *padded* maps.
* Proposals are normalised ``(cx, cy, w, h)`` of each image's **un-padded** extent (the convention
  of ``QueryInit.reference`` and of the boxes the detectors predict), returned in logit space
  (``inverse_sigmoid``), so that a head's box delta is added to them before a sigmoid.

:func:`encoder_proposals`
    For token (x, y) of level l whose un-padded map is ``w'_l x h'_l`` tokens:
    ``cx = (x + 0.5) / w'_l``, ``cy = (y + 0.5) / h'_l``, ``w = h = grid_size * 2**l``
    (0.05 * 2^l in DINO and RT-DETR). Without padding ``w'_l = w_l`` (the RT-DETR release and
    transformers' ``RTDetr`` anchors exactly). A proposal is *valid* when the token is not padding
    and all four coordinates lie strictly inside ``(eps, 1 - eps)`` (eps 0.01, both releases).
    Invalid proposals get the logit ``fill`` (default: the dtype's largest finite value, as
    transformers does; the RT-DETR release uses +inf), so ``proposal + delta`` stays huge and never
    NaN.
    Note: DINO / Deformable two-stage proposals (detrex) use the same centres and sizes; they also
    zero the memory of invalid tokens before their heads, which the caller does with ``valid``.

:func:`select_topk`
    Top-k token indices per image by a (B, S) score, in ``torch.topk`` order (descending, the
    order the decoder's queries take), and :func:`gather_tokens` to pick rows of any (B, S, ...)
    tensor with them. ``valid`` (B, S), when given, excludes tokens from selection (their score is
    set to -inf; they are only chosen when an image has fewer than k valid tokens).

Both run under ``torch.no_grad`` only where the caller wants it: ``select_topk`` is
non-differentiable by nature (indices), ``gather_tokens`` passes gradients to the gathered rows.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .ms_deform_attn_checks import level_sizes

__all__ = ["encoder_proposals", "gather_tokens", "select_topk", "selection_scores"]


def encoder_proposals(spatial_shapes: Tensor, mask: Tensor | None = None, *, grid_size: float = 0.05,
                      eps: float = 0.01, dtype: torch.dtype = torch.float32, fill: float | None = None,
                      batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Anchor boxes of every encoder token, in logit space, and their validity.

    Args:
        spatial_shapes: (L, 2) long ``(h_l, w_l)`` of the (padded) levels, finest first.
        mask: (B, S) bool, True on padding, or None (no padding; then ``batch_size`` gives B, default 1).
        grid_size: side of a level-0 anchor as a fraction of the image (level l: ``grid_size * 2**l``).
        eps: anchors with a coordinate outside ``(eps, 1 - eps)`` are invalid.
        dtype: of the returned anchors; ``fill``: logit written for invalid anchors
            (default ``torch.finfo(dtype).max``).

    Returns:
        anchors (B, S, 4): ``inverse_sigmoid`` of normalised (cx, cy, w, h) of each image's un-padded
        extent, ``fill`` where invalid; valid (B, S, 1) bool.
    """
    shapes = torch.as_tensor(spatial_shapes)
    if shapes.dim() != 2 or shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2) (h, w), got shape {tuple(shapes.shape)}")
    device = mask.device if mask is not None else shapes.device
    hw = level_sizes(shapes)   # 0-dim tensors while tracing (an export computes them for its input size)
    total = sum(h * w for h, w in hw)
    if mask is not None and not torch.jit.is_tracing() and (mask.dim() != 2 or mask.shape[1] != total):
        raise ValueError(f"mask must be (B, S={total}) for spatial_shapes {hw}, got {tuple(mask.shape)}")
    b = mask.shape[0] if mask is not None else (batch_size or 1)
    anchors, valid = [], []
    start = 0
    for lvl, (h, w) in enumerate(hw):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
        if mask is not None:
            level_mask = mask[:, start:start + h * w].view(b, h, w)
            valid_h = (~level_mask[:, :, 0]).sum(1).float().clamp(min=1)           # (B,)
            valid_w = (~level_mask[:, 0, :]).sum(1).float().clamp(min=1)
            not_pad = ~level_mask.reshape(b, h * w)
        else:
            valid_h = torch.full((b,), float(h), device=device)
            valid_w = torch.full((b,), float(w), device=device)
            not_pad = torch.ones(b, h * w, dtype=torch.bool, device=device)
        cx = (xs.reshape(1, -1) + 0.5) / valid_w[:, None]
        cy = (ys.reshape(1, -1) + 0.5) / valid_h[:, None]
        wh = torch.full_like(cx, grid_size * 2.0 ** lvl)
        boxes = torch.stack([cx, cy, wh, wh], -1)                                 # (B, hw, 4)
        ok = ((boxes > eps) & (boxes < 1 - eps)).all(-1) & not_pad
        anchors.append(boxes)
        valid.append(ok)
        start += h * w
    boxes = torch.cat(anchors, 1)
    ok = torch.cat(valid, 1)[..., None]
    # logit of the valid ones; clamp keeps padded-token coordinates (> 1) finite before they are replaced
    logits = torch.log(boxes.clamp(1e-6, 1 - 1e-6) / (1 - boxes.clamp(1e-6, 1 - 1e-6)))
    fill_value = torch.finfo(dtype).max if fill is None else fill
    # in the output dtype: float64's max does not fit the float32 anchors
    logits = torch.where(ok, logits.to(dtype), torch.full_like(logits, fill_value, dtype=dtype))
    return logits, ok


def selection_scores(class_logits: Tensor) -> Tensor:
    """(B, S, C) per-class logits -> (B, S) the best class logit of each token (the score both
    DINO and RT-DETR rank proposals by; sigmoid is monotonic, so logits rank as probabilities)."""
    return class_logits.max(-1).values


def select_topk(scores: Tensor, k: int, valid: Tensor | None = None) -> Tensor:
    """Indices (B, k) long of the k highest ``scores`` (B, S) per image, highest first (``torch.topk``
    order). ``valid`` (B, S) or (B, S, 1) bool: tokens where it is False are ranked last."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, S), got shape {tuple(scores.shape)}")
    if k > scores.shape[1]:
        raise ValueError(f"cannot select {k} queries from {scores.shape[1]} encoder tokens; use fewer queries "
                         "or larger images")
    if valid is not None:
        valid = valid.reshape(scores.shape)
        scores = scores.masked_fill(~valid, float("-inf"))
    return scores.topk(k, dim=1).indices


def gather_tokens(x: Tensor, indices: Tensor) -> Tensor:
    """Rows of x (B, S, ...) at ``indices`` (B, k) -> (B, k, ...)."""
    index = indices.view(*indices.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, index)
