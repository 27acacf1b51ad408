"""CLD: contrastive learning on decoder outputs (SPEC section 5).

Positive pairs are the last-layer decoder outputs that the view-1 and the view-2 decoder
matched to the same proposal box; there are no negatives and no temperature. The heads
follow SimSiam: a 3-layer projector f_proj and a 2-layer predictor f_pred, and the loss is
the symmetric negative cosine with a stop-gradient on the target branch.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ..precision import at_least_float32, float32_policy
from .sync_bn import SyncBatchNorm1d

__all__ = ["CLDHeads", "negative_cosine", "simsiam_loss"]


@float32_policy
def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """D(p, z) = -cos(p, sg(z)), averaged over rows: (P, d), (P, d) -> scalar, at least in float32. The target gets
    no gradient."""
    return -F.cosine_similarity(at_least_float32(prediction), at_least_float32(target.detach()), dim=-1).mean()


def simsiam_loss(t1: Tensor, t1_hat: Tensor, t2: Tensor, t2_hat: Tensor) -> Tensor:
    """L = 1/2 D(t2_hat, sg(t1)) + 1/2 D(t1_hat, sg(t2))."""
    return 0.5 * negative_cosine(t2_hat, t1) + 0.5 * negative_cosine(t1_hat, t2)


class CLDHeads(nn.Module):
    """f_proj and f_pred of CLD, and its loss.

    f_proj: Linear(d,d,no bias)-BN-ReLU-Linear(d,d,no bias)-BN-ReLU-Linear(d,d)-BN(no affine);
    f_pred: Linear(d,4d,no bias)-BN-ReLU-Linear(4d,d). With d = 256 they hold 724,480
    parameters. ``use_projector`` / ``use_predictor`` = False replace a head by the identity
    (the paper's Table 4 ablations). Each view goes through the heads on its own, so BatchNorm
    statistics are per view, as SimSiam computes them; they are synchronised across processes
    under DDP (:class:`SyncBatchNorm1d`), as SimSiam and the released L_enc head do.

    forward(q1, q2): the (P, d) decoder outputs of the P positive pairs, row i of q1 and q2
    decoding the same physical box -> scalar loss. BatchNorm needs P >= 2 in training.
    """

    def __init__(self, d_model: int = 256, use_projector: bool = True, use_predictor: bool = True):
        super().__init__()
        d = d_model
        self.projector = nn.Sequential(
            nn.Linear(d, d, bias=False), SyncBatchNorm1d(d), nn.ReLU(inplace=True),
            nn.Linear(d, d, bias=False), SyncBatchNorm1d(d), nn.ReLU(inplace=True),
            nn.Linear(d, d), SyncBatchNorm1d(d, affine=False),
        ) if use_projector else nn.Identity()
        self.predictor = nn.Sequential(
            nn.Linear(d, 4 * d, bias=False), SyncBatchNorm1d(4 * d), nn.ReLU(inplace=True),
            nn.Linear(4 * d, d),
        ) if use_predictor else nn.Identity()

    def forward(self, q1: Tensor, q2: Tensor) -> Tensor:
        if q1.shape != q2.shape:
            raise ValueError(f"CLD pairs must have the same shape, got {tuple(q1.shape)} and {tuple(q2.shape)}")
        t1, t2 = self.projector(q1), self.projector(q2)  # BN statistics per view
        return simsiam_loss(t1, self.predictor(t1), t2, self.predictor(t2))
