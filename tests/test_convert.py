import torch
import torchvision

from disco_detr.convert.torchvision_resnet import torchvision_resnet_to_detectron2
from disco_detr.modeling import build_resnet


def test_torchvision_resnet50_converts_exactly():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    for m in tv.modules():  # non-trivial BN statistics so a wrong mapping shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    state = {f"module.{k}": v for k, v in tv.state_dict().items()}  # SwAV-style wrapper
    state["module.projection_head.0.weight"] = torch.zeros(3)
    converted, dropped = torchvision_resnet_to_detectron2(state, prefix="")
    assert "module.fc.weight" in dropped and "module.projection_head.0.weight" in dropped
    d2 = build_resnet(depth=50, out_features=("res5",), freeze_at=0, norm="FrozenBN").eval()
    missing, unexpected = d2.load_state_dict(converted, strict=False)
    assert not unexpected and not [k for k in missing if "num_batches_tracked" not in k]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(tv.children())[:-2])(x)
        got = d2(x)["res5"]
    # build_resnet folds each frozen BN into its convolution (FrozenBNConv2d): float rounding differs from
    # torchvision's conv-then-BN by ~1e-6 per layer, so the tolerance follows the output's scale (a wrong
    # key mapping is off by O(1) of it)
    assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max().item(), rtol=1e-4)
