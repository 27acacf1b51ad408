"""DEIM's matchability-aware loss (MAL; Huang et al., CVPR 2025, eq. 4), the classification term of its recipe.

Like the varifocal loss it trains the matched class towards the IoU of the query's box with its target, but the
target is ``IoU^gamma`` and positives are weighted 1 instead of by their target, so that matches of low IoU, which
dense one-to-one matching produces many of, are not down-weighted to nothing; negatives keep the focal
down-weighting ``alpha * p^gamma``. The release's defaults: ``gamma`` 1.5, no ``alpha`` (i.e. 1).
"""
from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["MAL_ALPHA", "MAL_GAMMA", "matchability_aware_loss"]

#: the DEIM release's MAL exponent (configs/base/deim.yml, rt_deim.yml: ``gamma: 1.5``)
MAL_GAMMA = 1.5
#: the release's ``mal_alpha`` (``None``: negatives weighted ``p^gamma`` alone)
MAL_ALPHA = None


def matchability_aware_loss(logits: Tensor, onehot: Tensor, iou: Tensor, gamma: float = MAL_GAMMA,
                            alpha: float | None = MAL_ALPHA) -> Tensor:
    """Element-wise MAL.

    logits, onehot: (..., C); iou: (...,) the IoU of each query's box with its matched target (0 where unmatched).
    Target q = iou^gamma * onehot; weight = a * sigmoid(logits)^gamma * (1 - onehot) + onehot (the sigmoid
    detached; a = ``alpha``, or 1 when None); loss = weight * BCE(logits, q), shape (..., C).
    """
    onehot = onehot.to(logits.dtype)
    target = iou[..., None].to(logits.dtype).pow(gamma) * onehot
    negative = logits.sigmoid().detach().pow(gamma) * (1 - onehot)
    weight = (negative if alpha is None else alpha * negative) + onehot
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
