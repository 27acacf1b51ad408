"""Our detectors against detrex's own outputs (tests/data/reference/conditional_detr.pt and
deformable_detr.pt, see its README): detrex weights converted by disco_detr.convert.detrex, the
documented toy backbone, eval on the fixture images.

Our detectors mask padding in eval while detrex does not, so batch outputs are compared for image A
(the largest, unpadded) and each image alone is compared with ``expected_single``.
"""
import json
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling import Backbone, ShapeSpec
from torch import nn
from torch.nn import functional as F

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.config import load_config
from disco_detr.convert.detrex import check_against, convert_detrex
from disco_detr.modeling import ConditionalDETR, DeformableDETR
from disco_detr.modeling.detectors.conditional_detr import ConditionalDecoder
from disco_detr.modeling.detectors.deformable_detr import DeformableDecoder, DeformableEncoder
from disco_detr.modeling.layers import DETREncoder

from conftest import REFERENCE, REPO, detrex_fixture_errors

ATOL_LOGITS, ATOL_BOXES = 5e-5, 5e-6  # the README's suggestion; its measured float noise is ~6e-6 / 3e-7



class TinyConvBackbone(Backbone):
    """The fixtures' toy backbone: ``features_L = relu(conv2d(x, W_L, stride=s_L, kernel_size=s_L))``, no bias,
    ``W_L`` stored as ``backbone.<L>.weight`` (C_L, 3, s_L, s_L). levels: {name: (stride, channels)}."""

    def __init__(self, levels: dict[str, tuple[int, int]]):
        super().__init__()
        self.levels = dict(levels)
        for name, (stride, channels) in self.levels.items():
            self.add_module(name, nn.Conv2d(3, channels, stride, stride, bias=False))

    def forward(self, x):
        return {name: F.relu(getattr(self, name)(x)) for name in self.levels}

    def output_shape(self):
        return {name: ShapeSpec(channels=c, stride=s) for name, (s, c) in self.levels.items()}


def _fixture(name):
    return torch.load(os.path.join(REFERENCE, f"{name}.pt"), weights_only=True)


def _toy_backbone(cfg):
    b = cfg["backbone"]
    assert b["type"] == "TinyConvBackbone"
    return TinyConvBackbone({name: (s, c) for name, s, c in zip(b["levels"], b["strides"], b["channels"])})


def _conditional(cfg, backbone):
    d, heads, ffn = cfg["d_model"], cfg["num_heads"], cfg["ffn_dim"]
    assert cfg["position_embedding"]["offset"] == 0.0 and cfg["position_embedding"]["num_pos_feats"] == d // 2
    return ConditionalDETR(
        backbone=backbone, in_feature=cfg["in_features"][0],
        encoder=DETREncoder(cfg["encoder_layers"], d, heads, ffn, 0.0),
        decoder=ConditionalDecoder(cfg["decoder_layers"], d, heads, ffn, 0.0),
        num_classes=cfg["num_classes"], num_queries=cfg["num_queries"], criterion=None,
        pixel_mean=cfg["pixel_mean"], pixel_std=cfg["pixel_std"],
        position_offset=cfg["position_embedding"]["offset"],
        position_temperature=cfg["position_embedding"]["temperature"], size_divisibility=0,
    )


def _deformable(cfg, backbone):
    d, heads, ffn = cfg["d_model"], cfg["num_heads"], cfg["ffn_dim"]
    attn = cfg["deformable_attention"]
    assert not cfg["with_box_refine"] and not cfg["as_two_stage"]
    assert cfg["neck"]["in_features"] == cfg["backbone"]["levels"]
    assert cfg["position_embedding"]["num_pos_feats"] == d // 2
    levels, points = attn["num_levels"], attn["num_points"]
    return DeformableDETR(
        backbone=backbone, in_features=cfg["neck"]["in_features"],
        num_extra_levels=cfg["num_feature_levels"] - len(cfg["neck"]["in_features"]),
        encoder=DeformableEncoder(cfg["encoder_layers"], d, heads, ffn, 0.0, levels, points),
        decoder=DeformableDecoder(cfg["decoder_layers"], d, heads, ffn, 0.0, levels, points),
        num_classes=cfg["num_classes"], num_queries=cfg["num_queries"], criterion=None,
        pixel_mean=cfg["pixel_mean"], pixel_std=cfg["pixel_std"],
        position_offset=cfg["position_embedding"]["offset"],
        position_temperature=cfg["position_embedding"]["temperature"], size_divisibility=0,
    )


# fixture file -> (detrex variant for the converter, builder of our model from the fixture's config)
VARIANTS = {
    "conditional_detr": ("conditional", _conditional),
    "deformable_detr": ("deformable", _deformable),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def converted(request):
    fixture = _fixture(request.param)
    variant, build = VARIANTS[request.param]
    torch.manual_seed(0)
    model = build(fixture["config"], _toy_backbone(fixture["config"])).eval()
    state, report = convert_detrex(fixture["state_dict"], variant, reference=model)
    return request.param, fixture, model, state, report


def test_detrex_outputs_reproduced(converted):
    name, fixture, model, state, report = converted
    assert not report.unmatched and not report.dropped
    aliased = {k for group in fixture["aliased_keys"] for k in group[1:]}
    assert set(report.merged) == aliased  # exactly the shared heads' per-layer copies
    assert len(report.converted) + len(report.merged) == len(fixture["state_dict"]) + sum(
        2 for k in fixture["state_dict"] if "in_proj_" in k)  # each in_proj gives q, k, v
    model.load_state_dict(state, strict=True)
    errors = detrex_fixture_errors(model, fixture)
    print(name, {k: f"{a:.2e} / {b:.2e}" for k, (a, b) in errors.items()})
    for key, (logits, boxes) in errors.items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (name, key, logits, boxes)


def test_converter_names_bad_keys(converted):
    name, fixture, model, _, _ = converted
    variant = VARIANTS[name][0]
    state = dict(fixture["state_dict"])
    with pytest.raises(KeyError, match="transformer.decoder.extra_thing"):
        convert_detrex({**state, "transformer.decoder.extra_thing.weight": torch.zeros(1)}, variant)
    missing = "transformer.encoder.layers.1.ffns.0.layers.1.bias"
    with pytest.raises(KeyError, match="encoder.layers.1.ffn.linear2.bias"):
        convert_detrex({k: v for k, v in state.items() if k != missing}, variant, reference=model)
    bad = {**state, "query_embed.weight" if variant == "conditional" else "query_embedding.weight": torch.zeros(3, 7)}
    with pytest.raises(ValueError, match="query_embed.weight"):
        convert_detrex(bad, variant, reference=model)
    other = "deformable" if variant == "conditional" else "conditional"
    with pytest.raises(KeyError, match="unexpected detrex"):
        convert_detrex(state, other)
    lenient, report = convert_detrex({**state, "foo.bar": torch.zeros(1)}, variant, strict=False)
    assert report.unmatched == ["foo.bar"] and "foo.bar" not in lenient


def test_unshared_deformable_heads_are_refused():
    state = dict(_fixture("deformable_detr")["state_dict"])
    state["class_embed.1.bias"] = state["class_embed.1.bias"] + 1
    with pytest.raises(ValueError, match="class_embed.1.bias"):
        convert_detrex(state, "deformable")
    state = dict(_fixture("deformable_detr")["state_dict"])
    state["transformer.decoder.bbox_embed.0.layers.0.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="box-refinement"):
        convert_detrex(state, "deformable")


def _convert_tool():
    from disco_detr.tooling.convert import convert_detrex

    return convert_detrex


# fixture -> the paper's fine-tuning config of that variant
FINETUNE = {"conditional_detr": "finetune_cond_voc.py", "deformable_detr": "finetune_deformable_ms_voc.py"}


def test_converted_file_loads_into_the_finetuning_config(converted, tmp_path, capsys):
    """tools/convert/convert_detrex.py writes the checkpoint; DisCoCheckpointer loads it into the paper's VOC
    fine-tuning config shrunk to the fixture's sizes, which then reproduces detrex."""
    name, fixture, _, _, _ = converted
    cfg_name = FINETUNE[name]
    src = os.path.join(REFERENCE, f"{name}.pt")
    dst = tmp_path / "converted.pth"
    c = fixture["config"]
    _convert_tool().main(["--variant", VARIANTS[name][0], src, str(dst), "--no-check", "--report", str(tmp_path / "r.json")])
    assert "0 unmatched" in capsys.readouterr().out
    with open(tmp_path / "r.json") as f:
        assert not json.load(f)["unmatched"]

    cfg = load_config(os.path.join(REPO, "configs", cfg_name))
    m = cfg.model
    m.num_classes, m.num_queries = c["num_classes"], c["num_queries"]
    for part, layers in ((m.encoder, c["encoder_layers"]), (m.decoder, c["decoder_layers"])):
        part.update(num_layers=layers, d_model=c["d_model"], num_heads=c["num_heads"],
                    dim_feedforward=c["ffn_dim"], dropout=0.0)
    b = c["backbone"]
    m.backbone = L(TinyConvBackbone)(levels={n: (s, ch) for n, s, ch in zip(b["levels"], b["strides"], b["channels"])})
    model = instantiate(m).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # everything must come from the file
    DisCoCheckpointer(model).load(str(dst))
    check_against(torch.load(dst, weights_only=True)["model"], model)
    for key, (logits, boxes) in detrex_fixture_errors(model, fixture).items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (name, key, logits, boxes)


def test_cli_checks_against_the_config_model(tmp_path):
    """Without --no-check the tool builds the variant's paper config (ResNet-50 on the meta device) and names
    what the toy fixture lacks; nothing is written."""
    dst = tmp_path / "out.pth"
    with pytest.raises(SystemExit, match="missing keys.*backbone.res2"):
        _convert_tool().main(["--variant", "deformable", os.path.join(REFERENCE, "deformable_detr.pt"), str(dst)])
    assert not dst.exists()
