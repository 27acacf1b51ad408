"""DETReg pre-training: the losses by hand, the crop-feature targets, the single-view mapper, every
variant through the pre-training contract, and the configs (the paper's Tables 1-2 start)."""
import dataclasses
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from PIL import Image
from tiny_detectors import tiny_pretraining

from disco_detr.checkpoint.checkpointer import pretrained_to_finetune
from disco_detr.config import load_config
from disco_detr.data.detreg_mapper import DETRegMapper, collate_single_views
from disco_detr.data.proposal_store import Proposals, ProposalStore
from disco_detr.modeling.pretrain.detreg import DETRegPretrain
from disco_detr.structures import SingleViewBatch
from disco_detr.variants import VARIANTS

from conftest import REPO, train_on_one_batch

DETREG_CONFIGS = {  # config -> (detector class, denoising queries or None)
    "detreg_cond.py": ("ConditionalDETR", None),
    "detreg_deformable_ss.py": ("DeformableDETR", None),
    "detreg_deformable_ms.py": ("DeformableDETR", None),
    "detreg_dab.py": ("DABDETR", None),
    "detreg_dino.py": ("DINO", 0),
    "detreg_rtdetr.py": ("RTDETR", 0),
    "detreg_dfine.py": ("DFINE", 0),
}
CONFIG_OF = {name: os.path.basename(row.pretrain_config("detreg")) for name, row in VARIANTS.items()}


def _tiny_config(variant):
    """The tiny detector of the contract test's ``variant`` (num_classes=1) inside DETRegPretrain."""
    disco = tiny_pretraining(variant).model
    det = disco.detector
    det.num_classes = 1
    return L(DETRegPretrain)(detector=det, embedding_levels=tuple(disco.feature_levels[:1]))


def _build(variant, **overrides):
    cfg = _tiny_config(variant)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return instantiate(cfg)


def _batch(b=2, k=(4, 3), size=(80, 96), crop=32, seed=0):
    """A synthetic SingleViewBatch: images (B,3,H,W) uint8, boxes (B,K,4) xyxy pixels with k_b rows each,
    crops (B,K,3,s,s)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    kmax = max(k)
    xy = torch.rand(b, kmax, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
    wh = 8 + torch.rand(b, kmax, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3])
    boxes = torch.cat([xy, xy + wh], -1)
    for i, n in enumerate(k):
        boxes[i, n:] = 0
    return SingleViewBatch(images=torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen),
                           image_sizes=[(h, w)] * b, boxes=boxes, num_boxes=list(k),
                           crops=torch.randint(0, 256, (b, kmax, 3, crop, crop), dtype=torch.uint8, generator=gen))


# ---- the losses by hand ---------------------------------------------------------------------------
def test_objectness_focal_and_box_losses_by_hand():
    """Every proposal is an "object": the focal loss's positives are exactly the matched queries."""
    model = _build("cond")
    logits = torch.tensor([[[0.5], [-1.0], [2.0]]])  # (B=1, Q=3, C=1)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1], [0.7, 0.6, 0.3, 0.4]]])
    targets = [{"labels": torch.zeros(2, dtype=torch.long),
                "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.72, 0.6, 0.3, 0.4]])}]
    indices = [(torch.tensor([0, 2]), torch.tensor([0, 1]))]
    got = model.criterion.layer_losses(logits, boxes, targets, 2.0, indices)
    p = torch.sigmoid(logits.double()).flatten()
    alpha, num = 0.25, 2.0
    positive = lambda q: -alpha * (1 - p[q]) ** 2 * torch.log(p[q])  # noqa: E731
    negative = lambda q: -(1 - alpha) * p[q] ** 2 * torch.log(1 - p[q])  # noqa: E731
    expected_class = (positive(0) + negative(1) + positive(2)) / num
    assert got["loss_class"].item() == pytest.approx(expected_class.item(), rel=1e-6)
    assert got["loss_bbox"].item() == pytest.approx(0.02 / num, rel=1e-5)  # only box 1's x is off, by 0.02
    assert got["loss_giou"].item() > 0
    # the matcher picks the same pairs from class 2 / L1 5 / GIoU 2 costs
    assert [q.tolist() for q, _ in model.criterion.matcher(logits, boxes, targets)] == [[0, 2]]


def test_embedding_loss_is_l1_against_a_direct_backbone_pass():
    model = _build("cond")
    det = model.detector
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, det.num_queries, det.d_model, generator=gen)
    crops = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8, generator=gen)
    indices = [(torch.tensor([5, 1]), torch.tensor([0, 2])), (torch.tensor([7]), torch.tensor([1]))]
    loss, cosine = model.embedding_loss(hidden, crops, indices)
    # the target of each matched box: its crop normalised, through the frozen backbone, averaged over space
    level = model.embedding_levels[0]
    rows = torch.stack([crops[0, 0], crops[0, 2], crops[1, 1]]).double()
    mean, std = det.pixel_mean.double(), det.pixel_std.double()
    backbone = det.backbone.double()
    with torch.no_grad():
        target = backbone((rows - mean) / std)[level].mean((2, 3))
        predicted = model.embed_head.double()(torch.stack([hidden[0, 5], hidden[0, 1], hidden[1, 7]]).double())
    assert target.shape[1] == model.embedding_dim
    expected = (predicted - target).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert -1 <= cosine.item() <= 1


def test_matching_does_not_see_the_embedding():
    """Other crops change the embedding loss only: the matching (and so every other loss) stays."""
    model = _build("cond")
    model.train()
    batch = _batch()
    other = dataclasses.replace(batch, crops=torch.randint(0, 256, batch.crops.shape, dtype=torch.uint8))
    torch.manual_seed(0)
    a = model(batch)
    torch.manual_seed(0)
    b = model(other)
    assert a["loss_embedding"].item() != pytest.approx(b["loss_embedding"].item())
    for name in a:
        if name != "loss_embedding":
            assert torch.equal(a[name], b[name]), name


def test_padded_boxes_are_not_targets():
    model = _build("cond")
    batch = _batch(k=(4, 2))
    targets = model.targets(batch.boxes, batch.num_boxes, batch.image_sizes)
    assert [len(t["boxes"]) for t in targets] == [4, 2]
    h, w = batch.image_sizes[0]
    x0, y0, x1, y1 = batch.boxes[1, 1].tolist()
    assert torch.allclose(targets[1]["boxes"][1], torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h,
                                                                  (x1 - x0) / w, (y1 - y0) / h]))


def test_a_detector_with_two_classes_or_a_trainable_backbone_is_refused():
    cfg = _tiny_config("cond")
    cfg.detector.num_classes = 2
    with pytest.raises(ValueError, match="num_classes=1"):
        instantiate(cfg)
    cfg = _tiny_config("cond")
    cfg.detector.backbone.freeze_at = 0
    with pytest.raises(ValueError, match="frozen"):
        instantiate(cfg)


# ---- every variant through the contract -----------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_short_detreg_pretraining_decreases_the_loss(variant):
    model = _build(variant)
    model.train()
    batch = _batch()
    losses = model(batch)
    assert {"loss_class", "loss_bbox", "loss_giou", "loss_embedding", "loss_class_0", "loss_bbox_0"} <= set(losses)
    assert not any(k.startswith("loss_embedding_") for k in losses)  # the embedding: last layer only
    assert all(torch.isfinite(v) for v in losses.values())
    totals = train_on_one_batch(model, batch, 12)
    assert totals[-1] < totals[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_detreg_transfer_keeps_the_detector_and_drops_its_heads(variant):
    model = _build(variant)
    det = model.detector
    state = model.state_dict()
    kept, dropped = pretrained_to_finetune(state, det.transfer_drop)
    assert any(k.startswith("embed_head.") for k in dropped)
    assert not any(k.startswith(det.transfer_drop) for k in kept)
    detector_keys = {k[len("detector."):] for k in state if k.startswith("detector.")}
    assert set(kept) == {k for k in detector_keys if not k.startswith(det.transfer_drop)}
    # the fine-tuning detector (more classes) loads every kept key
    finetune_cfg = _tiny_config(variant).detector
    finetune_cfg.num_classes = 5
    finetune = instantiate(finetune_cfg)
    missing = set(finetune.state_dict()) - set(kept)
    assert missing and all(k.startswith(det.transfer_drop) for k in missing)


# ---- the single-view mapper ------------------------------------------------------------------------
def _white_box_image(tmp_path, box=(30, 20, 90, 70), size=(100, 120), name="img.png", extra=()):
    """A black (h, w) image with a white rectangle; its store holds the rectangle, a black box and
    ``extra`` boxes, in that order."""
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(image).save(tmp_path / name)
    boxes = np.array([box, (2, 2, 20, 15), *extra], np.float32)
    store = str(tmp_path / "ss.sqlite")
    with ProposalStore(store, mode="a") as s:
        s.put_many([(name, Proposals(boxes=boxes, scores=np.linspace(1, 0.5, len(boxes)).astype(np.float32),
                                     height=h, width=w))])
    return {"file_name": str(tmp_path / name), "image_id": 0, "proposals_file": store, "proposal_key": name}


def _plain_mapper(**kw):
    """Small views, no colour augmentation (so pixels can be checked)."""
    return DETRegMapper(scales=(64, 80), max_size=160, crop_resize_sizes=(90, 110), crop_size_range=(60, 100),
                        crop_size=16, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, **kw)


def test_boxes_follow_the_view_geometry_and_crops_stay_with_their_boxes(tmp_path):
    record = _white_box_image(tmp_path)
    mapper = _plain_mapper()
    crops_seen = 0
    for seed in range(24):
        np.random.seed(seed)
        try:
            out = mapper(record)
        except ValueError:  # a crop that leaves fewer than 2 boxes: replaced by the loader
            continue
        image, boxes, crops = out["image"], out["boxes"], out["crops"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3 and min(image.shape[1:]) <= 110
        assert len(boxes) == len(crops) >= 2
        h, w = image.shape[1:]
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
        # row 0 is the white rectangle wherever the view put it: white inside, and its crop is white
        x0, y0, x1, y1 = boxes[0].round().int().tolist()
        inside = image[:, y0 + 1:y1 - 1, x0 + 1:x1 - 1].float()
        assert inside.numel() and inside.mean() > 200
        assert crops[0].float().mean() > 250 and crops[1].float().mean() < 5  # the black box's crop is black
        crops_seen += 1
    assert crops_seen >= 12


def test_first_proposals_only_and_too_few_boxes_are_errors_naming_the_file(tmp_path):
    (tmp_path / "many").mkdir()
    (tmp_path / "few").mkdir()
    record = _white_box_image(tmp_path / "many", extra=[(40 + i, 30, 60 + i, 50) for i in range(40)])
    kept = []
    for seed in range(5):
        np.random.seed(seed)
        kept.append(len(_plain_mapper(num_proposals=30)(record)["boxes"]))
    assert max(kept) == 30  # 42 proposals inside the image, the first 30 taken
    with pytest.raises(ValueError, match="num_proposals >= min_boxes"):
        _plain_mapper(num_proposals=2, min_boxes=3)
    # a tiny white box in the corner and a black box nearby: many crops keep fewer than 2 of them
    small = _white_box_image(tmp_path / "few", box=(0, 0, 4, 4), name="tiny.png")
    strict = _plain_mapper(num_proposals=2, min_boxes=2)
    errors = 0
    for seed in range(30):
        np.random.seed(seed)
        try:
            strict(small)
        except ValueError as e:
            assert "tiny.png" in str(e) and "fewer than 2" in str(e)
            errors += 1
    assert errors > 0


def test_collate_pads_images_boxes_and_crops():
    samples = [{"image": torch.full((3, 20, 30), 7, dtype=torch.uint8), "boxes": torch.ones(3, 4),
                "crops": torch.full((3, 3, 8, 8), 9, dtype=torch.uint8), "file_name": "a", "image_id": 0},
               {"image": torch.full((3, 25, 10), 5, dtype=torch.uint8), "boxes": torch.ones(2, 4) * 2,
                "crops": torch.full((2, 3, 8, 8), 4, dtype=torch.uint8), "file_name": "b", "image_id": 1}]
    batch = collate_single_views(samples)
    assert isinstance(batch, SingleViewBatch)
    assert batch.images.shape == (2, 3, 25, 30) and batch.image_sizes == [(20, 30), (25, 10)]
    assert batch.images[0, :, 20:].sum() == 0 and batch.images[1, :, :, 10:].sum() == 0
    assert batch.num_boxes == [3, 2] and batch.boxes.shape == (2, 3, 4)
    assert batch.boxes[1, 2].sum() == 0 and batch.crops[1, 2].sum() == 0 and batch.crops[1, 1].min() == 4


# ---- the configs -----------------------------------------------------------------------------------
def test_every_detreg_config_is_in_the_table():
    names = sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.startswith("detreg_"))
    assert names == sorted(DETREG_CONFIGS) == sorted(CONFIG_OF.values())


@pytest.mark.parametrize("name", sorted(DETREG_CONFIGS))
def test_detreg_configs_hold_the_release_settings(name):
    cfg = LazyConfig.load(os.path.join(REPO, "configs", name))
    model, det = cfg.model, cfg.model.detector
    detector_class, denoising = DETREG_CONFIGS[name]
    assert model._target_ is DETRegPretrain and det._target_.__name__ == detector_class
    assert det.num_classes == 1 and det.criterion is None and det.backbone.freeze_at == 5
    if denoising is not None:
        assert det.num_denoising == denoising
    assert tuple(model.embedding_levels) == ("res3",) and "res3" in tuple(det.backbone.out_features)
    assert (model.weight_class, model.weight_bbox, model.weight_giou, model.weight_embedding) == (2, 5, 2, 1)
    assert (model.cost_class, model.cost_bbox, model.cost_giou) == (2, 5, 2)
    assert (model.focal_alpha, model.focal_gamma) == (0.25, 2)
    mapper = cfg.dataloader.train.mapper
    assert (mapper.num_proposals, mapper.min_boxes, mapper.crop_size, mapper.max_size) == (30, 2, 128, 600)
    assert tuple(mapper.crop_size_range) == (384, 600) and tuple(mapper.crop_resize_sizes) == (400, 500, 600)
    assert cfg.dataloader.train.dataset.names.endswith("_ss")
    assert cfg.dataloader.train.total_batch_size == 192
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4 and cfg.train.clip_grad_norm == 0.1
    assert cfg.train.epochs == 50 and cfg.lr_multiplier.scheduler.milestones[0] == 80000  # drop at 40 of 50
    assert cfg.train.require_backbone_weights is True and cfg.dataloader.batch_transform is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_detreg_config_trains_on_the_demo_data_with_a_tiny_detector(variant, demo_ss_proposals, tmp_path):
    """configs/detreg_<variant>.py (its DETReg settings, mapper, optimiser, schedule) through the trainer for
    two iterations, with the contract test's tiny detector and small views."""
    import json

    from disco_detr.engine import Trainer

    cfg = load_config(os.path.join(REPO, "configs", CONFIG_OF[variant]), [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "train.epochs=null", "dataloader.train.dataset.names=disco_demo_unlabelled_ss",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
        "dataloader.train.mapper.scales=[64,80]", "dataloader.train.mapper.max_size=120",
        "dataloader.train.mapper.crop_resize_sizes=[80,96]", "dataloader.train.mapper.crop_size_range=[64,96]",
        "dataloader.train.mapper.crop_size=32", "dataloader.train.mapper.num_proposals=4",
        "model.health_period=1"])
    tiny = _tiny_config(variant)
    cfg.model.detector, cfg.model.embedding_levels = tiny.detector, tiny.embedding_levels
    cfg.train.require_backbone_weights = False
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))  # as tools/lazyconfig_train_net.py does
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2 and os.path.exists(tmp_path / "model_final.pth")
    with open(tmp_path / "metrics.json") as f:
        last = [json.loads(line) for line in f][-1]
    assert np.isfinite(last["loss_embedding"]) and np.isfinite(last["loss_class"])
    assert 0 <= last["pretrain_health/matched_iou"] <= 1 and -1 <= last["pretrain_health/embedding_cosine"] <= 1
    if variant == "cond":  # the analysis tools read a DETReg run: its view, proposals and matches
        from test_analysis import _png, _tool

        _tool("analyze").main(["arrows", str(tmp_path), "--images", "0", "--out", str(tmp_path / "arrows.png")])
        _png(str(tmp_path / "arrows.png"))
        summary = _tool("analyze").summarize(str(tmp_path))
        assert summary["health"]["matched_iou"] == last["pretrain_health/matched_iou"]


def test_a_dataset_refuses_a_store_of_the_other_proposal_method(demo_proposals):
    from detectron2.data import DatasetCatalog

    from disco_detr.data.pretrain_datasets import register_unlabelled_images

    root = demo_proposals
    register_unlabelled_images("detreg_test_wrong_store", os.path.join(root, "images", "unlabelled"),
                               os.path.join(root, "proposals", "unlabelled.sqlite"), "selective_search")
    with pytest.raises(ValueError, match="holds edgeboxes proposals.*--method selective_search"):
        DatasetCatalog.get("detreg_test_wrong_store")
