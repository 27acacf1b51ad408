"""HGNetV2 backbone (timm's layers) against transformers' HGNetV2Backbone, and its checkpoint converter.

Reference: tests/data/reference/hgnetv2.pt (make_hgnetv2_fixture.py beside it; transformers 5.25.0): two tiny
backbones' weights in transformers' layout with their feature maps, and the key -> shape tables of B0-B5 built
by transformers from the D-FINE release's architecture table. transformers is not needed here.
"""
import os

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from disco_detr.convert.hgnetv2 import convert_hgnetv2, hgnetv2_shapes
from disco_detr.modeling import HGNetV2, build_hgnetv2
from disco_detr.modeling.backbone import set_backbone_checkpointing

from conftest import REFERENCE, REPO

pytest.importorskip("timm")
FIXTURE = os.path.join(REFERENCE, "hgnetv2.pt")
LEVELS = ("stem", "stage1", "stage2", "stage3", "stage4")


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def _tiny(entry, norm="FrozenBN", freeze_at=0):
    model = HGNetV2(arch=entry["arch"], use_lab=entry["use_lab"], out_features=LEVELS, norm=norm,
                    freeze_at=freeze_at)
    converted, dropped = convert_hgnetv2(entry["state_dict"], "hf", reference=model)
    assert all(k.endswith("num_batches_tracked") for k in dropped)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return model.eval()


@pytest.mark.parametrize("kind", ["lab", "plain"])
@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_tiny_features_equal_transformers(fixture, kind, norm):
    entry = fixture["tiny"][kind]
    model = _tiny(entry, norm)
    with torch.no_grad():
        out = model(entry["pixel_values"])
    for name in LEVELS:
        ref = entry["features"][name]
        assert out[name].shape == ref.shape, name
        assert model.output_shape()[name].channels == ref.shape[1]
        scale = ref.abs().max().item()
        assert scale > 0.1, f"{name}: a trivial reference proves nothing"
        torch.testing.assert_close(out[name], ref, atol=1e-5 * scale, rtol=1e-5, msg=name)


def test_tiny_lab_blocks_matter(fixture):
    """The learnable affine blocks are loaded and used: resetting them moves the output."""
    entry = fixture["tiny"]["lab"]
    model = _tiny(entry)
    labs = [m for m in model.modules() if hasattr(m, "scale") and isinstance(m.scale, nn.Parameter)]
    assert len(labs) > 10
    with torch.no_grad():
        for m in labs:
            m.scale.fill_(1.0)
            m.bias.fill_(0.0)
        out = model(entry["pixel_values"])["stage4"]
    assert (out - entry["features"]["stage4"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["B0", "B1", "B2", "B3", "B4", "B5"])
def test_real_size_layers_equal_dfine_table(fixture, name):
    """timm's B0-B5 have transformers' layers (built from the D-FINE release's table) key for key, shape for shape."""
    entry = fixture["real_size"][name]
    state = {k: torch.empty(s, device="meta") for k, s in entry["shapes"].items()}
    converted, _ = convert_hgnetv2(state, "hf")
    assert {k: tuple(v.shape) for k, v in converted.items()} == hgnetv2_shapes(name, entry["use_lab"])
    with torch.device("meta"):
        ours = HGNetV2(name, use_lab=entry["use_lab"], out_features=("stage4",), norm="BN")
    assert sum(p.numel() for p in ours.parameters()) == entry["num_params"]


def test_default_lab_and_output_shapes():
    with torch.device("meta"):
        b0, b4 = HGNetV2("B0"), HGNetV2("B4")
    assert b0.use_lab and not b4.use_lab
    shapes = {n: (s.channels, s.stride) for n, s in b4.output_shape().items()}
    assert shapes == {"stage2": (512, 8), "stage3": (1024, 16), "stage4": (2048, 32)}
    assert {n: s.channels for n, s in b0.output_shape().items()} == {"stage2": 256, "stage3": 512, "stage4": 1024}
    with pytest.raises(ValueError, match="out_features"):
        HGNetV2("B0", out_features=("res5",))


def test_freezing_and_norms(fixture):
    entry = fixture["tiny"]["plain"]
    model = _tiny(entry, norm="BN", freeze_at=2).train()
    frozen, trained = [model.stem, model.stages[0]], list(model.stages[1:])
    assert all(not p.requires_grad for part in frozen for p in part.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for part in frozen for m in part.modules())
    assert all(p.requires_grad for part in trained for p in part.parameters())
    assert all(isinstance(m, nn.BatchNorm2d) for part in trained for m in part.modules()
               if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)))
    out = model(entry["pixel_values"].repeat(2, 1, 1, 1))
    out["stage4"].sum().backward()
    assert model.stages[1].blocks[0].layers[0].conv.weight.grad.abs().sum() > 0
    assert model.stem.stem1.conv.weight.grad is None
    frozen_all = build_hgnetv2(arch=entry["arch"], use_lab=False, freeze_at=0, norm="FrozenBN")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen_all.modules())


def test_activation_checkpointing_same_outputs(fixture):
    entry = fixture["tiny"]["lab"]
    model = _tiny(entry)
    x = entry["pixel_values"]
    plain = model(x)["stage4"]
    set_backbone_checkpointing(model, True)
    torch.testing.assert_close(model(x)["stage4"], plain)


def test_dfine_release_keys_convert():
    """A release detector checkpoint: ``backbone.``-prefixed HGNetv2 keys among the encoder / decoder keys."""
    ours = hgnetv2_shapes("B0", True)
    state = {f"backbone.{k}": torch.zeros(s) for k, s in ours.items()}
    state["backbone.stem.stem1.bn.num_batches_tracked"] = torch.tensor(0)
    state["decoder.dec_score_head.0.weight"] = torch.zeros(80, 256)
    converted, dropped = convert_hgnetv2(state, "dfine", prefix="backbone.")
    assert set(converted) == {f"backbone.{k}" for k in ours}
    assert set(dropped) == {"backbone.stem.stem1.bn.num_batches_tracked", "decoder.dec_score_head.0.weight"}
    del state["backbone.stages.3.blocks.0.aggregation.1.bn.bias"]
    with pytest.raises(KeyError, match="aggregation.1.bn.bias"):
        convert_hgnetv2(state, "dfine")


@pytest.mark.parametrize("size", ["S", "M", "L", "X"])
def test_dfine_size_table_backbones_feed_their_encoders(size):
    """configs/common/models/d_fine_hgnetv2_sizes.py: each size's backbone gives the encoder's in_channels."""
    table = LazyConfig.load(os.path.join(REPO, "configs", "common", "models", "d_fine_hgnetv2_sizes.py"))
    row = table.DFINE_HGNETV2_SIZES[size]
    with torch.device("meta"):
        backbone = build_hgnetv2(**row.backbone)
    shapes = backbone.output_shape()
    assert tuple(s.channels for s in shapes.values()) == tuple(row.encoder.in_channels)
    assert [s.stride for s in shapes.values()] == [8, 16, 32] and len(row.decoder.num_points) == 3


def test_convert_tool_writes_a_loadable_backbone(fixture, tmp_path):
    """tools/convert/convert_hgnetv2.py on a transformers-layout file: the output loads into our backbone."""
    from disco_detr.tooling.convert.convert_hgnetv2 import main

    entry = fixture["tiny"]["lab"]
    src, dst = tmp_path / "hf.pth", tmp_path / "out" / "ours.pth"
    torch.save({"model": {f"model.backbone.model.{k}": v for k, v in entry["state_dict"].items()}}, src)
    with pytest.raises(SystemExit, match="hf.pth"):  # a tiny backbone is none of B0-B5: the error names the file
        main([str(src), str(dst), "--source", "hf"])
    B0 = {k: torch.randn(s) for k, s in hgnetv2_shapes("B0", True).items()}
    torch.save({"model": {f"model.backbone.model.{k}": v for k, v in _to_hf(B0).items()}}, src)
    main([str(src), str(dst), "--source", "hf"])
    written = torch.load(dst, weights_only=True)["model"]
    assert set(written) == {f"backbone.{k}" for k in B0} and torch.equal(written["backbone.stem.stem1.conv.weight"],
                                                                         B0["stem.stem1.conv.weight"])


def _to_hf(state):
    """Our names -> transformers' (the inverse of the converter's "hf" rules, written out for the test)."""
    out = {}
    for k, v in state.items():
        k = k.replace(".conv.", ".convolution.").replace(".bn.", ".normalization.")
        k = k.replace("stem.", "embedder.", 1) if k.startswith("stem.") else k.replace("stages.", "encoder.stages.", 1)
        out[k] = v
    return out


def test_dfine_hgnetv2_configs_have_the_release_parameter_counts():
    """configs/common/models/d_fine_hgnetv2_{s,m,l}.py build detectors whose parameter counts equal the release
    README's (10 / 19 / 31 M, rounded to the million there)."""
    from detectron2.config import instantiate

    models = os.path.join(REPO, "configs", "common", "models")
    table = LazyConfig.load(os.path.join(models, "d_fine_hgnetv2_sizes.py"))
    for size in ("s", "m", "l"):
        cfg = LazyConfig.load(os.path.join(models, f"d_fine_hgnetv2_{size}.py"))
        reported = table.DFINE_HGNETV2_SIZES[size.upper()]["reported"]["params_m"]
        count = sum(p.numel() for p in instantiate(cfg.model).parameters()) / 1e6
        assert abs(count - reported) < 0.6, (size, count, reported)
