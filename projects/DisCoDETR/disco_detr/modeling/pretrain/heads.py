"""The pre-training heads of DisCo / Siamese DETR: the L_enc projector-predictor on pooled encoder memory
and CLD's SimSiam heads on decoder outputs, both with BatchNorm synchronised across processes.

Their losses are in :mod:`.losses`; the other heads of the meta-architectures are plain layers (DisCo's
object projection and reconstruction MLP, DETReg's embedding MLP).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers.sync_batch_norm import SyncBatchNorm1d
from .losses import simsiam_loss, two_minus_two_cos

__all__ = ["CLDHeads", "EncoderConsistencyHead", "SyncBatchNorm1d"]


class EncoderConsistencyHead(nn.Module):
    """L_enc of DisCo DETR: pooled encoder memory -> projector FC-BN-ReLU-FC-BN-ReLU-FC-BN -> predictor
    FC-BN-ReLU-FC; symmetric 2 - 2 cos with stop-gradient on the target view (:func:`.losses.two_minus_two_cos`).

    As in the released code: hidden width 256, BatchNorm synchronised across processes, and each view
    through the projector on its own (BN statistics per view).

    forward(m1, m2): (B, d) pooled memories of the two views -> scalar.
    """

    def __init__(self, d_model: int = 256, hidden: int = 256):
        super().__init__()
        d = d_model
        self.projector = nn.Sequential(
            nn.Linear(d, hidden), SyncBatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), SyncBatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, d), SyncBatchNorm1d(d),
        )
        self.predictor = nn.Sequential(nn.Linear(d, hidden), SyncBatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, d))

    def forward(self, m1: Tensor, m2: Tensor) -> Tensor:
        z1, z2 = self.projector(m1), self.projector(m2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * two_minus_two_cos(p1, z2) + 0.5 * two_minus_two_cos(p2, z1)


class CLDHeads(nn.Module):
    """CLD (contrastive learning on decoder outputs): f_proj and f_pred, and its loss.

    Positive pairs are the last-layer decoder outputs that the view-1 and the view-2 decoder matched
    to the same proposal box; there are no negatives and no temperature. The heads follow SimSiam:

    f_proj: Linear(d,d,no bias)-BN-ReLU-Linear(d,d,no bias)-BN-ReLU-Linear(d,d)-BN(no affine);
    f_pred: Linear(d,4d,no bias)-BN-ReLU-Linear(4d,d). With d = 256 they hold 724,480
    parameters. ``use_projector`` / ``use_predictor`` = False replace a head by the identity
    (DisCo DETR's Table 4 ablations). Each view goes through the heads on its own, so BatchNorm
    statistics are per view, as SimSiam computes them; they are synchronised across processes
    under DDP (:class:`SyncBatchNorm1d`), as SimSiam and the released L_enc head do.

    forward(q1, q2): the (P, d) decoder outputs of the P positive pairs, row i of q1 and q2
    decoding the same physical box -> scalar loss (:func:`.losses.simsiam_loss`). BatchNorm needs
    P >= 2 in training.
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
