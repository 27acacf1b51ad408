"""Fine-tuning data: the DETR mapper, bad input, and the reproducible/resumable stream."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode
from PIL import Image

from disco_detr.data import DetrDatasetMapper, StreamDataset, StreamSampler, load_detection_dicts


def _mapper(is_train=True, num_classes=5):
    return DetrDatasetMapper(is_train=is_train, num_classes=num_classes, min_sizes=(64, 80), max_size=200,
                             crop_resize_sizes=(64,), crop_size=(40, 60))


def _record(path, boxes, classes=None, size=(60, 90)):
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)
    classes = classes or [0] * len(boxes)
    return {"file_name": str(path), "height": size[0], "width": size[1], "image_id": 1,
            "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
                            for b, c in zip(boxes, classes)]}


def test_mapper_resizes_boxes_with_the_image(tmp_path):
    record = _record(tmp_path / "a.png", [[10, 10, 30, 40]])
    mapper = DetrDatasetMapper(is_train=True, num_classes=5, min_sizes=(120,), max_size=1000,
                               crop_probability=0.0)
    np.random.seed(0)
    for _ in range(6):  # flips are random: boxes must follow the image either way
        out = mapper(record)
        assert tuple(out["image"].shape) == (3, 120, 180)
        box = out["instances"].gt_boxes.tensor[0].tolist()
        assert box in (pytest.approx([20, 20, 60, 80]), pytest.approx([120, 20, 160, 80]))
    test = _mapper(is_train=False)(record)
    assert tuple(test["image"].shape[1:]) == (64, 96) and "instances" not in test


def test_grayscale_and_alpha_images_become_rgb(tmp_path):
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((50, 40, 4), np.uint8)).save(tmp_path / "rgba.png")
    for name in ("g.png", "rgba.png"):
        rec = {"file_name": str(tmp_path / name), "height": 50, "width": 40, "image_id": 0}
        assert _mapper(is_train=False)(rec)["image"].shape[0] == 3


def test_bad_inputs_name_the_file(tmp_path):
    mapper = _mapper()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(OSError, match="corrupt.jpg"):
        mapper({"file_name": str(corrupt), "height": 1, "width": 1, "annotations": []})
    with pytest.raises(OSError, match="missing.jpg"):
        mapper({"file_name": str(tmp_path / "missing.jpg"), "annotations": []})
    with pytest.raises(ValueError, match="inverted.png.*empty or inverted box"):
        mapper(_record(tmp_path / "inverted.png", [[30, 10, 10, 40]]))
    with pytest.raises(ValueError, match="empty.png.*empty or inverted box"):
        mapper(_record(tmp_path / "empty.png", [[10, 10, 10, 40]]))
    with pytest.raises(ValueError, match="cat.png.*category id 7"):
        mapper(_record(tmp_path / "cat.png", [[1, 1, 10, 10]], classes=[7]))
    with pytest.raises(ValueError, match="size.png"):
        rec = _record(tmp_path / "size.png", [[1, 1, 10, 10]])
        rec["height"] = 61
        mapper(rec)


def test_unknown_category_in_coco_json_names_the_file(tmp_path):
    _record(tmp_path / "x.png", [])
    js = {"images": [{"id": 1, "file_name": "x.png", "height": 60, "width": 90}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5], "area": 25,
                           "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(js))
    register_coco_instances("disco_test_bad_category", {}, str(path), str(tmp_path))
    try:
        with pytest.raises(KeyError, match="bad.json"):
            load_detection_dicts("disco_test_bad_category")
    finally:
        DatasetCatalog.remove("disco_test_bad_category")


def test_bad_sample_mid_epoch_is_logged_and_skipped(tmp_path, caplog):
    good = [_record(tmp_path / f"good{i}.png", [[5, 5, 20, 20]]) for i in range(3)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    bad = {"file_name": str(tmp_path / "broken.jpg"), "height": 60, "width": 90, "image_id": 9, "annotations": []}
    ds = StreamDataset(good + [bad], _mapper(), seed=0, shuffle=False)
    with caplog.at_level(logging.WARNING):
        sample = ds[3]  # position 3 is the broken file
    assert "good" in sample["file_name"]
    assert "broken.jpg" in caplog.text


def test_stream_is_deterministic_and_epochs_are_permutations(tmp_path):
    records = [_record(tmp_path / f"r{i}.png", [[5, 5, 20 + i, 20]]) for i in range(5)]
    a = StreamDataset(records, _mapper(), seed=1)
    b = StreamDataset(records, _mapper(), seed=1)
    for pos in (0, 3, 7, 12):
        sa, sb = a[pos], b[pos]  # different call order in b below must not matter
        assert sa["file_name"] == sb["file_name"] and torch.equal(sa["image"], sb["image"])
    assert torch.equal(b[12]["image"], a[12]["image"])
    for epoch in range(3):
        assert sorted(a.index_at(epoch * 5 + k) for k in range(5)) == list(range(5))
    assert [a.index_at(k) for k in range(5)] != [a.index_at(5 + k) for k in range(5)]


def test_sampler_shards_and_resumes():
    take = lambda it, n: [next(it) for _ in range(n)]  # noqa: E731
    ranks = [take(iter(StreamSampler(0, rank=r, world_size=2)), 4) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == list(range(8))
    resumed = take(iter(StreamSampler(start=2, rank=1, world_size=2)), 2)
    assert resumed == ranks[1][2:4]


def test_demo_dataset_registration(demo_root):
    dicts = load_detection_dicts("disco_demo_train")
    assert len(dicts) == 16
    assert all(os.path.exists(d["file_name"]) for d in dicts)
    voc = DatasetCatalog.get("disco_demo_voc_val")
    assert len(voc) == 6


def test_loaders_start_no_more_workers_than_cores(tmp_path, monkeypatch, caplog):
    """num_workers above the cores this process may use is capped, with one log line; the config is unchanged."""
    from detectron2.config import LazyCall as L
    from detectron2.data import build_detection_test_loader

    from disco_detr.data import build
    from disco_detr.data.build import available_cpus, build_train_loader, cap_num_workers
    from disco_detr.engine.trainer import instantiate_capped

    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(build, "available_cpus", lambda: 2)
    monkeypatch.setattr(build, "_capped_logged", set())
    with caplog.at_level(logging.INFO, logger="detectron2"):
        assert cap_num_workers(1) == 1 and cap_num_workers(2) == 2
        assert not caplog.records
        assert cap_num_workers(8) == 2 and cap_num_workers(8) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "detectron2"] == [
        "DataLoader num_workers=8 capped at 2, the CPU cores this process may use"]
    records = [_record(tmp_path / "r.png", [[5, 5, 20, 20]])]
    assert build_train_loader(records, _mapper(), total_batch_size=1, num_workers=6).num_workers == 2
    node = L(build_detection_test_loader)(dataset=records, mapper=_mapper(is_train=False), num_workers=5)
    assert instantiate_capped(node).num_workers == 2 and node.num_workers == 5
