"""DEIM's recipe: the matchability-aware loss (transformers' DEIMv2 loss fixture and float64 by hand), the mosaic
of dense one-to-one matching (box bookkeeping by hand on synthetic images), and a tiny CPU run of
configs/finetune_rtdetr_coco_deim.py."""
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image
from tiny_detectors import tiny_config

from disco_detr.config import load_config
from disco_detr.data import DetrDatasetMapper, MosaicDetrDatasetMapper, StreamDataset
from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.data.mosaic import affine_boxes, mosaic_affine_matrix, paste_mosaic, warp_image
from disco_detr.engine import Trainer
from disco_detr.modeling import HungarianMatcher
from disco_detr.modeling.criterion import RTDETRCriterion, matchability_aware_loss
from disco_detr.variants import VARIANTS

from conftest import REFERENCE, REPO

FIXTURE = os.path.join(REFERENCE, "deim_mal.pt")


# ---------------------------------------------------------------- matchability-aware loss


def _criterion(**kwargs):
    return RTDETRCriterion(5, HungarianMatcher(), class_loss="mal", **kwargs)


@pytest.mark.parametrize("case", [0, 1])
def test_mal_equals_transformers_deimv2_loss(case):
    """loss_mal of our criterion on the fixture's fixed matches equals transformers' Deimv2Loss.loss_labels_mal."""
    fixture = torch.load(FIXTURE, weights_only=True)
    gamma, mal_alpha, expected = fixture["cases"][case]
    criterion = _criterion(mal_gamma=gamma, mal_alpha=mal_alpha)
    losses = criterion.layer_losses(fixture["logits"], fixture["boxes"], fixture["targets"], fixture["num_boxes"],
                                    indices=fixture["indices"])
    assert set(losses) == {"loss_mal", "loss_bbox", "loss_giou"}
    torch.testing.assert_close(losses["loss_mal"], expected, rtol=1e-6, atol=1e-6)
    assert (gamma, mal_alpha) != (1.5, None) or criterion.mal_gamma == 1.5 and criterion.mal_alpha is None


def test_mal_by_hand_float64():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    onehot = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    iou = torch.tensor([0.6, 0.0], dtype=torch.float64)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731

    def bce(x, t):
        return -(t * math.log(sig(x)) + (1 - t) * math.log(1 - sig(x)))

    for gamma, alpha in ((1.5, None), (2.0, 0.75)):
        a = 1.0 if alpha is None else alpha
        expected = [[1.0 * bce(0.3, 0.6 ** gamma), a * sig(-1.2) ** gamma * bce(-1.2, 0.0)],
                    [a * sig(2.0) ** gamma * bce(2.0, 0.0), a * sig(0.5) ** gamma * bce(0.5, 0.0)]]
        got = matchability_aware_loss(logits, onehot, iou, gamma, alpha)
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["rtdetr", "dfine"])
def test_two_stage_with_mal_names_every_classification_term_loss_mal(variant):
    """deim_recipe's class_loss="mal" reaches RT-DETR's criterion and D-FINE's (a subclass), built by the config."""
    cfg = tiny_config(variant)
    cfg.model.criterion.class_loss = "mal"
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    inst = Instances((96, 96))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 60.0, 90.0], [50.0, 5.0, 90.0, 40.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    image = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    losses = model([{"image": image, "instances": inst}])
    assert {"loss_mal", "loss_mal_enc", "loss_mal_0", "loss_mal_dn"} <= set(losses)
    assert not any("vfl" in k for k in losses) and all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="class_loss"):
        RTDETRCriterion(5, HungarianMatcher(), class_loss="focal")


# ---------------------------------------------------------------- mosaic


def _anno(box, cat):
    return {"bbox": np.array(box, dtype=np.float64), "bbox_mode": BoxMode.XYXY_ABS, "category_id": cat}


def test_paste_mosaic_offsets_by_hand():
    a = (np.full((32, 64, 3), 1, np.uint8), [_anno([8, 4, 24, 20], 0)])
    b = (np.full((32, 32, 3), 2, np.uint8), [_anno([0, 0, 32, 32], 1)])
    c = (np.full((40, 32, 3), 3, np.uint8), [_anno([4, 4, 8, 8], 2)])
    d = (np.full((32, 48, 3), 4, np.uint8), [_anno([1, 2, 3, 4], 3), _anno([40, 30, 48, 32], 4)])
    canvas, annos = paste_mosaic([a, b, c, d])
    assert canvas.shape == (80, 128, 3)  # cells 40 x 64
    assert canvas[0, 0, 0] == 1 and canvas[0, 64, 0] == 2 and canvas[40, 0, 0] == 3 and canvas[40, 64, 0] == 4
    assert canvas[35, 10, 0] == 0 and canvas[0, 100, 0] == 0  # below a, right of b: black
    boxes = [a["bbox"].tolist() for a in annos]
    assert boxes == [[8, 4, 24, 20], [64, 0, 96, 32], [4, 44, 8, 48], [65, 42, 67, 44], [104, 70, 112, 72]]
    assert [a["category_id"] for a in annos] == [0, 1, 2, 3, 4]


def test_affine_maps_boxes_and_pixels_alike():
    """A white rectangle on a black canvas, turned 90 degrees and scaled: the mapped box is where the white went."""
    h, w = 60, 100
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[10:30, 20:60] = 255  # box [20, 10, 60, 30] in continuous pixel coordinates
    matrix = mosaic_affine_matrix(h, w, angle=90.0, scale=0.5, tx=7.0, ty=-3.0)
    # by hand: centre (50, 30); a counter-clockwise quarter turn on screen maps (dx, dy) -> (dy, -dx)
    x0, y0, x1, y1 = affine_boxes(np.array([[20.0, 10.0, 60.0, 30.0]]), matrix, h, w)[0]
    expected = [50 + 0.5 * (10 - 30) + 7, 30 - 0.5 * (60 - 50) - 3, 50 + 0.5 * (30 - 30) + 7, 30 - 0.5 * (20 - 50) - 3]
    np.testing.assert_allclose([x0, y0, x1, y1], expected, atol=1e-9)
    warped = warp_image(canvas, matrix)
    ys, xs = np.nonzero(warped[..., 0] > 127)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
    clipped = affine_boxes(np.array([[0.0, 0.0, 100.0, 60.0]]), mosaic_affine_matrix(h, w, 0.0, 2.0, 0.0, 0.0), h, w)
    np.testing.assert_allclose(clipped[0], [0, 0, 100, 60])


@pytest.fixture()
def synthetic_records(tmp_path):
    """Four images, each with one bright box on black, of different sizes and aspect ratios."""
    records = []
    for i, (hh, ww, box) in enumerate([(40, 80, [10, 5, 30, 25]), (64, 64, [0, 0, 64, 64]),
                                       (32, 48, [4, 4, 20, 30]), (90, 45, [5, 40, 40, 85])]):
        img = np.zeros((hh, ww, 3), np.uint8)
        img[box[1]:box[3], box[0]:box[2]] = 60 * (i + 1)
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(img).save(path)
        records.append({"file_name": path, "image_id": i, "height": hh, "width": ww, "annotations": [
            {"bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "bbox_mode": BoxMode.XYWH_ABS,
             "category_id": i, "iscrowd": 0}]})
    return records


def _mapper(cls=MosaicDetrDatasetMapper, **kwargs):
    return cls(is_train=True, num_classes=4, min_sizes=(64,), max_size=10_000, crop_probability=0.5, **kwargs)


def test_mosaic_without_affine_by_hand(synthetic_records):
    """Identity affine: each image resized to short side 32, boxes scaled and shifted into their cells."""
    mapper = _mapper(mosaic_size=32, rotation=0.0, translation=(0.0, 0.0), scaling=(1.0, 1.0))
    synthetic_records[0]["annotations"][0]["segmentation"] = [[10, 5, 30, 5, 30, 25]]  # not mapped: left out
    canvas, annos = mapper.mosaic(synthetic_records)
    assert not any("segmentation" in a for a in annos)
    # resized sizes (h, w): (32, 64), (32, 32), (32, 48), (64, 32); cells 64 x 64
    assert canvas.shape == (128, 128, 3)
    expected = {0: [8, 4, 24, 20], 1: [64, 0, 96, 32], 2: [4, 64 + 4, 20, 64 + 30],
                3: [64 + 5 * 32 / 45, 64 + 40 * 64 / 90, 64 + 40 * 32 / 45, 64 + 85 * 64 / 90]}
    got = {a["category_id"]: a["bbox"] for a in annos}
    assert set(got) == {0, 1, 2, 3}
    for cat, box in expected.items():
        np.testing.assert_allclose(got[cat], box, atol=1e-6, err_msg=str(cat))
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        inner = canvas[y0 + 1:y1 - 1, x0 + 1:x1 - 1, 0]
        assert inner.size and abs(float(inner.mean()) - 60 * (cat + 1)) < 3, cat


def test_mosaic_mapper_only_in_its_window_and_equal_to_base_outside(synthetic_records):
    base = _mapper(DetrDatasetMapper)
    mapper = _mapper(mosaic_probability=1.0, mosaic_epochs=(2, 3), mosaic_size=32)
    for epoch in (0, 1, 3):
        np.random.seed(5)
        plain = base(synthetic_records[0])
        np.random.seed(5)
        out = mapper.map_in_stream(synthetic_records[0], synthetic_records, epoch)
        assert torch.equal(out["image"], plain["image"])
        assert torch.equal(out["instances"].gt_boxes.tensor, plain["instances"].gt_boxes.tensor)
    np.random.seed(5)
    out = mapper.map_in_stream(synthetic_records[0], synthetic_records, 2)
    h, w = out["image"].shape[1:]
    assert min(h, w) == 64  # the mosaic canvas went through the plain resize
    boxes = out["instances"].gt_boxes.tensor
    assert 1 <= len(boxes) <= 4 and (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    # through the training stream: epoch = position // len(dataset); stream position 8 is epoch 2
    stream = StreamDataset(synthetic_records, mapper, seed=1)
    assert all(len(stream[p]["instances"]) == 1 for p in range(4))  # epoch 0: one box per synthetic image
    assert max(len(stream[p]["instances"]) for p in range(8, 12)) > 1  # epoch 2: mosaics


# ---------------------------------------------------------------- the config trains


def test_deim_config_trains_tiny_on_the_demo(demo_root, tmp_path):
    """configs/finetune_rtdetr_coco_deim.py with the tests' tiny RT-DETR on the demo split, mosaic on every image:
    three CPU steps, loss_mal logged, evaluated at the end."""
    out = tmp_path / "run"
    cfg = load_config(os.path.join(REPO, "configs", "finetune_rtdetr_coco_deim.py"), [
        f"train.output_dir={out}", "train.max_iter=3", "train.device=cpu", "train.init_checkpoint=",
        "train.log_period=1", "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0", "train.ema.enabled=False"])
    assert cfg.model.criterion.class_loss == "mal" and cfg.dataloader.train.mapper.mosaic_epochs == (4, 16)
    VARIANTS["rtdetr"].shrink(cfg.model)
    cfg.model.num_queries = 48  # a mosaic carries up to four images' boxes (the demo's: up to 6 each)
    cfg.model.num_classes = len(DEMO_CLASSES)
    cfg.dataloader.train.dataset.names = "disco_demo_train"
    cfg.dataloader.test.dataset.names = "disco_demo_val"
    cfg.dataloader.evaluator.output_dir = str(tmp_path / "inference")
    cfg.dataloader.train.mapper.update(square_sizes=(64, 96), mosaic_size=48, mosaic_probability=1.0,
                                       mosaic_epochs=(0, 100))
    cfg.dataloader.test.mapper.update(square_sizes=(96,))
    cfg.train.amp.enabled = False
    assert len(DatasetCatalog.get("disco_demo_train")) == 16
    Trainer(cfg).train()
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    steps = [r for r in records if "loss_mal" in r]
    assert len(steps) == 3 and all(math.isfinite(r["loss_mal"]) for r in steps)
    assert not any("loss_vfl" in r for r in records)
    assert any("bbox/AP" in r for r in records)
