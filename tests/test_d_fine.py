"""D-FINE (detectors/d_fine.py, criterion/d_fine.py): the transformers fixture number for number (every layer's
logits, boxes and bin logits, the initial boxes, the query selection, and every loss term under the fixture's
fixed matching), the converters, the distribution maths by hand, and a training step with denoising."""
import os

import pytest
import torch
from detectron2.structures import ImageList

from disco_detr.convert.d_fine import convert_dfine
from disco_detr.modeling import DFINE, HungarianMatcher, build_resnet_vd
from disco_detr.modeling.criterion import DFineCriterion
from disco_detr.modeling.detectors.d_fine import DFineDecoder
from disco_detr.modeling.layers import distribution
from disco_detr.modeling.layers.hybrid_encoder import HybridEncoder

from conftest import REFERENCE

FIXTURE = os.path.join(REFERENCE, "d_fine.pt")


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def _fixture_model(criterion=None, num_denoising=100):
    """The fixture's tiny D-FINE (its README): ResNet-vd stem 4/4/8, widths 16-128, d 32, 20 queries, 3 layers,
    points (3, 6, 3), LQE hidden 16."""
    backbone = build_resnet_vd(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1), widths=(16, 32, 64, 128), freeze_at=0)
    encoder = HybridEncoder((32, 64, 128), 32, 4, 64, 0.0, expansion=0.5, depth_mult=0.34, fusion="gelan")
    decoder = DFineDecoder(3, 32, 4, 64, 0.0, (3, 6, 3))
    return DFINE(backbone=backbone, in_features=("res3", "res4", "res5"), encoder=encoder, decoder=decoder,
                 num_classes=5, num_queries=20, criterion=criterion, num_denoising=num_denoising, lqe_hidden_dim=16)


def _criterion():
    return DFineCriterion(5, HungarianMatcher(2.0, 5.0, 2.0, focal_alpha=0.25, focal_gamma=2.0))


@pytest.fixture(scope="module")
def decoded(fixture):
    model = _fixture_model().eval()
    state, dropped = convert_dfine(fixture["state_dict"], "hf", model)
    assert sorted(dropped) == sorted(k for k in fixture["state_dict"]
                                     if k.startswith(("class_embed.", "bbox_embed.")) or k.endswith(
                                         ("decoder.up", "decoder.reg_scale", "num_points_scale")))
    model.load_state_dict(state, strict=True)
    pixel_values = fixture["pixel_values"]
    images = ImageList(pixel_values, [tuple(pixel_values.shape[-2:])] * len(pixel_values))
    with torch.no_grad():
        encoded = model.encode(images)
        return encoded, model.decode(encoded, model.initial_queries(encoded))


def test_matches_the_transformers_fixture(fixture, decoded):
    exp = fixture["expected"]
    encoded, out = decoded
    assert exp["enc_topk_gap"] > 1e-4
    assert torch.equal(encoded.extras["topk_indices"], exp["enc_topk_indices"])
    assert torch.allclose(encoded.extras["enc_logits"], exp["enc_topk_logits"], atol=5e-5, rtol=0)
    assert torch.allclose(encoded.extras["enc_boxes"], exp["enc_topk_bboxes"], atol=7e-6, rtol=0)
    for ours, theirs in zip(encoded.level_maps(encoded.memory), exp["encoder_last_hidden_state"]):
        assert torch.allclose(ours, theirs, atol=5e-5, rtol=0)
    # transformers stacks (pre, layer 0, ..., layer L-1) on axis 1; ours is (L, B, ...) plus the pre fields
    assert torch.allclose(out.pre_logits, exp["logits"][:, 0], atol=5e-5, rtol=0)
    assert torch.allclose(out.pre_boxes, exp["boxes"][:, 0], atol=7e-6, rtol=0)
    assert torch.allclose(out.logits.transpose(0, 1), exp["logits"][:, 1:], atol=5e-5, rtol=0)
    assert torch.allclose(out.boxes.transpose(0, 1), exp["boxes"][:, 1:], atol=7e-6, rtol=0)
    assert torch.allclose(out.corners.transpose(0, 1), exp["corners"], atol=5e-5, rtol=0)
    assert torch.allclose(out.hidden, exp["hidden"], atol=5e-5, rtol=0)
    assert torch.allclose(out.initial, exp["initial"][:, 0], atol=7e-6, rtol=0)
    # the LQE shift and the distribution refinement both matter here
    assert (out.logits[0] - out.pre_logits).abs().max() > 1e-2
    assert (out.boxes[-1] - out.initial).abs().max() > 1e-3


def test_every_loss_term_matches_the_fixture(fixture, decoded):
    encoded, out = decoded
    criterion = _criterion()
    targets, indices, num_boxes = fixture["targets"], fixture["indices"], fixture["num_boxes"]
    exp = fixture["losses"]
    layers = out.logits.shape[0]
    for layer in range(layers):
        got = criterion.layer_losses(out.logits[layer], out.boxes[layer], targets, num_boxes, indices)
        got.update(criterion.local_losses(out.corners[layer], out.initial, out.boxes[layer], targets, num_boxes,
                                          indices, out.corners[-1], out.logits[-1]))
        assert set(got) == set(exp[f"layer{layer}"])
        for name, value in got.items():
            assert torch.allclose(value, exp[f"layer{layer}"][name], atol=1e-5, rtol=1e-5), (layer, name)
    for name, (logits, boxes) in {"pre": (out.pre_logits, out.pre_boxes),
                                  "enc": (encoded.extras["enc_logits"], encoded.extras["enc_boxes"])}.items():
        got = criterion.layer_losses(logits, boxes, targets, num_boxes, indices)
        for term, value in got.items():
            assert torch.allclose(value, exp[name][term], atol=1e-5, rtol=1e-5), (name, term)
    assert exp["layer0"]["loss_ddf"] > 1.0 and exp["layer0"]["loss_fgl"] > 0.1


def test_weighting_function_by_hand():
    w = distribution.weighting_function(32, 0.5, 4.0)
    a = 0.5 * 4.0
    step = (a + 1) ** (2 / 30)
    assert w.shape == (33,) and w[16] == 0 and w[0] == -2 * a and w[-1] == 2 * a
    assert torch.allclose(w[17], torch.tensor(step - 1)) and torch.allclose(w[15], torch.tensor(1 - step))
    assert torch.allclose(w[31], torch.tensor(step ** 15 - 1)) and torch.allclose(w, -w.flip(0))
    assert (w.diff() > 0).all()


def test_distances_round_trip_and_bin_targets():
    anchor = torch.tensor([[0.5, 0.4, 0.2, 0.3], [0.3, 0.6, 0.1, 0.05]])
    box = torch.tensor([[0.35, 0.2, 0.62, 0.58], [0.26, 0.57, 0.36, 0.64]])
    d = distribution.box_to_distance(anchor, box, 4.0)
    back = distribution.distance_to_box(anchor, d, 4.0)
    assert torch.allclose(back, torch.cat([(box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2]], 1), atol=1e-6)
    values = torch.tensor([-2.0, -1.0, 0.0, 0.5, 2.0])
    left, right = distribution.distribution_targets(torch.tensor([-3.0, -1.0, 0.25, 0.4, 2.0, 5.0]), values)
    assert left.tolist() == [0, 1, 2, 2, 3, 3]
    assert torch.allclose(right, torch.tensor([0.0, 0.0, 0.5, 0.8, 1.0, 1.0]))


def test_train_step_with_denoising_has_every_loss_and_gradient(fixture):
    torch.manual_seed(0)
    model = _fixture_model(_criterion(), num_denoising=8)
    model.load_state_dict(convert_dfine(fixture["state_dict"], "hf", model)[0])   # at init every layer's bins are 0
    model.train()
    batch = [{"image": fixture["images"][i], "instances": _instances(fixture["targets"][i], (96, 128))}
             for i in range(2)]
    losses = model(batch)
    names = {"loss_vfl", "loss_bbox", "loss_giou", "loss_fgl", "loss_ddf"}
    for suffix in ("", "_0", "_1", "_dn", "_dn_0", "_dn_1"):
        assert {n + suffix for n in names} <= set(losses)
    for suffix in ("_pre", "_enc", "_dn_pre"):
        assert {n + suffix for n in ("loss_vfl", "loss_bbox", "loss_giou")} <= set(losses)
    assert losses["loss_ddf"] == 0 and losses["loss_ddf_0"] > 0 and losses["loss_fgl_dn"] > 0
    sum(losses.values()).backward()
    for name in ("pre_bbox_head.layers.0.weight", "lqe_layers.0.reg_conf.layers.0.weight",
                 "bbox_embed.0.layers.2.weight", "decoder.layers.0.gateway.gate.weight",
                 "decoder.layers.1.cross_attn.sampling_offsets.weight", "denoising_class_embed.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # a batch without boxes keeps the same loss keys (zeros for the denoising ones)
    empty = [{"image": fixture["images"][0], "instances": _instances({"boxes": torch.zeros(0, 4),
                                                                      "labels": torch.zeros(0, dtype=torch.long)},
                                                                     (96, 128))}]
    assert set(model(empty)) == set(losses)


def _instances(target, hw):
    from detectron2.structures import Boxes, Instances

    h, w = hw
    b = target["boxes"]
    xyxy = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1) * torch.tensor([w, h, w, h])
    inst = Instances(hw)
    inst.gt_boxes, inst.gt_classes = Boxes(xyxy), target["labels"]
    return inst


def test_converter_rejects_wrong_constants_and_unknown_keys(fixture):
    model = _fixture_model()
    bad = dict(fixture["state_dict"])
    bad["model.decoder.reg_scale"] = torch.tensor([3.0])
    with pytest.raises(ValueError, match="reg_scale"):
        convert_dfine(bad, "hf", model)
    bad = dict(fixture["state_dict"], **{"model.decoder.extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="extra"):
        convert_dfine(bad, "hf", model)


def test_pretraining_losses_distil_without_boxes_and_train_the_initial_boxes(fixture):
    """DisCo / DETReg hand their matching to ``pretraining_losses``: FGL and DDF per matched layer, L1 + GIoU of
    the initial boxes under layer 0's matching; DDF's unmatched part needs no box at all."""
    model = _fixture_model(num_denoising=0)
    model.load_state_dict(convert_dfine(fixture["state_dict"], "hf", model)[0], strict=False)
    model.eval()   # the fixture's BN statistics (so that the fixture's matching overlaps); gradients still flow
    images = ImageList(fixture["pixel_values"], [(96, 128)] * 2)
    encoded = model.encode(images)
    decoded = model.decode(encoded, model.initial_queries(encoded))
    targets = fixture["targets"]
    matches = {suffix: fixture["indices"] for suffix in ("_enc", "_0", "_1", "")}
    losses = model.pretraining_losses(decoded, targets, matches)
    assert set(losses) == {"loss_fgl_0", "loss_fgl_1", "loss_fgl", "loss_ddf_0", "loss_ddf_1", "loss_ddf",
                           "loss_bbox_pre", "loss_giou_pre"}
    assert losses["loss_ddf"] == 0 and losses["loss_ddf_0"] > 0 and losses["loss_fgl_0"] > 0
    sum(losses.values()).backward()
    assert model.pre_bbox_head.layers[0].weight.grad.abs().sum() > 0
    assert model.bbox_embed[0].layers[0].weight.grad.abs().sum() > 0
    # no box at all: FGL and the initial boxes have nothing to fit, DDF still distils the last layer
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    none = [(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))] * 2
    decoded = model.decode(encoded, model.initial_queries(encoded))
    losses = model.pretraining_losses(decoded, empty, {"_0": none, "_1": none, "": none})
    assert losses["loss_fgl_0"] == 0 and losses["loss_bbox_pre"] == 0 and losses["loss_ddf_0"] > 0


@pytest.mark.parametrize("method", ["disco", "detreg"])
def test_pretraining_configs_build_dfine_without_criterion_or_denoising(method):
    from detectron2.config import LazyConfig, instantiate

    from disco_detr.variants import VARIANTS, config_path

    row = VARIANTS["dfine"]
    det = LazyConfig.load(config_path(row.pretrain_config(method))).model.detector
    row.shrink(det, freeze_at=4)
    torch.manual_seed(0)
    model = instantiate(det)
    assert model.criterion is None and model.num_denoising == 0
    assert set(model.transfer_drop) == {"class_embed.", "enc_score_head.", "denoising_class_embed."}


def test_transfer_keeps_the_distribution_heads_and_lqe_and_drops_the_class_heads():
    from disco_detr.checkpoint.transfer import load_shares, module_group

    pre = _fixture_model(num_denoising=0)
    fine = _fixture_model()
    state = {k: v for k, v in pre.state_dict().items() if not k.startswith(pre.transfer_drop)}
    assert not any(k.startswith(("class_embed.", "enc_score_head.")) for k in state)
    kept = [k for k in state if k.startswith(("bbox_embed.", "pre_bbox_head.", "lqe_layers."))]
    assert kept and all(module_group(k) == "heads" for k in kept)
    shares = load_shares(state, fine.state_dict())
    assert shares["heads"]["numel_loaded"] == sum(
        v.numel() for k, v in fine.state_dict().items() if module_group(k) == "heads" and not k.startswith(
            fine.transfer_drop))


# transformers' names -> the release's (Peterande/D-FINE src/zoo/dfine, read from its source), for the test only
_TO_RELEASE = [
    (r"^model\.encoder_input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
    (r"^model\.encoder_input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm."),
    (r"^model\.encoder\.aifi\.(\d+)\.layers\.(\d+)\.self_attn\.o_proj\.", r"encoder.encoder.\1.layers.\2.self_attn.out_proj."),
    (r"^model\.encoder\.aifi\.(\d+)\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.encoder.\1.layers.\2.norm1."),
    (r"^model\.encoder\.aifi\.(\d+)\.layers\.(\d+)\.mlp\.layers\.0\.", r"encoder.encoder.\1.layers.\2.linear1."),
    (r"^model\.encoder\.aifi\.(\d+)\.layers\.(\d+)\.mlp\.layers\.1\.", r"encoder.encoder.\1.layers.\2.linear2."),
    (r"^model\.encoder\.aifi\.(\d+)\.layers\.(\d+)\.final_layer_norm\.", r"encoder.encoder.\1.layers.\2.norm2."),
    (r"^model\.encoder\.lateral_convs\.", "encoder.lateral_convs."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv1\.", r"encoder.\1_blocks.\2.cv1."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.csp_rep1\.", r"encoder.\1_blocks.\2.cv2.0."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv2\.", r"encoder.\1_blocks.\2.cv2.1."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.csp_rep2\.", r"encoder.\1_blocks.\2.cv3.0."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv3\.", r"encoder.\1_blocks.\2.cv3.1."),
    (r"^model\.encoder\.(fpn|pan)_blocks\.(\d+)\.conv4\.", r"encoder.\1_blocks.\2.cv4."),
    (r"^model\.encoder\.downsample_convs\.(\d+)\.conv([12])\.", r"encoder.downsample_convs.\1.0.cv\2."),
    (r"^model\.enc_output\.0\.", "decoder.enc_output.proj."),
    (r"^model\.enc_output\.1\.", "decoder.enc_output.norm."),
    (r"^model\.(enc_score_head|enc_bbox_head|denoising_class_embed)\.", r"decoder.\1."),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"decoder.decoder.layers.\1.self_attn.out_proj."),
    (r"^model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"decoder.decoder.layers.\1.norm1."),
    (r"^model\.decoder\.layers\.(\d+)\.encoder_attn\.", r"decoder.decoder.layers.\1.cross_attn."),
    (r"^model\.decoder\.layers\.(\d+)\.gateway\.", r"decoder.decoder.layers.\1.gateway."),
    (r"^model\.decoder\.layers\.(\d+)\.mlp\.layers\.0\.", r"decoder.decoder.layers.\1.linear1."),
    (r"^model\.decoder\.layers\.(\d+)\.mlp\.layers\.1\.", r"decoder.decoder.layers.\1.linear2."),
    (r"^model\.decoder\.layers\.(\d+)\.final_layer_norm\.", r"decoder.decoder.layers.\1.norm3."),
    (r"^model\.decoder\.query_pos_head\.", "decoder.query_pos_head."),
    (r"^model\.decoder\.pre_bbox_head\.", "decoder.pre_bbox_head."),
    (r"^model\.decoder\.lqe_layers\.", "decoder.decoder.lqe_layers."),
    (r"^model\.decoder\.class_embed\.", "decoder.dec_score_head."),
    (r"^model\.decoder\.bbox_embed\.", "decoder.dec_bbox_head."),
    (r"^model\.decoder\.(up|reg_scale)$", r"decoder.\1"),
]


def _release_layout(fixture):
    """The fixture's weights under the release's names: the backbone by rt_detr.pt's map (the same tiny ResNet-vd),
    q / k / v stacked into ``in_proj_*``, every other key by :data:`_TO_RELEASE`."""
    import re

    hf = fixture["state_dict"]
    backbone = {hf_key: rel for hf_key, rel, _ in torch.load(os.path.join(REFERENCE, "rt_detr.pt"),
                                                              weights_only=True)["release_key_map"]
                if hf_key.startswith("model.backbone.")}
    out = {}
    for key, value in hf.items():
        if key in backbone:
            out[backbone[key]] = value
            continue
        m = re.match(r"^model\.(encoder\.aifi\.(\d+)\.layers\.(\d+)|decoder\.layers\.(\d+))\.self_attn\.q_proj\.(weight|bias)$",
                     key)
        if m:
            prefix = (f"encoder.encoder.{m[2]}.layers.{m[3]}" if m[2] is not None else f"decoder.decoder.layers.{m[4]}")
            parts = [hf[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"{prefix}.self_attn.in_proj_{m[5]}"] = torch.cat(parts)
            continue
        if re.search(r"\.self_attn\.[kv]_proj\.", key) or key.startswith(("class_embed.", "bbox_embed.")):
            continue
        for pattern, target in _TO_RELEASE:
            if re.match(pattern, key):
                out[re.sub(pattern, target, key)] = value
                break
        else:
            raise KeyError(key)
    out["decoder.decoder.up"], out["decoder.decoder.reg_scale"] = out["decoder.up"], out["decoder.reg_scale"]
    return out


def test_release_layout_converts_to_the_same_weights(fixture):
    model = _fixture_model()
    reference, _ = convert_dfine(fixture["state_dict"], "hf", model)
    release, dropped = convert_dfine(_release_layout(fixture), "release", model)
    assert sorted(release) == sorted(reference)
    assert all(torch.equal(release[k], reference[k]) for k in reference)
    assert sorted(dropped) == sorted(["decoder.up", "decoder.reg_scale", "decoder.decoder.up",
                                      "decoder.decoder.reg_scale"]
                                     + [k for k in _release_layout(fixture) if k.endswith("num_points_scale")])


def test_convert_tool_writes_a_loadable_checkpoint(fixture, tmp_path):
    from disco_detr.tooling.convert import convert_dfine as tool

    src = tmp_path / "release.pth"
    torch.save({"ema": {"module": _release_layout(fixture)}}, src)
    cfg = tmp_path / "fixture_model.py"
    cfg.write_text("from detectron2.config import LazyCall as L\n"
                   "from test_d_fine import _fixture_model\n"
                   "model = L(_fixture_model)()\n")
    tool.main([str(src), str(tmp_path / "out.pth"), "--source", "release", "--key", "ema.module", "--config", str(cfg)])
    model = _fixture_model()
    state = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    model.load_state_dict(state, strict=True)
    reference, _ = convert_dfine(fixture["state_dict"], "hf", model)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    with pytest.raises(SystemExit, match="missing.pth"):
        tool.main([str(tmp_path / "missing.pth"), str(tmp_path / "x.pth"), "--source", "hf", "--config", str(cfg)])


def test_deformable_attention_is_recorded_for_the_analysis_plots(fixture, decoded):
    """Each decoder layer emits its sampling locations and weights (padded points of weight 0) for tools/analyze.py;
    the recorded locations are those the layer sampled at (recording changes no output)."""
    from disco_detr.modeling.layers.recording import record_attention

    model = _fixture_model().eval()
    model.load_state_dict(convert_dfine(fixture["state_dict"], "hf", model)[0])
    encoded, out = decoded
    with torch.no_grad(), record_attention(model) as records:
        again = model.decode(encoded, model.initial_queries(encoded))
    sites = [r for r in records if r.site == "deformable"]
    assert len(sites) == 3
    weights = sites[0].tensors["weights"]                                        # (B, N, H, L, P_max)
    assert weights.shape == (2, 20, 4, 3, 6)
    assert torch.allclose(weights.sum((-1, -2)), torch.ones(2, 20, 4))
    assert (weights[..., 0, 3:] == 0).all() and (weights[..., 2, 3:] == 0).all()  # levels 0 and 2 have 3 points
    assert torch.equal(again.logits, out.logits)
