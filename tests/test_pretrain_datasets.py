"""Unlabelled image folders + proposals as detectron2 datasets, and the pre-training loader."""
import logging

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from disco_detr.data import build_train_loader
from disco_detr.data.pretrain_datasets import list_images, load_unlabelled_images, register_unlabelled_images
from disco_detr.data.pretrain_mapper import PairedViewMapper, collate_paired_views
from disco_detr.data.proposal_store import Proposals, ProposalStore


def _folder(tmp_path, names):
    for name in names:
        path = tmp_path / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(len(name)).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return str(tmp_path / "images")


def _proposals(path, keys, height=48, width=64):
    store = ProposalStore(str(path), mode="a")
    box = np.array([[4, 4, 40, 30], [10, 8, 60, 44]], np.float32)
    store.put_many((k, Proposals(box, np.array([1.0, 0.5], np.float32), height, width, "")) for k in keys)
    store.close()
    return str(path)


def test_list_images_flat_and_imagenet_style(tmp_path):
    root = _folder(tmp_path, ["b.jpg", "a.PNG", "n01/x.jpeg", "n00/y.jpg"])
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    assert list_images(root) == ["a.PNG", "b.jpg", "n00/y.jpg", "n01/x.jpeg"]


def test_missing_proposals_file_names_the_command(tmp_path):
    root = _folder(tmp_path, ["a.jpg"])
    with pytest.raises(FileNotFoundError, match="tools/generate_proposals.py --images"):
        load_unlabelled_images("x", root, str(tmp_path / "missing.sqlite"))


def test_partial_and_mismatched_proposals(tmp_path, caplog):
    root = _folder(tmp_path, ["a.jpg", "b.jpg", "c/d.jpg"])
    store = _proposals(tmp_path / "p.sqlite", ["a.jpg", "c/d.jpg"])
    with caplog.at_level(logging.WARNING):
        dicts = load_unlabelled_images("x", root, store)
    assert [d["proposal_key"] for d in dicts] == ["a.jpg", "c/d.jpg"]
    assert "1 of 3 images have no proposals" in caplog.text
    other = _proposals(tmp_path / "other.sqlite", ["zzz.jpg"])
    with pytest.raises(ValueError, match="does not match the dataset"):
        load_unlabelled_images("x", root, other)


def test_registered_dataset_feeds_the_pretraining_loader(tmp_path, caplog):
    names = [f"im{i}.jpg" for i in range(5)]
    root = _folder(tmp_path, names)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    store = _proposals(tmp_path / "p.sqlite", names + ["broken.jpg"])
    register_unlabelled_images("disco_test_unlabelled", root, store)
    try:
        dicts = DatasetCatalog.get("disco_test_unlabelled")
        assert len(dicts) == 6
        mapper = PairedViewMapper(min_sizes=(64,), max_size=96, crop_size=16)
        loader = build_train_loader(dicts, mapper, total_batch_size=3, num_workers=0, seed=0,
                                    collate_fn=collate_paired_views)
        with caplog.at_level(logging.WARNING):
            batches = [b for _, b in zip(range(4), loader)]  # 12 samples: the broken file comes up
        assert "broken.jpg" in caplog.text
        for batch in batches:
            assert batch.images.shape[:2] == (6, 3) and batch.crops.shape == (6, 10, 3, 16, 16)
            assert batch.images.dtype == torch.uint8 and len(batch.image_sizes) == 6
    finally:
        DatasetCatalog.remove("disco_test_unlabelled")


def test_load_unlabelled_dicts_checks_names(tmp_path):
    from disco_detr.data.pretrain_datasets import load_unlabelled_dicts

    with pytest.raises(KeyError, match="not registered"):
        load_unlabelled_dicts("no_such_dataset")
    with pytest.raises(ValueError, match="not an unlabelled image folder"):
        load_unlabelled_dicts("coco_2017_val")
    root = _folder(tmp_path, ["a.jpg", "b.jpg"])
    register_unlabelled_images("disco_test_u1", root, _proposals(tmp_path / "p.sqlite", ["a.jpg", "b.jpg"]))
    try:
        dicts = load_unlabelled_dicts(["disco_test_u1", "disco_test_u1"])
        assert [d["image_id"] for d in dicts] == [0, 1, 2, 3]
    finally:
        DatasetCatalog.remove("disco_test_u1")
