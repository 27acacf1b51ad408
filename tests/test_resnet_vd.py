"""ResNet-vd backbone and its checkpoint converters.

References: timm's ``resnet50d`` (an independent ResNet-50-vd implementation), the RT-DETR
fixture's backbone feature maps (HuggingFace transformers' ResNet-vd), and key layouts of the
RT-DETR release / HF written out below from their descriptions.
"""
import math
import os

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d

from disco_detr.convert.resnet_vd import convert_resnet_vd, infer_resnet_vd_config, unwrap_state_dict
from disco_detr.modeling.resnet_vd import RESNET50_VD_NUM_PARAMS, ResNetVd, build_resnet_vd

from conftest import REFERENCE

FIXTURE = os.path.join(REFERENCE, "rt_detr.pt")
ALL = ("res2", "res3", "res4", "res5")
TINY = dict(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1), widths=(16, 32, 64, 128))
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def _randomise_bn(model):
    """Non-trivial BN statistics and affine so that a misplaced BN tensor changes the outputs."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) * 0.5 + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean = torch.randn(c, generator=g) * 0.1
            m.running_var = torch.rand(c, generator=g) + 0.5


def _num_params(model):
    """Parameters plus the affine buffers of frozen BNs (which are parameters in an ordinary BN)."""
    frozen = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, FrozenBatchNorm2d))
    return sum(p.numel() for p in model.parameters()) + frozen


# ---------------------------------------------------------------- timm resnet50d


@pytest.fixture(scope="module")
def r50():
    """One ResNet-50-vd with every output, shared by the tests (each loads the weights it needs)."""
    return build_resnet_vd(50, out_features=("stem",) + ALL, freeze_at=0).eval()


@pytest.fixture(scope="module")
def timm_r50d():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet50d", pretrained=False).eval()
    _randomise_bn(model)
    return model


def _timm_features(model, x):
    feats = {}
    hooks = [getattr(model, f"layer{i}").register_forward_hook(lambda m, i_, o, n=f"res{i + 1}": feats.__setitem__(n, o))
             for i in range(1, 5)]
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return feats


def test_timm_resnet50d_converts_and_matches(timm_r50d, r50):
    state = timm_r50d.state_dict()
    converted, dropped = convert_resnet_vd(state, "timm")
    assert set(dropped) == {k for k in state if k.startswith("fc.") or k.endswith("num_batches_tracked")}
    r50.load_state_dict(converted, strict=True)
    torch.manual_seed(2)
    for size in ((64, 64), (50, 70)):  # 50x70 has odd maps, exercising the ceil-mode average pool
        x = torch.randn(1, 3, *size)
        ref = _timm_features(timm_r50d, x)
        with torch.no_grad():
            got = r50(x)
        for name in ALL:
            assert got[name].shape == ref[name].shape
            scale = ref[name].abs().max()
            assert scale > 0
            assert (got[name] - ref[name]).abs().max() <= 1e-4 * scale, (size, name)


def test_resnet50_vd_parameter_count(timm_r50d, r50):
    timm_count = sum(p.numel() for n, p in timm_r50d.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in timm_r50d.fc.parameters()) == 2048 * 1000 + 1000
    assert timm_count == RESNET50_VD_NUM_PARAMS == 23_527_264
    assert _num_params(r50) == RESNET50_VD_NUM_PARAMS
    plain_bn = build_resnet_vd(50, out_features=ALL, freeze_at=0, norm="BN")
    assert sum(p.numel() for p in plain_bn.parameters()) == RESNET50_VD_NUM_PARAMS


# ---------------------------------------------------------------- architecture


def test_resnet50_vd_output_strides_and_channels(r50):
    model = r50
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "stem": (64, 4), "res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    assert [len(getattr(model, n)) for n in ALL] == [3, 4, 6, 3]
    assert tuple(model.stem.conv1.weight.shape) == (32, 3, 3, 3) and model.stem.conv1.stride == (2, 2)
    assert tuple(model.stem.conv3.weight.shape) == (64, 32, 3, 3)
    block = model.res3[0]  # stride on the 3x3 conv, average-pool shortcut
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.shortcut.stride == (1, 1)
    assert block.shortcut_pool is not None and block.shortcut_pool.ceil_mode
    assert model.res2[0].shortcut_pool is None and model.res2[0].shortcut is not None
    assert all(b.shortcut is None for n in ALL for b in getattr(model, n)[1:])
    assert all(isinstance(m, FrozenBatchNorm2d) for n, m in model.named_modules() if n.endswith("norm"))
    for h, w in ((64, 64), (33, 47)):
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w))
        for name, spec in shapes.items():
            assert out[name].shape == (1, spec.channels, math.ceil(h / spec.stride), math.ceil(w / spec.stride))


def test_unused_stages_are_not_built():
    model = ResNetVd(**TINY, out_features=("res3",))
    assert hasattr(model, "res3") and not hasattr(model, "res4") and not hasattr(model, "res5")
    assert list(model.output_shape()) == ["res3"]
    with pytest.raises(ValueError, match="out_features"):
        ResNetVd(**TINY, out_features=("res6",))


@pytest.mark.parametrize("freeze_at,frozen", [(0, ()), (1, ("stem",)), (2, ("stem", "res2")),
                                              (3, ("stem", "res2", "res3")), (5, ("stem",) + ALL)])
def test_freeze_at(freeze_at, frozen):
    torch.manual_seed(0)
    model = ResNetVd(**TINY, out_features=ALL, freeze_at=freeze_at)
    for name in ("stem",) + ALL:
        flags = {p.requires_grad for p in getattr(model, name).parameters()}
        assert flags == ({False} if name in frozen else {True}), name
    out = model(torch.randn(2, 3, 32, 32, requires_grad=True))  # the input needs grad when all is frozen
    sum(v.sum() for v in out.values()).backward()
    for name in ("stem",) + ALL:
        grads = [p.grad for p in getattr(model, name).parameters()]
        if name in frozen:
            assert all(g is None for g in grads), name
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    # frozen BN: train mode computes what eval mode computes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model.train()(x)["res5"]
        b = model.eval()(x)["res5"]
    assert torch.equal(a, b)


# ---------------------------------------------------------------- RT-DETR fixture (HF and release layouts)


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def _check_fixture_outputs(state, fixture):
    model = ResNetVd(**TINY, out_features=("res3", "res4", "res5")).eval()
    model.load_state_dict(state, strict=True)
    for i, pixels in enumerate(fixture["pixel_values"]):
        with torch.no_grad():
            out = model(pixels)
        expected = fixture["expected"][i]["backbone_feature_maps"]
        assert len(expected) == 3
        for name, ref in zip(("res3", "res4", "res5"), expected):
            assert out[name].shape == ref.shape
            assert (out[name] - ref).abs().max() <= 5e-5, (i, name)
    return model


def test_fixture_backbone_hf_layout(fixture):
    sd = fixture["state_dict"]
    converted, dropped = convert_resnet_vd(sd, "hf")
    backbone = [k for k in sd if k.startswith("model.backbone.model.")]
    assert len(converted) == len(backbone) == 95
    assert set(dropped) == set(sd) - set(backbone)
    assert infer_resnet_vd_config(converted) == dict(**TINY, bottleneck_ratio=4, in_channels=3)
    _check_fixture_outputs(converted, fixture)


def test_fixture_backbone_release_layout(fixture):
    sd = fixture["state_dict"]
    hf_converted, _ = convert_resnet_vd(sd, "hf")
    # the whole model in the release's layout; q/k/v rows (rows != "") are stacked there: leave them out
    release = {rel: sd[hf] for hf, rel, rows in fixture["release_key_map"] if not rows}
    assert sum(k.startswith("backbone.") for k in release) == 95
    converted, dropped = convert_resnet_vd(release, "rtdetr", prefix="")
    assert set(dropped) == {k for k in release if not k.startswith("backbone.")}
    assert converted.keys() == hf_converted.keys()
    assert all(converted[k] is hf_converted[k] for k in converted)
    _check_fixture_outputs(converted, fixture)


# ---------------------------------------------------------------- R50 key layouts from their descriptions


def _release_presnet50_layout():
    """(release key, our key, shape) of PResNet depth 50, variant d, from the release's description:
    stem conv1.conv1_{1,2,3} (3->32->32->64), stages res_layers.{0..3} with ch_out 64/128/256/512 x 4."""
    rows = []

    def conv_norm(rel, ours, c_out, c_in, k):
        rows.append((f"{rel}.conv.weight", f"{ours}.weight", (c_out, c_in, k, k)))
        rows.extend((f"{rel}.norm.{s}", f"{ours}.norm.{s}", (c_out,)) for s in BN_SUFFIXES)

    for n, (c_in, c_out) in enumerate(((3, 32), (32, 32), (32, 64)), start=1):
        conv_norm(f"conv1.conv1_{n}", f"stem.conv{n}", c_out, c_in, 3)
    ch_in = 64
    for s, (ch_out, count) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(count):
            rel, ours = f"res_layers.{s}.blocks.{b}", f"res{s + 2}.{b}"
            conv_norm(f"{rel}.branch2a", f"{ours}.conv1", ch_out, ch_in, 1)
            conv_norm(f"{rel}.branch2b", f"{ours}.conv2", ch_out, ch_out, 3)
            conv_norm(f"{rel}.branch2c", f"{ours}.conv3", ch_out * 4, ch_out, 1)
            if b == 0:
                short = f"{rel}.short" if s == 0 else f"{rel}.short.conv"  # s > 0: after the 'pool' module
                conv_norm(short, f"{ours}.shortcut", ch_out * 4, ch_in, 1)
            ch_in = ch_out * 4
    return rows


def _hf_rtdetr_resnet50_layout():
    """(HF key, our key, shape) of transformers' RTDetrResNet-50 (embedding 64, hidden 256..2048)."""
    rows = []

    def conv_norm(hf, ours, c_out, c_in, k):
        rows.append((f"{hf}.convolution.weight", f"{ours}.weight", (c_out, c_in, k, k)))
        rows.extend((f"{hf}.normalization.{s}", f"{ours}.norm.{s}", (c_out,)) for s in BN_SUFFIXES)

    for n, (c_in, c_out) in enumerate(((3, 32), (32, 32), (32, 64))):
        conv_norm(f"embedder.embedder.{n}", f"stem.conv{n + 1}", c_out, c_in, 3)
    c_in = 64
    for s, (out, count) in enumerate(zip((256, 512, 1024, 2048), (3, 4, 6, 3))):
        for b in range(count):
            hf, ours = f"encoder.stages.{s}.layers.{b}", f"res{s + 2}.{b}"
            for k, (co, ci, ks) in enumerate(((out // 4, c_in, 1), (out // 4, out // 4, 3), (out, out // 4, 1))):
                conv_norm(f"{hf}.layer.{k}", f"{ours}.conv{k + 1}", co, ci, ks)
            if b == 0:
                conv_norm(f"{hf}.shortcut" if s == 0 else f"{hf}.shortcut.1", f"{ours}.shortcut", out, c_in, 1)
            c_in = out
    return rows


@pytest.mark.parametrize("source,layout,prefix", [("rtdetr", _release_presnet50_layout, "ema.module.backbone."),
                                                  ("hf", _hf_rtdetr_resnet50_layout, "model.backbone.model.")])
def test_r50_layout_key_by_key(source, layout, prefix, r50):
    rows = layout()
    g = torch.Generator().manual_seed(0)
    state = {prefix + src: torch.randn(shape, generator=g) for src, _, shape in rows}
    state[prefix + rows[1][0].replace("weight", "num_batches_tracked")] = torch.tensor(5)
    state["ema.module.decoder.x.weight" if source == "rtdetr" else "model.decoder.x.weight"] = torch.zeros(2)
    converted, dropped = convert_resnet_vd(state, source, prefix="backbone.")
    assert len(dropped) == 2
    assert sorted(converted) == sorted(f"backbone.{ours}" for _, ours, _ in rows)
    for src, ours, _ in rows:
        assert converted[f"backbone.{ours}"] is state[prefix + src]
    r50.load_state_dict({k[len("backbone."):]: v for k, v in converted.items()}, strict=True)
    assert _num_params(r50) == sum(math.prod(s) for src, _, s in rows if src.endswith(("weight", "bias")))


# ---------------------------------------------------------------- errors name the key


def _tiny_release_state():
    torch.manual_seed(0)
    model = ResNetVd(**TINY, out_features=ALL)
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():  # our name -> release name (inverse of the converter, written out by hand)
        k = k.replace("stem.conv", "conv1.conv1_").replace(".norm.", ".NORM.")
        parts = k.split(".")
        if parts[0].startswith("res"):
            s, b, layer = int(parts[0][3:]) - 2, parts[1], parts[2]
            name = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}.get(layer)
            if name is None:  # shortcut
                name = "short" if s == 0 else "short.conv"
            k = f"res_layers.{s}.blocks.{b}.{name}." + ".".join(parts[3:])
        k = k.replace("NORM.", "norm.")
        if not k.split(".")[-2] == "norm":
            k = k[: -len("weight")] + "conv.weight"
        out[k] = v
    return model, out


def test_tiny_release_roundtrip_and_errors():
    model, state = _tiny_release_state()
    converted, dropped = convert_resnet_vd(state, "rtdetr")
    assert not dropped
    assert all(torch.equal(converted[k], v) for k, v in model.state_dict().items())
    with pytest.raises(KeyError, match=r"res3\.0\.conv2\.norm\.running_var"):
        convert_resnet_vd({k: v for k, v in state.items() if k != "res_layers.1.blocks.0.branch2b.norm.running_var"},
                          "rtdetr")
    with pytest.raises(KeyError, match=r"res_layers\.0\.blocks\.0\.branch2d\.conv\.weight"):
        convert_resnet_vd({**state, "res_layers.0.blocks.0.branch2d.conv.weight": torch.zeros(1)}, "rtdetr")
    extra = {**state, "res_layers.1.blocks.0.short.weight": torch.zeros(1)}  # maps nowhere
    with pytest.raises(KeyError, match=r"res_layers\.1\.blocks\.0\.short\.weight"):
        convert_resnet_vd(extra, "rtdetr")
    bad = dict(state)
    bad["res_layers.2.blocks.0.branch2c.conv.weight"] = torch.zeros(64, 16, 3, 3)
    with pytest.raises(ValueError, match=r"res_layers\.2\.blocks\.0\.branch2c\.conv\.weight"):
        convert_resnet_vd(bad, "rtdetr")
    with pytest.raises(KeyError, match="no 'rtdetr' backbone keys under the prefix 'x.'"):
        convert_resnet_vd(state, "rtdetr", source_prefix="x.")
    with pytest.raises(KeyError, match="not a 'timm'"):
        convert_resnet_vd(state, "timm")
    with pytest.raises(KeyError, match="unknown source"):
        convert_resnet_vd(state, "paddle")
    # checked against an explicit reference: a model with other widths rejects the shapes
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_resnet_vd(state, "rtdetr", reference=ResNetVd(**{**TINY, "widths": (32, 32, 64, 128)}, out_features=ALL))


def test_unwrap_state_dict():
    t = {"a.weight": torch.zeros(1)}
    assert unwrap_state_dict({"model": t, "optimizer": {}, "last_epoch": 3}) == t
    assert unwrap_state_dict({"ema": {"module": t, "updates": 7}, "model": {}}, "ema.module") == t
    with pytest.raises(KeyError, match="ema"):
        unwrap_state_dict({"model": t}, "ema.module")


def test_convert_cli(tmp_path, fixture):
    from disco_detr.tooling.convert import convert_resnet_vd as cli

    src, dst = tmp_path / "rtdetr.pth", tmp_path / "out" / "r50vd_d2.pth"
    torch.save({"model": {rel: fixture["state_dict"][hf] for hf, rel, rows in fixture["release_key_map"] if not rows}},
               src)
    cli.main([str(src), str(dst), "--source", "rtdetr"])
    saved = torch.load(dst, weights_only=True)["model"]
    assert all(k.startswith("backbone.") for k in saved)
    _check_fixture_outputs({k[len("backbone."):]: v for k, v in saved.items()}, fixture)
    with pytest.raises(SystemExit, match="rtdetr.pth.*not a 'hf'"):  # wrong layout: the message names the file
        cli.main([str(src), str(dst), "--source", "hf"])
    missing = tmp_path / "nope.pth"
    with pytest.raises(SystemExit, match="nope.pth"):
        cli.main([str(missing), str(dst), "--source", "timm"])
