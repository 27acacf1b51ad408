"""The CPU fast paths compute what the plain ones do: frozen BN folded into its convolution, the
channels-last ResNet, and dense attention with dropout outside SDPA's generic path."""
import copy

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.backbone import BasicStem, ResNet
from torch.nn import functional as F

from disco_detr.modeling import build_resnet, build_resnet_vd
from disco_detr.modeling.backbone import FrozenBNConv2d, fold_frozen_batchnorm
from disco_detr.modeling.layers.attention import _attention_with_dropout, multi_head_attention


def _randomise_frozen_bn(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.shape[0]
            m.weight.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.copy_(torch.randn(c, generator=g))
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_matches_conv_then_frozen_bn_in_float64(bias):
    torch.manual_seed(0)
    conv = Conv2d(3, 5, kernel_size=3, stride=2, padding=1, bias=bias, norm=FrozenBatchNorm2d(5),
                  activation=F.relu)
    _randomise_frozen_bn(conv)
    folded = fold_frozen_batchnorm(copy.deepcopy(conv))
    assert type(folded) is FrozenBNConv2d and set(folded.state_dict()) == set(conv.state_dict())
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    ref64 = copy.deepcopy(conv).double()
    n = ref64.norm  # hand-written reference: conv, then (x - mean) / sqrt(var + eps) * gamma + beta, then relu
    y = F.conv2d(x, ref64.weight, ref64.bias, 2, 1)
    y = (y - n.running_mean.view(1, -1, 1, 1)) / (n.running_var.view(1, -1, 1, 1) + n.eps).sqrt()
    ref = F.relu(y * n.weight.view(1, -1, 1, 1) + n.bias.view(1, -1, 1, 1))
    out = folded(x.float())
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-5)
    # gradients reach the convolution weight as through conv -> BN
    out.sum().backward()
    plain = conv(x.float())
    plain.sum().backward()
    assert torch.allclose(folded.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-4)
    assert folded.weight.grad.abs().sum() > 0


def test_folded_conv_with_another_norm_is_plain_conv():
    conv = Conv2d(3, 4, kernel_size=1, norm=torch.nn.GroupNorm(2, 4))
    folded = copy.deepcopy(conv)
    folded.__class__ = FrozenBNConv2d
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(folded(x), conv(x))
    assert fold_frozen_batchnorm(copy.deepcopy(conv)).__class__ is Conv2d  # not a frozen BN: left alone


def test_cpu_friendly_resnet_matches_detectron2_resnet():
    torch.manual_seed(0)
    ours = build_resnet(depth=50, out_features=("res3", "res5"), freeze_at=1)
    plain = ResNet(BasicStem(3, 64, norm="FrozenBN"),
                   ResNet.make_default_stages(50, stride_in_1x1=False, norm="FrozenBN"),
                   out_features=["res3", "res5"], freeze_at=1)
    assert list(ours.state_dict()) == list(plain.state_dict())
    _randomise_frozen_bn(ours)
    plain.load_state_dict(ours.state_dict())
    # every conv of R50: stem, 16 blocks x 3, 4 shortcuts
    assert sum(isinstance(m, FrozenBNConv2d) for m in ours.modules()) == 53
    x = torch.randn(2, 3, 64, 96)
    a, b = ours(x), plain(x)
    for name in ("res3", "res5"):
        assert a[name].is_contiguous() and a[name].shape == b[name].shape
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-4 * b[name].abs().max().item())
    a["res5"].square().mean().backward()
    b["res5"].square().mean().backward()
    ga, gb = ours.res2[0].conv1.weight.grad, plain.res2[0].conv1.weight.grad
    assert ga is not None and torch.allclose(ga, gb, rtol=1e-3, atol=1e-3 * gb.abs().max().item())
    assert ours.stem.conv1.weight.grad is None  # the frozen stem stays frozen


def test_resnet_vd_folds_its_frozen_bn():
    net = build_resnet_vd(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1), widths=(16, 32, 64, 128), freeze_at=1)
    convs = [m for m in net.modules() if isinstance(m, Conv2d)]
    assert convs and all(type(m) is FrozenBNConv2d for m in convs)
    out = net(torch.randn(1, 3, 32, 32))
    assert all(v.is_contiguous() for v in out.values())


def test_attention_with_dropout_matches_float64_softmax_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True
    block = torch.zeros(5, 7, dtype=torch.bool)
    block[0, :2] = True
    allowed = ~pad[:, None, None, :] & ~block
    logits = q.double() @ k.double().transpose(-1, -2) / 8 ** 0.5
    ref = logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v.double()
    out = _attention_with_dropout(q, k, v, allowed, 1e-9)  # dropout that (practically) drops nothing
    assert torch.allclose(out.double(), ref, atol=1e-6)
    # through the public function, with heads folded into the last dimension
    flat = multi_head_attention(q.transpose(1, 2).flatten(2), k.transpose(1, 2).flatten(2),
                                v.transpose(1, 2).flatten(2), 4, pad, 1e-9, attn_mask=block)
    assert torch.allclose(flat.double(), ref.transpose(1, 2).flatten(2), atol=1e-6)


def test_attention_dropout_drops_and_rescales():
    torch.manual_seed(0)
    q, k = torch.zeros(1, 1, 400, 4), torch.zeros(1, 1, 50, 4)  # uniform weights 1/50
    v = torch.ones(1, 1, 50, 1)
    out = _attention_with_dropout(q, k, v, None, 0.5)
    # each output is (kept keys) * 2 / 50: a multiple of 0.04, mean 1
    assert torch.allclose(out / 0.04, (out / 0.04).round(), atol=1e-4)
    assert 0.9 < out.mean().item() < 1.1 and out.std().item() > 0.05
