"""RT-DETR (detectors/rt_detr.py): the transformers fixture number for number (both AIFI position embeddings),
the HF 4.x/5.x and release converters, hybrid encoder shapes on odd sizes, varifocal loss by hand, IoU-aware
top-k selection, and a couple of CPU iterations of every paper config with the backbone shrunk."""
import math
import os
import re

import numpy as np
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.structures import Boxes, ImageList, Instances

from disco_detr.config import load_config
from disco_detr.convert.rtdetr import convert_rtdetr
from disco_detr.modeling import RTDETR, build_resnet_vd, build_tiny_resnet
from disco_detr.modeling.criterion import varifocal_loss
from disco_detr.modeling.detectors.rt_detr import RTDETRDecoder
from disco_detr.modeling.layers.hybrid_encoder import HybridEncoder, sincos_position_embedding_2d
from disco_detr.modeling.layers.query_selection import encoder_proposals, select_topk

from conftest import REFERENCE, REPO

FIXTURE = os.path.join(REFERENCE, "rt_detr.pt")


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def _fixture_model(aifi_position="hf"):
    """The fixture's tiny RT-DETR (its README): ResNet-vd stem 4/4/8, widths 16-128, d 64, 30 queries, 2 layers."""
    backbone = build_resnet_vd(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1), widths=(16, 32, 64, 128), freeze_at=0)
    encoder = HybridEncoder((32, 64, 128), 64, 8, 128, 0.0, expansion=0.5, aifi_position=aifi_position)
    decoder = RTDETRDecoder(2, 64, 8, 128, 0.0, 3, 4)
    return RTDETR(backbone=backbone, in_features=("res3", "res4", "res5"), encoder=encoder, decoder=decoder,
                  num_classes=5, num_queries=30, criterion=None, num_denoising=100)


def _run(model, pixel_values):
    images = ImageList(pixel_values, [tuple(pixel_values.shape[-2:])])
    with torch.no_grad():
        encoded = model.encode(images)
        queries = model.initial_queries(encoded)
        return encoded, queries, model.decode(encoded, queries)


@pytest.mark.parametrize("position,expected_key", [("hf", "expected"), ("release", "expected_release_pos_embed")])
def test_matches_the_transformers_fixture(fixture, position, expected_key):
    model = _fixture_model(position).eval()
    state, dropped = convert_rtdetr(fixture["state_dict"], "hf", model)
    assert dropped == []
    model.load_state_dict(state, strict=True)
    for i, pixel_values in enumerate(fixture["pixel_values"]):
        exp = fixture[expected_key][i]
        encoded, queries, decoded = _run(model, pixel_values)
        assert torch.equal(encoded.extras["topk_indices"], exp["enc_topk_indices"])
        assert torch.allclose(decoded.logits[-1], exp["logits"], atol=5e-5, rtol=0)
        assert torch.allclose(decoded.boxes[-1], exp["pred_boxes"], atol=7e-6, rtol=0)
        assert torch.allclose(decoded.logits.transpose(0, 1), exp["intermediate_logits"], atol=5e-5, rtol=0)
        assert torch.allclose(decoded.boxes.transpose(0, 1), exp["intermediate_reference_points"], atol=7e-6, rtol=0)
        assert torch.allclose(queries.reference, exp["enc_topk_bboxes"], atol=7e-6, rtol=0)
        assert torch.allclose(encoded.extras["enc_logits"], exp["enc_topk_logits"], atol=5e-5, rtol=0)
        assert torch.allclose(decoded.hidden.transpose(0, 1), exp["intermediate_hidden_states"], atol=5e-5, rtol=0)
    # the two embeddings differ on these non-square stride-32 maps (3x4, 2x3), and each set matches only its own
    other = "expected_release_pos_embed" if expected_key == "expected" else "expected"
    _, _, decoded = _run(model, fixture["pixel_values"][0])
    assert (decoded.logits[-1] - fixture[other][0]["logits"]).abs().max() > 1e-2


def test_encoder_pieces_match_the_fixture(fixture):
    exp = fixture["expected"][0]
    h, w = exp["aifi_output"].shape[-2:]
    assert torch.allclose(sincos_position_embedding_2d(h, w, 64)[None], exp["aifi_position_embedding"], atol=1e-6)
    anchors, valid = encoder_proposals(exp["spatial_shapes"])
    assert torch.equal(valid, exp["valid_mask"].bool())
    assert torch.allclose(anchors, exp["anchors"], atol=1e-5)
    # anchors by hand: token (x=2, y=1) of level 1 (6 x 8 for image A) = logit((2.5/8, 1.5/6, 0.1, 0.1))
    hand = torch.tensor([2.5 / 8, 1.5 / 6, 0.1, 0.1])
    start = int(exp["spatial_shapes"][0].prod())
    assert torch.allclose(anchors[0, start + 1 * 8 + 2], torch.log(hand / (1 - hand)), atol=1e-6)
    model = _fixture_model().eval()
    model.load_state_dict(convert_rtdetr(fixture["state_dict"], "hf", model)[0])
    images = ImageList(fixture["pixel_values"][0], [tuple(fixture["pixel_values"][0].shape[-2:])])
    with torch.no_grad():
        features = model.backbone(images.tensor)
        outs = model.encoder([features[f] for f in model.in_features])
    for ours, theirs in zip(outs, exp["encoder_last_hidden_state"]):
        assert torch.allclose(ours, theirs, atol=5e-5, rtol=0)


def _hf4_names(state):
    """transformers 4.x hub names (encoder.encoder, out_proj, fc1) + the top-level alias of the heads."""
    out = {}
    for k, v in state.items():
        k4 = k.replace("encoder.aifi.", "encoder.encoder.").replace("self_attn.o_proj", "self_attn.out_proj")
        k4 = k4.replace("mlp.fc1", "fc1").replace("mlp.fc2", "fc2")
        out[k4] = v
        m = re.match(r"^model\.decoder\.((?:class|bbox)_embed\..*)$", k)
        if m:
            out[m[1]] = v.clone()
    return out


def _release_layout(fixture):
    out = {}
    for hf_key, rel_key, rows in fixture["release_key_map"]:
        value = fixture["state_dict"][hf_key]
        if not rows:
            out[rel_key] = value
            continue
        start, stop = (int(x) for x in rows.split(":"))
        if rel_key not in out:
            out[rel_key] = torch.zeros((3 * value.shape[0],) + tuple(value.shape[1:]), dtype=value.dtype)
        out[rel_key][start:stop] = value
    return out


def test_hub_4x_and_release_layouts_convert_to_the_same_weights(fixture):
    model = _fixture_model()
    reference, _ = convert_rtdetr(fixture["state_dict"], "hf", model)
    hf4, dropped = convert_rtdetr(_hf4_names(fixture["state_dict"]), "hf", model)
    assert sorted(dropped) == sorted(k for k in _hf4_names(fixture["state_dict"]) if re.match(r"^(class|bbox)_embed", k))
    release, _ = convert_rtdetr(_release_layout(fixture), "release", model)
    for converted in (hf4, release):
        assert converted.keys() == reference.keys()
        assert all(torch.equal(converted[k], reference[k]) for k in reference)
    # errors name the offending key
    bad = dict(fixture["state_dict"])
    bad["model.decoder.unknown_head.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="unknown_head"):
        convert_rtdetr(bad, "hf", model)
    bad = _hf4_names(fixture["state_dict"])
    bad["class_embed.0.bias"] = bad["class_embed.0.bias"] + 1
    with pytest.raises(ValueError, match="class_embed.0.bias"):
        convert_rtdetr(bad, "hf", model)


def test_convert_tool_writes_a_loadable_checkpoint(fixture, tmp_path):
    from disco_detr.tooling.convert import convert_rtdetr as tool

    src = tmp_path / "release.pth"
    torch.save({"ema": {"module": _release_layout(fixture)}}, src)
    cfg = tmp_path / "fixture_model.py"
    cfg.write_text("from detectron2.config import LazyCall as L\n"
                   "from test_rt_detr import _fixture_model\n"
                   "model = L(_fixture_model)()\n")
    tool.main([str(src), str(tmp_path / "out.pth"), "--source", "release", "--key", "ema.module", "--config", str(cfg)])
    model = _fixture_model().eval()
    model.load_state_dict(torch.load(tmp_path / "out.pth", weights_only=True)["model"], strict=True)
    _, _, decoded = _run(model, fixture["pixel_values"][1])
    assert torch.allclose(decoded.logits[-1], fixture["expected"][1]["logits"], atol=5e-5, rtol=0)
    with pytest.raises(SystemExit, match="missing.pth"):
        tool.main([str(tmp_path / "missing.pth"), str(tmp_path / "x.pth"), "--source", "hf", "--config", str(cfg)])


def _tiny_rtdetr(num_classes=3, num_queries=20, **kwargs):
    backbone = build_tiny_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                 out_features=("res2", "res3", "res4"), norm="FrozenBN", freeze_at=0)
    return RTDETR(backbone=backbone, in_features=("res2", "res3", "res4"),
                  encoder=HybridEncoder((8, 16, 32), 32, 4, 64, expansion=0.5, depth_mult=1 / 3),
                  decoder=RTDETRDecoder(2, 32, 4, 64, 0.0, 3, 2), num_classes=num_classes, num_queries=num_queries,
                  **kwargs)


@pytest.mark.parametrize("size", [(97, 131), (33, 65), (64, 64)])
def test_hybrid_encoder_shapes_on_odd_sizes(size):
    torch.manual_seed(0)
    model = _tiny_rtdetr(criterion=None).eval()
    h, w = size
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, h, w))
        outs = model.encoder([features[f] for f in model.in_features])
    for out, stride in zip(outs, (4, 8, 16)):
        assert out.shape == (2, 32, math.ceil(h / stride), math.ceil(w / stride))
        assert torch.isfinite(out).all()


def test_varifocal_loss_by_hand():
    logits = torch.tensor([[[0.5, -1.0], [2.0, 0.0]]], dtype=torch.float64)
    onehot = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    iou = torch.tensor([[0.6, 0.0]], dtype=torch.float64)
    loss = varifocal_loss(logits, onehot, iou, alpha=0.75, gamma=2.0)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    def bce(x, t):
        return -(t * math.log(sig(x)) + (1 - t) * math.log(1 - sig(x)))
    # positive: weight = target score 0.6, target 0.6; negatives: weight 0.75 p^2, target 0
    hand = [[0.6 * bce(0.5, 0.6), 0.75 * sig(-1.0) ** 2 * bce(-1.0, 0)],
            [0.75 * sig(2.0) ** 2 * bce(2.0, 0), 0.75 * sig(0.0) ** 2 * bce(0.0, 0)]]
    assert torch.allclose(loss[0], torch.tensor(hand, dtype=torch.float64), atol=1e-12, rtol=0)
    # worked by hand: 0.6 * 0.674077 + 0.75 * (0.022658 + 1.650078 + 0.173287)
    assert math.isclose(loss.sum().item(), 1.788963, abs_tol=1e-6)


def test_iou_aware_selection_picks_the_top_k_by_score():
    torch.manual_seed(0)
    model = _tiny_rtdetr(criterion=None).eval()
    images = model.preprocess_images([torch.randint(0, 255, (3, 70, 90), dtype=torch.uint8),
                                      torch.randint(0, 255, (3, 52, 61), dtype=torch.uint8)])
    with torch.no_grad():
        encoded = model.encode(images)
        # independent recomputation of every token's score
        anchors, valid = encoder_proposals(encoded.spatial_shapes, encoded.mask)
        scores = model.enc_score_head(model.enc_output(encoded.memory * valid)).max(-1).values
    scores = scores.masked_fill(~valid[..., 0], float("-inf"))
    topk = encoded.extras["topk_indices"]
    for b in range(2):
        chosen = scores[b, topk[b]]
        assert torch.all(chosen[:-1] >= chosen[1:])                          # descending (torch.topk order)
        rest = torch.ones_like(scores[b], dtype=torch.bool)
        rest[topk[b]] = False
        assert chosen.min() >= scores[b, rest].max()                         # nothing left out scores higher
        assert valid[b, topk[b]].all()                                       # padding is never selected
    assert (encoded.mask[1]).any()                                           # image 2 is padded
    # select_topk by itself, against sorting
    s = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3]])
    assert select_topk(s, 3).tolist() == [[1, 3, 2]]
    assert select_topk(s, 2, torch.tensor([[True, False, True, True, True]])).tolist() == [[3, 2]]


#: the paper configs' ResNet-50-vd shrunk: a tiny frozen-BN ResNet with the same strides 8/16/32
TINY_BACKBONE = dict(widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1), stem_width=8, out_features=("res3", "res4", "res5"),
                     norm="FrozenBN")


def _targets_batch():
    def one(h, w, boxes, classes):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(classes)
        gen = torch.Generator().manual_seed(h * w)
        return {"image": torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=gen), "instances": inst}
    return [one(128, 128, [[10, 20, 60, 90], [70, 40, 120, 120]], [0, 1])]   # 336 tokens at strides 8/16/32


def test_paper_finetune_configs_share_model_and_optimizer():
    """The three fine-tuning configs differ only in data and schedule (so training one of them on CPU, below,
    covers the model and optimizer of all three)."""
    coco = load_config(os.path.join(REPO, "configs", "finetune_rtdetr_coco.py"))
    for name in ("finetune_rtdetr_coco_50ep", "finetune_rtdetr_voc"):
        cfg = load_config(os.path.join(REPO, "configs", f"{name}.py"))
        cfg.model.num_classes = coco.model.num_classes
        assert cfg.model == coco.model and cfg.optimizer == coco.optimizer and cfg.train.ema == coco.train.ema, name


def test_paper_finetune_config_trains_on_cpu():
    """Two AdamW steps of the paper config (d 256, 6 layers, 300 queries, 100 denoising queries) with the backbone
    shrunk to a tiny ResNet (strides 8/16/32 on a 128 px image)."""
    cfg = load_config(os.path.join(REPO, "configs", "finetune_rtdetr_coco.py"))
    assert cfg.train.ema.enabled and cfg.optimizer.lr == 1e-4 and cfg.optimizer.params.backbone_lr_factor == 0.1
    assert cfg.dataloader.test.mapper.square_sizes == (640,)
    cfg.model.backbone = L(build_tiny_resnet)(**TINY_BACKBONE, freeze_at=0)
    cfg.model.in_features = TINY_BACKBONE["out_features"]
    cfg.model.encoder.in_channels = TINY_BACKBONE["widths"][1:]
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    assert model.num_queries == 300 and len(model.decoder.layers) == 6 and model.num_denoising == 100
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batch = _targets_batch()
    totals = []
    for _ in range(2):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert {"loss_vfl", "loss_bbox", "loss_giou", "loss_vfl_enc", "loss_vfl_0", "loss_vfl_dn", "loss_vfl_dn_4"} <= set(losses)
    assert "loss_vfl_5" not in losses and "loss_vfl_dn_5" not in losses
    assert all(math.isfinite(t) for t in totals)
    model.eval()
    with torch.no_grad():
        result = model(batch)[0]["instances"]
    assert len(result) == 300 and (result.scores[:-1] >= result.scores[1:]).all()


def test_siamese_pretrain_config_is_disco_without_its_components():
    disco = load_config(os.path.join(REPO, "configs", "disco_rtdetr.py"))
    siamese = load_config(os.path.join(REPO, "configs", "siamese_rtdetr.py"))
    assert (siamese.model.use_dmoqf, siamese.model.fusion, siamese.model.weight_contrast) == (False, "add", 0.0)
    for key in ("use_dmoqf", "weight_contrast"):
        siamese.model[key] = disco.model[key]
    assert siamese.model == disco.model


@pytest.mark.parametrize("name", ["disco_rtdetr"])  # Siamese: the contract test trains it on the tiny model
def test_paper_pretrain_configs_train_on_cpu(name):
    """Two steps of the paper's DisCo RT-DETR pre-training with the backbone shrunk (tiny frozen ResNet)."""
    from test_contract import _batch

    cfg = load_config(os.path.join(REPO, "configs", f"{name}.py"))
    assert cfg.model.weight_rec == 3.0 and cfg.model.feature_levels == ("res3", "res4", "res5")
    assert cfg.model.detector.num_denoising == 0
    cfg.model.detector.backbone = L(build_tiny_resnet)(**TINY_BACKBONE, freeze_at=5)
    cfg.model.detector.in_features = TINY_BACKBONE["out_features"]
    cfg.model.detector.encoder.in_channels = TINY_BACKBONE["widths"][1:]
    cfg.model.feature_levels = TINY_BACKBONE["out_features"]
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    assert model.detector.num_queries == 300
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batch = _batch(b=2, n=10, size=(128, 128))  # 336 tokens at strides 8/16/32 for 300 queries
    for _ in range(2):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        assert math.isfinite(total.item())
    # 6 decoder layers (_0 .. _4 and the last) + the encoder's selection (_enc)
    assert "loss_loc_bbox_5" not in losses and "loss_loc_bbox_4" in losses and "loss_loc_bbox_0" in losses
    assert "loss_loc_bbox_enc" in losses and "loss_rec_enc" in losses
    assert ("loss_contrast" in losses) == (name == "disco_rtdetr")
    assert model.detector.enc_score_head.weight.grad is not None


def test_square_multiscale_mapper_setting(demo_root):
    """RT-DETR's input: an s x s square (aspect not kept), s drawn from ``square_sizes`` in training, and
    ``square_sizes[0]`` at test; boxes follow the image."""
    from detectron2.data import DatasetCatalog

    from disco_detr.data import DetrDatasetMapper
    from disco_detr.data.datasets import DEMO_CLASSES

    record = DatasetCatalog.get("disco_demo_train")[0]
    train = DetrDatasetMapper(is_train=True, num_classes=len(DEMO_CLASSES), square_sizes=(64, 96), crop_probability=0.0)
    sizes = set()
    for seed in range(8):
        np.random.seed(seed)
        out = train(record)
        h, w = out["image"].shape[-2:]
        assert h == w and h in (64, 96)
        sizes.add(h)
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) and (boxes[:, 2:] <= h).all() and (boxes >= 0).all()
    assert sizes == {64, 96}
    test = DetrDatasetMapper(is_train=False, num_classes=len(DEMO_CLASSES), square_sizes=(80,))
    assert tuple(test(record)["image"].shape[-2:]) == (80, 80)
    # the aspect-preserving default is unchanged
    plain = DetrDatasetMapper(is_train=False, num_classes=len(DEMO_CLASSES), min_sizes=(80,), max_size=1000)
    assert min(plain(record)["image"].shape[-2:]) == 80
