import pytest
import torch
from torch.nn import functional as F

from disco_detr.modeling.pretrain.heads import CLDHeads
from disco_detr.modeling.pretrain.losses import simsiam_loss


def test_parameter_count_matches_the_paper():
    assert sum(p.numel() for p in CLDHeads(256).parameters()) == 724_480  # the paper: "725K"
    assert sum(p.numel() for p in CLDHeads(256, use_projector=False).parameters()) == 8 * 256**2 + 9 * 256
    assert sum(p.numel() for p in CLDHeads(256, use_predictor=False).parameters()) == 3 * 256**2 + 5 * 256
    assert sum(p.numel() for p in CLDHeads(256, False, False).parameters()) == 0


def test_loss_value_against_float64_reference():
    torch.manual_seed(0)
    t1, t2, h1, h2 = (torch.randn(7, 16, dtype=torch.float64) for _ in range(4))
    expected = 0.0
    for i in range(7):
        expected += -0.5 * (h2[i] @ t1[i]) / (h2[i].norm() * t1[i].norm()) / 7
        expected += -0.5 * (h1[i] @ t2[i]) / (h1[i].norm() * t2[i].norm()) / 7
    assert simsiam_loss(t1, h1, t2, h2).item() == pytest.approx(expected.item(), abs=1e-12)
    assert simsiam_loss(t1, t2, t2, t1).item() == pytest.approx(-1.0)  # each prediction equals its target


def test_stop_gradient_on_the_target_branch():
    torch.manual_seed(1)
    t1 = torch.randn(5, 8, requires_grad=True)
    t2 = torch.randn(5, 8, requires_grad=True)
    h1 = torch.randn(5, 8, requires_grad=True)
    h2 = torch.randn(5, 8, requires_grad=True)
    simsiam_loss(t1, h1, t2, h2).backward()
    assert t1.grad is None and t2.grad is None  # targets are detached
    assert h1.grad.abs().sum() > 0 and h2.grad.abs().sum() > 0


def test_heads_train_towards_agreement():
    torch.manual_seed(2)
    heads = CLDHeads(32)
    base = torch.randn(64, 32)
    q1, q2 = base + 0.1 * torch.randn(64, 32), base + 0.1 * torch.randn(64, 32)
    opt = torch.optim.SGD(heads.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(60):
        loss = heads(q1, q2)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.05 and -1.0 <= loss.item() <= 1.0
    with pytest.raises(ValueError, match="same shape"):
        heads(q1, q2[:3])


def test_identity_variant_is_plain_cosine():
    q1, q2 = torch.randn(4, 8), torch.randn(4, 8)
    expected = -F.cosine_similarity(q1, q2, dim=-1).mean()
    assert CLDHeads(8, False, False)(q1, q2).item() == pytest.approx(expected.item(), abs=1e-6)
