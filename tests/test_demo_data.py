"""Tests of the synthetic demo dataset generator (disco_detr.tooling.demo_images)."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.tooling.demo_images import (
    ObjectSpec,
    generate_demo_dataset,
    paint_object,
    render_image,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_train": 12, "num_val": 4, "num_unlabelled": 3, "image_size": 96}


def _tree_bytes(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    info = generate_demo_dataset(str(root), seed=0, **SMALL)
    return root, info


def test_deterministic_and_seed_dependent(tmp_path, small_set):
    root_a, _ = small_set
    root_b, root_c = tmp_path / "b", tmp_path / "c"
    generate_demo_dataset(str(root_b), seed=0, **SMALL)
    generate_demo_dataset(str(root_c), seed=1, **SMALL)
    files_a, files_b, files_c = _tree_bytes(root_a), _tree_bytes(root_b), _tree_bytes(root_c)
    assert files_a.keys() == files_b.keys()
    for name, data in files_a.items():
        assert data == files_b[name], name
    assert files_a["annotations/instances_train.json"] != files_c["annotations/instances_train.json"]
    assert files_a["images/train/000000.jpg"] != files_c["images/train/000000.jpg"]
    assert files_a["images/unlabelled/000000.jpg"] != files_c["images/unlabelled/000000.jpg"]
    # The unlabelled split uses its own seed stream.
    assert files_a["images/unlabelled/000000.jpg"] != files_a["images/train/000000.jpg"]


def test_coco_json(small_set):
    from pycocotools.coco import COCO

    root, info = small_set
    size = SMALL["image_size"]
    for split in ("train", "val"):
        coco = COCO(info[f"{split}_json"])
        assert len(coco.getImgIds()) == SMALL[f"num_{split}"]
        cats = coco.loadCats(coco.getCatIds())
        assert [c["name"] for c in cats] == list(DEMO_CLASSES)
        assert [c["id"] for c in cats] == list(range(1, len(DEMO_CLASSES) + 1))
        for img in coco.loadImgs(coco.getImgIds()):
            assert (img["width"], img["height"]) == (size, size)
            assert os.path.isfile(os.path.join(info[f"{split}_images"], img["file_name"]))
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            assert 1 <= len(anns) <= 8
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert all(isinstance(v, float) for v in ann["bbox"])
                assert w > 0 and h > 0
                assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
                assert ann["iscrowd"] == 0 and ann["area"] > 0
        if split == "train":
            used = {a["category_id"] for a in coco.loadAnns(coco.getAnnIds())}
            assert used == set(range(1, len(DEMO_CLASSES) + 1))
    unlabelled = sorted(os.listdir(info["unlabelled_images"]))
    assert unlabelled == [f"{i:06d}.jpg" for i in range(SMALL["num_unlabelled"])]
    assert sorted(os.listdir(root / "annotations")) == [
        "instances_train.json",
        "instances_val.json",
    ]
    from PIL import Image

    with Image.open(os.path.join(info["unlabelled_images"], "000000.jpg")) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (size, size)


def test_voc_matches_coco(small_set):
    _, info = small_set
    voc = Path(info["voc_root"])
    coco = json.loads(Path(info["train_json"]).read_text())
    stems = (voc / "ImageSets/Main/train.txt").read_text().split()
    assert stems == [f"train_{i:06d}" for i in range(SMALL["num_train"])]
    assert len((voc / "ImageSets/Main/val.txt").read_text().split()) == SMALL["num_val"]
    for img in coco["images"][:3]:
        stem = "train_" + Path(img["file_name"]).stem
        jpg = (voc / "JPEGImages" / f"{stem}.jpg").read_bytes()
        assert jpg == (Path(info["train_images"]) / img["file_name"]).read_bytes()
        tree = ET.parse(voc / "Annotations" / f"{stem}.xml").getroot()
        assert tree.findtext("filename") == f"{stem}.jpg"
        assert int(tree.findtext("size/width")) == img["width"]
        assert int(tree.findtext("size/height")) == img["height"]
        assert int(tree.findtext("size/depth")) == 3
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        objs = tree.findall("object")
        assert len(objs) == len(anns)
        for obj, ann in zip(objs, anns):
            assert obj.findtext("name") == DEMO_CLASSES[ann["category_id"] - 1]
            assert obj.findtext("difficult") == "0"
            x, y, w, h = ann["bbox"]
            got = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            # 1-based inclusive VOC: xmin = x + 1, xmax = x + w (= last pixel, 1-based).
            assert got == [round(x) + 1, round(y) + 1, round(x + w), round(y + h)]


@pytest.mark.parametrize("category_id", range(len(DEMO_CLASSES)))
@pytest.mark.parametrize("angle", [0.0, 0.4, 2.3])
def test_tight_box_encloses_painted_pixels(category_id, angle):
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    spec = ObjectSpec(category_id, 37.3, 41.8, 29.0, angle, (200, 60, 90))
    mask, box = paint_object(image, spec)
    changed = np.any(image != 0, axis=2)
    assert changed.any() and np.array_equal(changed, mask)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    expected = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    assert np.allclose(box, expected, atol=1.0), (box, expected)
    assert box == tuple(float(v) for v in expected)


def test_tight_box_is_clipped_to_image():
    image = np.zeros((50, 50, 3), dtype=np.uint8)
    spec = ObjectSpec(DEMO_CLASSES.index("circle"), 3.0, 46.0, 30.0, 0.0, (40, 170, 60))
    mask, box = paint_object(image, spec)
    changed = np.any(image != 0, axis=2)
    assert np.array_equal(changed, mask)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert box[0] == 0.0 and box[3] == 50.0
    assert box == (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def test_render_image_objects():
    counts = Counter()
    for i in range(20):
        image, objects = render_image(np.random.default_rng(i), 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert 1 <= len(objects) <= 8
        for obj in objects:
            x0, y0, x1, y1 = obj["bbox_xyxy"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            counts[obj["category_id"]] += 1
    assert set(counts) == set(range(len(DEMO_CLASSES)))


def test_skip_when_up_to_date_and_force(tmp_path):
    root = tmp_path / "demo"
    params = {**SMALL, "num_train": 3, "num_val": 2, "num_unlabelled": 2}
    assert generate_demo_dataset(str(root), **params)["generated"] is True
    files = [p for p in root.rglob("*") if p.is_file()]
    old = 1_000_000_000  # 2001, far from "now"
    for p in files:
        os.utime(p, (old, old))
    info = generate_demo_dataset(str(root), **params)
    assert info["generated"] is False
    assert all(p.stat().st_mtime == old for p in files)
    info = generate_demo_dataset(str(root), force=True, **params)
    assert info["generated"] is True
    assert all(p.stat().st_mtime > old for p in files)
    # Different parameters regenerate without force.
    assert generate_demo_dataset(str(root), **{**params, "seed": 3})["generated"] is True
    saved = json.loads((root / "demo_params.json").read_text())
    assert saved["seed"] == 3 and saved["num_train"] == 3


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "tools/make_demo_data.py"), "--out", str(out)]
    cmd += ["--num-train", "2", "--num-val", "1", "--num-unlabelled", "1", "--size", "64"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "2 train / 1 val / 1 unlabelled" in first.stdout and str(out) in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "nothing to do" in second.stdout
    assert len(list((out / "images/train").iterdir())) == 2
