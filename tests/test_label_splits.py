"""Label splits (disco_detr.data.label_splits) on tiny synthetic COCO / VOC data."""
import json
import logging
import math
import os
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.datasets import load_coco_json
from PIL import Image

from disco_detr.data import (
    LabelSplit,
    LabelSplitError,
    empty_categories,
    label_split_name,
    load_detection_dicts,
    read_label_split,
    read_ssod_split,
    register_coco_dataset,
    register_label_split,
    sample_fraction,
    sample_shots,
    write_label_split,
)
from disco_detr.data.datasets import check_dataset_available, register_builtin_voc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "bird")


def _coco_json(path, images):
    """Write a COCO json; ``images``: list of (image id, [(class index, iscrowd), ...]) in file order."""
    anns, k = [], 0
    for image_id, boxes in images:
        for c, crowd in boxes:
            k += 1
            anns.append({"id": k, "image_id": image_id, "category_id": c + 1, "bbox": [1, 2, 10, 12],
                         "area": 120, "iscrowd": crowd})
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 32, "width": 32} for i, _ in images],
            "annotations": anns, "categories": [{"id": c + 1, "name": n} for c, n in enumerate(CLASSES)]}
    path.write_text(json.dumps(data))
    return str(path)


def _mixed_images(n, ids=None):
    """n images with a box of class i % 3 (and of class 1 every 4th), then 3 without boxes and 2
    with only a crowd box (never in a split), in a shuffled file order."""
    ids = ids or [f"im{i:04d}" for i in range(n + 5)]
    images = [(ids[i], [(i % 3, 0)] + ([(1, 0)] if i % 4 == 0 else [])) for i in range(n)]
    images += [(ids[n + j], []) for j in range(3)] + [(ids[n + 3 + j], [(0, 1)]) for j in range(2)]
    order = sorted(range(len(images)), key=lambda i: (i * 7919) % len(images))
    return [images[i] for i in order]


def _register(tmp_path, name, images):
    register_coco_dataset(name, _coco_json(tmp_path / f"{name}.json", images), str(tmp_path))
    return name


def _ids(dicts):
    return [d["image_id"] for d in dicts]


def test_names_and_argument_checks():
    assert label_split_name("coco_2017_train", fraction=0.10, fold=0) == "coco_2017_train_10pct_fold0"
    assert label_split_name("coco_2017_train", fraction=0.005, fold=3) == "coco_2017_train_0p5pct_fold3"
    assert label_split_name("voc", fraction=0.29, fold=1) == "voc_29pct_fold1"  # 0.29 * 100 = 28.999...
    assert label_split_name("voc", shots=10, fold=4) == "voc_10shot_fold4"
    for bad in (dict(), dict(fraction=0.1, shots=2), dict(fraction=0.0), dict(fraction=1.5), dict(shots=0),
                dict(fraction=0.1, fold=-1)):
        with pytest.raises(ValueError):
            LabelSplit("d", **bad)
    for name in ("coco_2017_train_0p5pct_fold4", "coco_2017_train_10shot_fold0", "voc_2007_2012_trainval_10pct_fold0",
                 "disco_demo_train_25pct_fold2"):
        assert name in DatasetCatalog.list()


def test_fraction_split_size_pool_folds_and_order_independence(tmp_path):
    name = _register(tmp_path, "ls_frac", _mixed_images(200))
    dicts = DatasetCatalog.get(name)
    no_box = {d["image_id"] for d in dicts if not any(a["iscrowd"] == 0 for a in d["annotations"])}
    assert len(no_box) == 5
    splits = {(f, k): sample_fraction(dicts, LabelSplit(name, fraction=f, fold=k)) for f in (0.05, 0.1)
              for k in range(5)}
    for (f, _), ids in splits.items():
        assert len(ids) == math.floor(f * 200) and len(set(ids)) == len(ids)
        assert not set(ids) & no_box
        assert ids == sorted(ids)
    assert len({tuple(ids) for ids in splits.values()}) == len(splits)  # every fraction and fold differs
    # the loader's record order does not matter, the dataset's name does
    split = LabelSplit(name, fraction=0.1, fold=2)
    assert sample_fraction(dicts[::-1], split) == splits[(0.1, 2)]
    assert sample_fraction(dicts, LabelSplit("ls_other", fraction=0.1, fold=2)) != splits[(0.1, 2)]
    # the registered split yields the parent's records of exactly those images
    loaded = DatasetCatalog.get(split.name)
    assert _ids(loaded) == [d["image_id"] for d in dicts if d["image_id"] in set(splits[(0.1, 2)])]
    assert MetadataCatalog.get(split.name).thing_classes == list(CLASSES)


_TWO_PROCESS_SCRIPT = """
import json, sys
from detectron2.data import DatasetCatalog
from disco_detr.data import register_coco_dataset
register_coco_dataset("ls_procs", sys.argv[1], sys.argv[2])
print(json.dumps({n: [d["image_id"] for d in DatasetCatalog.get(n)]
                  for n in ("ls_procs_10pct_fold3", "ls_procs_5shot_fold1")}))
"""


def test_same_ids_on_two_processes_with_different_rank_and_hash_seed(tmp_path):
    json_file = _coco_json(tmp_path / "procs.json", _mixed_images(120))
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", PYTHONHASHSEED=str(rank + 1),
                   PYTHONPATH=os.path.join(REPO, "projects", "DisCoDETR"))
        procs.append(subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_SCRIPT, json_file, str(tmp_path)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    register_coco_dataset("ls_procs", json_file, str(tmp_path))
    assert outputs[0]["ls_procs_10pct_fold3"] == _ids(DatasetCatalog.get("ls_procs_10pct_fold3"))
    assert len(outputs[0]["ls_procs_10pct_fold3"]) == 12


def test_split_file_is_written_next_to_the_run_and_read_back(tmp_path):
    name = _register(tmp_path, "ls_file", _mixed_images(60))
    split_name = label_split_name(name, fraction=0.25, fold=1)
    run_dir = tmp_path / "output" / "label_splits"
    written = load_detection_dicts(split_name, split_dir=str(run_dir))
    data = json.loads((run_dir / f"{split_name}.json").read_text())
    assert data["image_ids"] == sorted(_ids(written)) and len(written) == 15
    assert (data["dataset"], data["fraction"], data["shots"], data["fold"]) == (name, 0.25, None, 1)
    # read back through the registry: the same images
    register_label_split(name, fraction=0.25, fold=1, split_file=str(run_dir / f"{split_name}.json"))
    assert _ids(load_detection_dicts(split_name)) == _ids(written)
    # and through the functions
    dicts = DatasetCatalog.get(name)
    split = LabelSplit(name, shots=2, fold=0)
    ids = sample_shots(dicts, split)
    path = write_label_split(str(tmp_path / "shots.json"), split, ids, dicts)
    assert read_label_split(path, split, dicts) == ids


def test_split_file_that_does_not_fit_is_refused(tmp_path):
    name = _register(tmp_path, "ls_refuse", _mixed_images(40))
    dicts = DatasetCatalog.get(name)
    split = LabelSplit(name, fraction=0.1, fold=0)
    ids = sample_fraction(dicts, split)
    good = tmp_path / "good.json"
    write_label_split(str(good), split, ids, dicts)

    def variant(tag, **changes):
        data = {**json.loads(good.read_text()), **changes}
        path = tmp_path / f"{tag}.json"
        path.write_text(json.dumps(data))
        return str(path)

    cases = {
        variant("other_dataset", dataset="coco_2017_train"): "of dataset 'coco_2017_train', not 'ls_refuse'",
        variant("other_fold", fold=3): "fold 3.*not 'ls_refuse_10pct_fold0'",
        variant("unknown_id", image_ids=ids[:-1] + ["zz_not_there"]): r"1 of 4 image id\(s\) are not images with a box",
        variant("no_box", image_ids=ids[:-1] + [next(d["image_id"] for d in dicts if not d["annotations"])]):
            "not images with a box",
        variant("twice", image_ids=ids[:-1] + ids[:1]): "listed twice",
        variant("no_format", format=None): "not a label split file",
    }
    for path, reason in cases.items():
        with pytest.raises(LabelSplitError, match=reason):
            read_label_split(path, split, dicts)
    # through the registry the refusal surfaces when the split is loaded, not when it is registered
    register_label_split(name, fraction=0.1, fold=0, split_file=variant("late", fold=2))
    with pytest.raises(LabelSplitError, match="fold 2"):
        load_detection_dicts(split.name)


def test_standard_ssod_split_file_indexes_detectron2s_filtered_list(tmp_path):
    # integer ids, not in increasing order in the file, with images without a (non-crowd) box
    images = _mixed_images(50, ids=[(i * 37) % 101 + 1 for i in range(55)])
    name = _register(tmp_path, "ls_ssod", images)
    json_file = str(tmp_path / f"{name}.json")
    # the reference: what unbiased-teacher indexes (detectron2's loader, empty images filtered)
    d2 = filter_images_with_only_crowd_annotations(load_coco_json(json_file, str(tmp_path)))
    assert len(d2) == 50
    seed_file = tmp_path / "COCO_supervision.txt"
    seed = {"10.0": {"0": [3, 41, 17, 0, 49], "1": [5, 6, 7, 8, 9]}, "2.0": {"0": [12]}}
    seed_file.write_text(json.dumps(seed))
    dicts = DatasetCatalog.get(name)
    for fraction, fold in ((0.10, 0), (0.10, 1), (0.02, 0)):
        expected = sorted(d2[i]["image_id"] for i in seed[f"{fraction * 100:.1f}"][str(fold)])
        assert read_ssod_split(str(seed_file), fraction, fold, dicts) == expected
    register_label_split(name, fraction=0.10, fold=0, split_file=str(seed_file))
    assert sorted(_ids(load_detection_dicts("ls_ssod_10pct_fold0"))) == sorted(d2[i]["image_id"] for i in seed["10.0"]["0"])

    def refused(content, fraction, fold, reason):
        path = tmp_path / "bad_seed.txt"
        path.write_text(json.dumps(content))
        with pytest.raises(LabelSplitError, match=reason):
            read_ssod_split(str(path), fraction, fold, dicts)

    refused({"10.0": {"0": [3, 41, 17, 0, 50]}}, 0.1, 0, r"index\(es\) \[50\] out of range: the dataset has 50")
    refused({"10.0": {"0": [3, 41, 17, 0, -1]}}, 0.1, 0, "out of range")
    refused({"10.0": {"0": [3, 41, 17, 0]}}, 0.1, 0, "4 indices, but 10 % of the dataset's 50 images with a box is 5")
    refused({"10.0": {"0": [3, 41, 17, 0, 3]}}, 0.1, 0, "listed twice")
    refused({"10.0": {"0": [3, 41, 17, 0, 1.5]}}, 0.1, 0, "not a list of integer indices")
    refused({"10.0": {"0": [3, 41, 17, 0, 49]}}, 0.05, 0, r"no percentage 5 .*\[10.0\]")
    refused({"10.0": {"0": [3, 41, 17, 0, 49]}}, 0.1, 4, r"no fold 4; it has folds \['0'\]")
    refused([1, 2, 3], 0.1, 0, "not a split file")
    register_label_split(name, shots=1, fold=0, split_file=str(seed_file))
    with pytest.raises(LabelSplitError, match="images per class"):
        load_detection_dicts("ls_ssod_1shot_fold0")


def test_category_without_image_in_split_is_reported(tmp_path, caplog):
    images = [(i, [(0, 0)] if i != 17 else [(2, 0)]) for i in range(1, 41)] + [(99, [(1, 0)])]
    name = _register(tmp_path, "ls_empty", images)
    for fold in range(5):
        split_name = label_split_name(name, fraction=0.1, fold=fold)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="disco_detr.data.label_splits"):
            records = DatasetCatalog.get(split_name)
        missing = empty_categories(records, CLASSES)
        assert missing == [n for n, c in zip(CLASSES, (0, 1, 2)) if not any(
            a["category_id"] == c for r in records for a in r["annotations"])]
        if "bird" in missing:
            break
    else:
        pytest.fail("no fold of the 10 % split lacks the one 'bird' image")
    assert f"Label split {split_name}" in caplog.text and "bird" in caplog.text


def test_k_shot_covers_every_class_k_times(tmp_path, caplog):
    rng = [(i * 2654435761) % 1000 for i in range(300)]
    images = []
    for i in range(300):  # dogs common, cats rarer, birds in only 2 images; some images hold two classes
        classes = [1] if rng[i] < 700 else [0]
        if rng[i] % 5 == 0:
            classes.append(0)
        images.append((i + 1, [(c, 0) for c in classes]))
    images += [(1001, [(2, 0)]), (1002, [(2, 0), (1, 0)])]
    name = _register(tmp_path, "ls_shots", images)
    dicts = DatasetCatalog.get(name)
    for k in (1, 3, 5):
        with caplog.at_level(logging.WARNING, logger="disco_detr.data.label_splits"):
            ids = sample_shots(dicts, LabelSplit(name, shots=k, fold=0))
        chosen = [d for d in dicts if d["image_id"] in set(ids)]
        per_class = [sum(any(a["category_id"] == c for a in d["annotations"]) for d in chosen) for c in range(3)]
        assert per_class[0] >= k and per_class[1] >= k
        assert per_class[2] >= min(k, 2)  # the 2 bird images: all of them once k >= 2
        assert len(ids) <= 3 * k
    assert "fewer than 3 images" in caplog.text
    folds = {tuple(sample_shots(dicts, LabelSplit(name, shots=3, fold=f))) for f in range(5)}
    assert len(folds) > 1
    assert sample_shots(dicts[::-1], LabelSplit(name, shots=3, fold=2)) == sample_shots(
        dicts, LabelSplit(name, shots=3, fold=2))


def test_registration_is_lazy_and_copies_the_parents_metadata(tmp_path):
    missing = str(tmp_path / "not_there.json")
    register_coco_dataset("ls_lazy", missing, str(tmp_path))  # the json is not read
    split_name = "ls_lazy_5pct_fold4"
    meta = MetadataCatalog.get(split_name)
    assert (meta.json_file, meta.evaluator_type, meta.label_split_parent) == (missing, "coco", "ls_lazy")
    with pytest.raises(FileNotFoundError, match="not_there.json"):
        check_dataset_available(split_name)
    with pytest.raises(KeyError, match="label splits"):
        check_dataset_available("ls_lazy_7pct_fold0")


def _voc_folder(root, year, ids):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, f"VOC{year}", sub), exist_ok=True)
    for i, image_id in enumerate(ids):
        Image.new("RGB", (40, 30)).save(os.path.join(root, f"VOC{year}", "JPEGImages", f"{image_id}.jpg"))
        name = ("dog", "cat")[i % 2]
        with open(os.path.join(root, f"VOC{year}", "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(f"<annotation><size><width>40</width><height>30</height></size><object><name>{name}</name>"
                    "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object></annotation>")
    with open(os.path.join(root, f"VOC{year}", "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


def test_voc_2007_2012_trainval_and_its_splits(tmp_path):
    _voc_folder(str(tmp_path), 2007, ["000005", "000007", "000009"])
    _voc_folder(str(tmp_path), 2012, ["2008_000002", "2008_000003", "2008_000007", "2008_000008", "2008_000009"])
    try:
        register_builtin_voc(str(tmp_path))
        both = load_detection_dicts("voc_2007_2012_trainval")
        assert len(both) == 8
        half = load_detection_dicts("voc_2007_2012_trainval_50pct_fold0")
        assert len(half) == 4 and set(_ids(half)) <= set(_ids(both))
        assert MetadataCatalog.get("voc_2007_2012_trainval_50pct_fold0").evaluator_type == "pascal_voc"
    finally:
        register_builtin_voc()


def test_demo_split_from_a_config_writes_its_file_in_the_output_dir(demo_root, tmp_path):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(os.path.join(REPO, "configs", "demo", "cond.py"))
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.dataloader.train.dataset.names = "disco_demo_train_25pct_fold0"
    cfg.dataloader.train.dataset.split_dir = "${train.output_dir}/label_splits"  # the wiring datasets/README.md gives
    dicts = instantiate(cfg.dataloader.train.dataset)
    assert len(dicts) == 4  # 25 % of the 16 demo images
    written = json.loads((tmp_path / "run" / "label_splits" / "disco_demo_train_25pct_fold0.json").read_text())
    assert written["image_ids"] == sorted(_ids(dicts)) and written["dataset"] == "disco_demo_train"
    assert MetadataCatalog.get("disco_demo_train_25pct_fold0").thing_classes == MetadataCatalog.get(
        "disco_demo_train").thing_classes
