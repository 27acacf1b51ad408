"""Real-world VOC folders and COCO jsons as annotation tools write them (issue 13, items 1-2).

Each case either works as detectron2 users expect or is refused before training/inference
with the file and the entry named. Images are tiny (64 x 48) files written with PIL.
"""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import load_voc_instances
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from disco_detr.data import DetrDatasetMapper, load_detection_dicts, register_coco_dataset, register_voc_dataset
from disco_detr.data.datasets import COCOFormatError
from disco_detr.data.voc import UnreadableAnnotationsError, read_voc_annotation
from disco_detr.engine import Trainer
from disco_detr.evaluation import COCODetectionEvaluator, VOCDetectionEvaluator, voc_average_precision

from conftest import REPO, TINY_CONFIG, tiny_config

CLASSES = ("cat", "dog")
W, H = 64, 48


# ----------------------------------------------------------------------------- writers

def _image(path, size=(W, H), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _xml(objects, *, style, filename, size=(W, H)):
    """A VOC annotation as ``style`` writes it. objects: (name, (xmin, ymin, xmax, ymax), difficult)."""
    parts = ["<annotation>"]
    if style == "labelme":  # labelme2voc: empty <pose/>, <truncated/>, <difficult/>, <segmented/>
        parts += ["<folder/>", f"<filename>{filename}</filename>", "<database/>", "<annotation/>", "<image/>"]
    elif style == "labelimg":
        parts += ["<folder>imgs</folder>", f"<filename>{filename}</filename>",
                  f"<path>C:\\Users\\someone\\imgs\\{filename}</path>", "<source><database>Unknown</database></source>"]
    else:
        parts += ["<folder>VOC</folder>", f"<filename>{filename}</filename>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    parts.append("<segmented/>" if style == "labelme" else "<segmented>0</segmented>")
    for name, box, difficult in objects:
        coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        if style == "labelme":
            flag = "<difficult>1</difficult>" if difficult else "<difficult/>"
            parts.append(f"<object><name>{name}</name><pose/><truncated/>{flag}<bndbox>{coords}</bndbox></object>")
        elif style == "cvat":  # CVAT: <occluded>, <attributes>, flags after the box
            parts.append(f"<object><name>{name}</name><occluded>0</occluded><bndbox>{coords}</bndbox>"
                         "<attributes><attribute><name>rotation</name><value>0.0</value></attribute></attributes>"
                         f"<difficult>{int(difficult)}</difficult><truncated>0</truncated><pose>Unspecified</pose>"
                         "</object>")
        elif style == "no_pose":
            parts.append(f"<object><name>{name}</name><truncated>0</truncated><difficult>{int(difficult)}</difficult>"
                         f"<bndbox>{coords}</bndbox></object>")
        else:  # devkit / LabelImg
            parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                         f"<difficult>{int(difficult)}</difficult><bndbox>{coords}</bndbox></object>")
    parts.append("</annotation>")
    return "\n".join(parts)


# per image: (name, VOC box, difficult); floats where tools write them
OBJECTS = {
    "img_a": [("cat", (3.5, 5.25, 30.75, 40.5), False), ("dog", (33.0, 2.0, 64.0, 48.0), False)],
    "img_b": [("dog", (10.2, 12.8, 50.6, 30.4), False), ("cat", (1.0, 1.0, 12.0, 10.0), True)],
    "img_c": [("cat", (20.0, 8.0, 44.0, 47.0), False)],
}
INT_OBJECTS = {k: [(n, tuple(int(round(c)) for c in b), d) for n, b, d in v] for k, v in OBJECTS.items()}


def make_voc(root, style, objects=OBJECTS, split="val"):
    """A VOC folder in ``style``; returns (dirname, split) to register it with."""
    flat = style == "labelimg"
    ann_dir = root if flat else os.path.join(root, "Annotations")
    img_dir = root if flat else os.path.join(root, "JPEGImages")
    os.makedirs(ann_dir, exist_ok=True)
    ext = ".png" if style == "cvat" else ".jpg"
    for k, (stem, objs) in enumerate(objects.items()):
        _image(os.path.join(img_dir, stem + ext), seed=k)
        size = None if style == "missing_size" else (W, H)
        xml_style = "labelme" if style == "missing_size" else style
        with open(os.path.join(ann_dir, stem + ".xml"), "w") as f:
            f.write(_xml(objs, style=xml_style, filename=stem + ext, size=size))
    if flat:
        return root, None
    split = "default" if style == "cvat" else split
    os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("\r\n".join(objects) + "\r\n\r\n")  # CRLF and a blank line, as Windows tools leave them
    return root, split


def _register_voc(name, root, style, objects=OBJECTS, year=2012):
    dirname, split = make_voc(str(root), style, objects)
    register_voc_dataset(name, dirname, split, CLASSES, year=year)
    return dirname, split


# ----------------------------------------------------------------------------- VOC: reading

VOC_STYLES = ("devkit", "labelme", "cvat", "labelimg", "missing_size", "no_pose")


@pytest.mark.parametrize("style", VOC_STYLES)
def test_voc_styles_load_with_detectron2_coordinates(tmp_path, style):
    name = f"rd_voc_{style}"
    _register_voc(name, tmp_path, style)
    dicts = load_detection_dicts(name, filter_empty=False, strict=True)
    assert [d["image_id"] for d in dicts] == sorted(OBJECTS)
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and (d["width"], d["height"]) == (W, H)
        expected = OBJECTS[d["image_id"]]
        assert len(d["annotations"]) == len(expected)
        for ann, (cls, (x0, y0, x1, y1), difficult) in zip(d["annotations"], expected):
            assert ann["bbox_mode"] == BoxMode.XYXY_ABS
            assert ann["bbox"] == [x0 - 1, y0 - 1, x1, y1]  # VOC 1-based -> 0-based on the min side only
            assert ann["category_id"] == CLASSES.index(cls) and ann["difficult"] == int(difficult)
    # training mapper accepts every record
    mapper = DetrDatasetMapper(is_train=True, num_classes=2, min_sizes=(48,), max_size=100, crop_probability=0.0)
    for d in dicts:
        assert len(mapper(d)["instances"]) == len(OBJECTS[d["image_id"]])


def test_voc_reader_agrees_with_detectron2_on_devkit_files(tmp_path):
    """On files detectron2's own loader can read, both give the same dicts."""
    dirname, split = make_voc(str(tmp_path), "devkit", INT_OBJECTS)
    register_voc_dataset("rd_voc_reference", dirname, split, CLASSES)
    ours = DatasetCatalog.get("rd_voc_reference")
    ref = load_voc_instances(dirname, split, CLASSES)
    assert len(ours) == len(ref) == 3
    for a, b in zip(ours, ref):
        assert {k: a[k] for k in ("file_name", "image_id", "height", "width")} == \
               {k: b[k] for k in ("file_name", "image_id", "height", "width")}
        assert [(x["bbox"], x["category_id"]) for x in a["annotations"]] == \
               [(x["bbox"], x["category_id"]) for x in b["annotations"]]


def test_voc_flags_and_size_from_image(tmp_path):
    xml = tmp_path / "x.xml"
    _image(str(tmp_path / "x.png"), size=(40, 30))
    xml.write_text("<annotation><filename>x.png</filename><size><width></width><height/></size>"
                   "<object><name> cat </name><difficult>true</difficult><truncated>1.0</truncated>"
                   "<bndbox><xmin> 1.5 </xmin><ymin>2</ymin><xmax>10</xmax><ymax>12.25</ymax></bndbox></object>"
                   "</annotation>")
    ann = read_voc_annotation(str(xml))
    assert (ann.width, ann.height) == (40, 30) and ann.image_file == str(tmp_path / "x.png")
    (obj,) = ann.objects
    assert obj.name == "cat" and obj.box == (1.5, 2.0, 10.0, 12.25)
    assert obj.difficult and obj.truncated and obj.pose == "Unspecified"


BAD_VOC = {
    "not_xml.xml": ("<annotation><object>", "not a readable XML file"),
    "wrong_root.xml": ("<doc></doc>", "root element is <doc>"),
    "no_name.xml": ("<annotation><size><width>64</width><height>48</height></size><object><bndbox><xmin>1</xmin>"
                    "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>", "<name> is missing"),
    "no_xmax.xml": ("<annotation><size><width>64</width><height>48</height></size><object><name>cat</name>"
                    "<bndbox><xmin>1</xmin><ymin>1</ymin><ymax>5</ymax></bndbox></object></annotation>",
                    "<xmax> is missing"),
    "text_coord.xml": ("<annotation><size><width>64</width><height>48</height></size><object><name>cat</name>"
                       "<bndbox><xmin>1</xmin><ymin>one</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
                       "</annotation>", "<ymin> is 'one', not a number"),
    "bad_flag.xml": ("<annotation><size><width>64</width><height>48</height></size><object><name>cat</name>"
                     "<difficult>maybe</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
                     "</bndbox></object></annotation>", "<difficult> is 'maybe'"),
    "no_size_no_image.xml": ("<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
                             "<ymax>5</ymax></bndbox></object></annotation>", "no <size> and no image"),
}


@pytest.mark.parametrize("file_name", sorted(BAD_VOC))
def test_unreadable_voc_file_is_refused_by_name(tmp_path, file_name):
    text, message = BAD_VOC[file_name]
    (tmp_path / file_name).write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_voc_annotation(str(tmp_path / file_name))
    assert file_name in str(info.value)


def test_voc_split_and_class_problems_are_refused(tmp_path):
    dirname, split = make_voc(str(tmp_path / "dup"), "devkit")
    with open(os.path.join(dirname, "ImageSets", "Main", "val.txt"), "a") as f:
        f.write("img_a\n")
    register_voc_dataset("rd_voc_dup", dirname, split, CLASSES)
    with pytest.raises(ValueError, match="val.txt: id 'img_a' is listed twice"):
        load_detection_dicts("rd_voc_dup", strict=True)
    register_voc_dataset("rd_voc_classes", dirname, "val", ("cat",))  # 'dog' missing from the list
    with open(os.path.join(dirname, "ImageSets", "Main", "val.txt"), "w") as f:
        f.write("img_a\n")
    with pytest.raises(ValueError, match=r"'dog' \(e.g. in .*img_a.xml\)"):
        load_detection_dicts("rd_voc_classes")
    register_voc_dataset("rd_voc_nosplit", dirname, "test", CLASSES)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_detection_dicts("rd_voc_nosplit")


def test_unreadable_training_file_is_logged_and_left_out(tmp_path, caplog):
    dirname, split = _register_voc("rd_voc_train_bad", tmp_path, "labelme")
    with open(os.path.join(dirname, "Annotations", "img_b.xml"), "w") as f:
        f.write("<annotation><object>")  # truncated by a crashed export
    with caplog.at_level(logging.WARNING):
        dicts = load_detection_dicts("rd_voc_train_bad", filter_empty=True, strict=False)
    assert [d["image_id"] for d in dicts] == ["img_a", "img_c"]
    assert "img_b.xml" in caplog.text and "left out" in caplog.text
    with pytest.raises(UnreadableAnnotationsError, match="img_b.xml"):
        load_detection_dicts("rd_voc_train_bad", filter_empty=False, strict=True)


class _CountingModel(torch.nn.Module):
    """Counts forward calls; returns no detections."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batched_inputs):
        self.calls += 1
        return [{"instances": Instances((x["height"], x["width"]), pred_boxes=Boxes(torch.zeros(0, 4)),
                                        scores=torch.zeros(0), pred_classes=torch.zeros(0, dtype=torch.int64))}
                for x in batched_inputs]


def _voc_eval_config(output_dir, dataset_name):
    """tiny_cond with the VOC config's evaluators, evaluating ``dataset_name`` (2 classes)."""
    from detectron2.config import LazyConfig

    cfg = tiny_config(str(output_dir), f"dataloader.test.dataset.names={dataset_name}", "model.num_classes=2")
    cfg.dataloader.evaluator = LazyConfig.load(os.path.join(REPO, "configs", "finetune_cond_voc.py")).dataloader.evaluator
    return cfg


def test_bad_eval_annotation_fails_before_inference(tmp_path):
    dirname, _ = _register_voc("rd_voc_eval_bad", tmp_path / "voc", "labelme")
    with open(os.path.join(dirname, "Annotations", "img_c.xml"), "w") as f:
        f.write("<annotation><object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    cfg = _voc_eval_config(tmp_path / "out", "rd_voc_eval_bad")
    model = _CountingModel()
    with pytest.raises(UnreadableAnnotationsError, match=r"img_c.xml: no <size>|img_c.xml: object 0"):
        Trainer.test(cfg, model)
    assert model.calls == 0
    with pytest.raises(UnreadableAnnotationsError, match="img_c.xml"):  # the evaluator on its own, too
        VOCDetectionEvaluator("rd_voc_eval_bad")
    # a missing image of the evaluation set: found by the strict test loader, before inference
    _register_voc("rd_voc_eval_noimg", tmp_path / "voc2", "devkit")
    os.remove(tmp_path / "voc2" / "JPEGImages" / "img_b.jpg")
    with pytest.raises(OSError, match="img_b.jpg"):
        Trainer.test(_voc_eval_config(tmp_path / "out2", "rd_voc_eval_noimg"), model)
    assert model.calls == 0


# ----------------------------------------------------------------------------- VOC: AP

class _Oracle(torch.nn.Module):
    """Predicts each image's ground truth (difficult boxes too), score 1 - 0.01 k."""

    def __init__(self, dataset_name):
        super().__init__()
        self.gt = {d["image_id"]: d for d in DatasetCatalog.get(dataset_name)}

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            annos = self.gt[x["image_id"]]["annotations"]
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
            out.append({"instances": Instances(
                (x["height"], x["width"]), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)),
                scores=1.0 - 0.01 * torch.arange(len(boxes), dtype=torch.float64),
                pred_classes=torch.tensor([a["category_id"] for a in annos], dtype=torch.int64))})
        return out


def _run(evaluator, dataset_name, model):
    evaluator.reset()
    for record in DatasetCatalog.get(dataset_name):
        inputs = [{"image_id": record["image_id"], "height": record["height"], "width": record["width"]}]
        evaluator.process(inputs, model(inputs))
    return evaluator.evaluate()


@pytest.mark.parametrize("year", (2007, 2012))
def test_voc_ap_of_oracle_is_100(tmp_path, year):
    _register_voc("rd_voc_oracle", tmp_path, "labelme", year=year)  # float boxes, a difficult object
    result = _run(VOCDetectionEvaluator("rd_voc_oracle", num_classes=2), "rd_voc_oracle", _Oracle("rd_voc_oracle"))
    voc = result["pascal_voc"]
    assert voc["AP50"] == pytest.approx(100.0) and voc["AP75"] == pytest.approx(100.0)
    assert voc["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="predicts 3 classes"):
        VOCDetectionEvaluator("rd_voc_oracle", num_classes=3)


def test_voc_config_evaluators_score_an_oracle_100_again_and_again(tmp_path):
    """Both evaluators of configs/finetune_cond_voc.py on a labelme-style folder (float boxes, a
    difficult object), twice in one process with different output folders, as periodic evaluation does."""
    import shutil

    _register_voc("rd_voc_cfg", tmp_path / "voc", "labelme")
    oracle = _Oracle("rd_voc_cfg")
    for run in ("first", "second"):
        results = Trainer.test(_voc_eval_config(tmp_path / run, "rd_voc_cfg"), oracle)
        assert results["bbox"]["AP"] == pytest.approx(100.0)  # COCO-style AP on the converted VOC boxes
        assert results["pascal_voc"]["AP"] == pytest.approx(100.0)
        shutil.rmtree(tmp_path / run)  # the converted json is gone: the next evaluation must convert again
    assert len(load_detection_dicts("rd_voc_cfg", filter_empty=False)) == 3


def test_training_loader_on_a_labelme_voc_folder(tmp_path, caplog):
    """The training loader of the config reads the same folder; an unreadable file is logged and left out."""
    from detectron2.config import instantiate

    dirname, _ = _register_voc("rd_voc_fit", tmp_path / "voc", "labelme")
    with open(os.path.join(dirname, "Annotations", "img_c.xml"), "w") as f:
        f.write("")
    cfg = tiny_config(str(tmp_path / "out"), "dataloader.train.dataset.names=rd_voc_fit", "model.num_classes=2",
                      "dataloader.train.total_batch_size=2")
    with caplog.at_level(logging.WARNING):
        batch = next(iter(instantiate(cfg.dataloader.train)))
    assert "img_c.xml: not a readable XML file" in caplog.text
    assert sorted(os.path.basename(x["file_name"]) for x in batch) == ["img_a.jpg", "img_b.jpg"]
    assert all(x["instances"].gt_classes.max() <= 1 for x in batch if len(x["instances"]))


def test_voc_ap_hand_computed():
    # 2 positives; detections in score order: TP, FP, TP -> recall .5 .5 1, precision 1 .5 2/3
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_average_precision(recall, precision, use_07_metric=False) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_average_precision(recall, precision, use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)


@pytest.mark.parametrize("year", (2007, 2012))
def test_voc_ap_matches_detectron2_on_devkit_files(tmp_path, year):
    """Random predictions on integer devkit files: the same AP as detectron2's evaluator."""
    dirname, split = make_voc(str(tmp_path), "devkit", INT_OBJECTS)
    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(INT_OBJECTS) + "\n")  # detectron2's evaluator reads a blank line as an id
    register_voc_dataset("rd_voc_vs_d2", dirname, split, CLASSES, year=year)
    rng = np.random.default_rng(year)
    scores = rng.permutation(np.arange(1, 61)) / 64.0  # distinct, exact in 3 decimals' order

    class Noisy(torch.nn.Module):
        def forward(self, batched_inputs):
            (x,) = batched_inputs
            k = sorted(INT_OBJECTS).index(x["image_id"])
            gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                  for a in DatasetCatalog.get("rd_voc_vs_d2")[k]["annotations"]]
            boxes = [np.add(b, rng.integers(-6, 7, 4) / 2.0) for b in gt for _ in range(3)]
            for _ in range(4):  # background boxes
                (x0, x1), (y0, y1) = np.sort(rng.integers(0, 129, 2)) / 2.0, np.sort(rng.integers(0, 97, 2)) / 2.0
                boxes.append([x0, y0, x1 + 1, y1 + 1])
            boxes = np.array(boxes)  # multiples of 0.5: exact in float32 and in detectron2's '%.1f' text
            n = len(boxes)
            return [{"instances": Instances(
                (H, W), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                scores=torch.tensor(scores[20 * k:20 * k + n], dtype=torch.float32),
                pred_classes=torch.tensor(rng.integers(0, 2, n)))}]

    model = Noisy()
    recorded = []
    for record in DatasetCatalog.get("rd_voc_vs_d2"):
        inputs = [{"image_id": record["image_id"], "height": H, "width": W}]
        recorded.append((inputs, model(inputs)))
    ours, ref = VOCDetectionEvaluator("rd_voc_vs_d2"), PascalVOCDetectionEvaluator("rd_voc_vs_d2")
    for evaluator in (ours, ref):
        evaluator.reset()
        for inputs, outputs in recorded:
            evaluator.process(inputs, outputs)
    a, b = ours.evaluate()["pascal_voc"], ref.evaluate()["bbox"]
    assert 0 < b["AP50"] < 100
    for key in ("AP", "AP50", "AP75"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


# ----------------------------------------------------------------------------- COCO

def _coco(tmp_path):
    """A tool-exported json: category ids 3/7/42, an image without boxes, a crowd box, boxes partly
    and wholly outside the image, a zero-area box, sub-folder file names, no area/iscrowd on some
    annotations, an image without height/width."""
    root = tmp_path / "coco_images"
    names = ["batch1/a.png", "batch1/b.png", "batch2/deep/c.jpg", "d.png"]
    for k, n in enumerate(names):
        _image(str(root / n), seed=k)
    images = [{"id": 10 + k, "file_name": n, "height": H, "width": W} for k, n in enumerate(names)]
    del images[3]["height"], images[3]["width"]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [4, 5, 20, 15], "area": 300, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 42, "bbox": [50, 30, 30, 30], "iscrowd": 0},  # partly outside
        {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 1},  # crowd
        {"id": 4, "image_id": 11, "category_id": 7, "bbox": [10.5, 8.25, 30.5, 20.0]},  # no area, no iscrowd
        {"id": 5, "image_id": 11, "category_id": 3, "bbox": [12, 12, 0, 9], "area": 0, "iscrowd": 0},  # zero area
        {"id": 6, "image_id": 13, "category_id": 42, "bbox": [2, 3, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 7, "image_id": 13, "category_id": 3, "bbox": [70, 10, 5, 5], "area": 25, "iscrowd": 0},  # outside
    ]
    # image 12 (batch2/deep/c.jpg) has no annotations
    cats = [{"id": 42, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(data))
    return str(path), str(root), data


def test_coco_export_cases_load_as_detectron2_does(tmp_path, caplog):
    json_file, root, _ = _coco(tmp_path)
    register_coco_dataset("rd_coco", json_file, root)
    with caplog.at_level(logging.INFO):
        dicts = load_detection_dicts("rd_coco", filter_empty=False, strict=True)
    meta = MetadataCatalog.get("rd_coco")
    assert meta.thing_classes == ["cat", "dog", "bird"]  # increasing category id: 3, 7, 42
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2}
    by_id = {d["image_id"]: d for d in dicts}
    assert sorted(by_id) == [10, 11, 12, 13]
    assert by_id[12]["file_name"] == os.path.join(root, "batch2/deep/c.jpg") and by_id[12]["annotations"] == []
    assert (by_id[13]["width"], by_id[13]["height"]) == (W, H)  # read from the image
    assert [(a["category_id"], a["iscrowd"]) for a in by_id[10]["annotations"]] == [(0, 0), (2, 0), (1, 1)]
    assert [a["bbox"] for a in by_id[11]["annotations"]] == [[10.5, 8.25, 30.5, 20.0]]  # zero-area box 5 dropped
    assert "zero width or height" in caplog.text and "[5]" in caplog.text
    assert "wholly outside" in caplog.text
    # training: the image without boxes is dropped, crowd boxes are not trained on, boxes are clipped
    train = load_detection_dicts("rd_coco", filter_empty=True)
    assert sorted(d["image_id"] for d in train) == [10, 11, 13]
    mapper = DetrDatasetMapper(is_train=True, num_classes=3, min_sizes=(48,), max_size=64, crop_probability=0.0)
    np.random.seed(0)
    out = mapper(by_id[10])
    boxes = out["instances"].gt_boxes.tensor
    assert out["instances"].gt_classes.tolist() == [0, 2]  # no crowd box
    assert float(boxes[:, 2].max()) <= W and float(boxes[:, 3].max()) <= H  # the partly-outside box is clipped
    assert len(mapper(by_id[13])["instances"]) == 1  # the box outside the image is gone after clipping


def test_coco_oracle_through_the_evaluator_maps_category_ids_back(tmp_path):
    json_file, root, data = _coco(tmp_path)
    register_coco_dataset("rd_coco_eval", json_file, root)
    cfg = tiny_config(str(tmp_path / "out"), "dataloader.test.dataset.names=rd_coco_eval", "model.num_classes=3")
    oracle = _Oracle("rd_coco_eval")
    results = Trainer.test(cfg, oracle)["bbox"]
    # zero-area box 5 and crowd box 3 are not predicted: the crowd box is an ignore region,
    # the zero-area box (kept in the json) is the one miss
    assert 0 < results["AP50"] < 100 and results["AP-cat"] < 100 and results["AP-bird"] == pytest.approx(100.0)
    written = json.loads((tmp_path / "out" / "inference" / "coco_instances_results.json").read_text())
    assert {r["category_id"] for r in written} == {3, 7, 42}
    # without the zero-area box everything is found
    data["annotations"] = [a for a in data["annotations"] if a["id"] != 5]
    (tmp_path / "export.json").write_text(json.dumps(data))
    results = Trainer.test(cfg, _Oracle("rd_coco_eval"))["bbox"]
    assert results["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="predicts 5 classes but .*export.json has 3"):
        COCODetectionEvaluator("rd_coco_eval", output_dir=str(tmp_path / "o"), num_classes=5)


def _mutate(data, what):
    a = data["annotations"]
    if what == "unknown category":
        a[1]["category_id"] = 5
    elif what == "duplicate annotation id":
        a[2]["id"] = 1
    elif what == "annotation without id":
        del a[3]["id"]
    elif what == "bbox of 3 numbers":
        a[1]["bbox"] = [1, 2, 3]
    elif what == "negative width":
        a[1]["bbox"] = [10, 10, -4, 5]
    elif what == "text in bbox":
        a[1]["bbox"] = [10, "10", 4, 5]
    elif what == "iscrowd 2":
        a[1]["iscrowd"] = 2
    elif what == "ignore set":
        a[1]["ignore"] = 1
    elif what == "duplicate image id":
        data["images"][1]["id"] = 10
    elif what == "image without file_name":
        del data["images"][1]["file_name"]
    elif what == "duplicate category id":
        data["categories"][1]["id"] = 42
    elif what == "no categories key":
        del data["categories"]
    return data


COCO_REFUSALS = {
    "unknown category": r"annotations\[1\] \(id 2, image 10\): category_id 5 is not in 'categories'",
    "duplicate annotation id": r"annotations\[2\] \(id 1, image 10\): id used twice",
    "annotation without id": r"annotations\[3\] \(id None, image 11\): no 'id'",
    "bbox of 3 numbers": r"annotations\[1\] .*'bbox' is \[1, 2, 3\]",
    "negative width": r"annotations\[1\] .*negative width or height",
    "text in bbox": r"annotations\[1\] .*not \[x, y, width, height\]",
    "iscrowd 2": r"annotations\[1\] .*'iscrowd' is 2",
    "ignore set": r"annotations\[1\] .*'ignore' is set",
    "duplicate image id": r"images\[1\] \(id 10\): id used twice",
    "image without file_name": r"images\[1\] \(id 11\): no 'file_name'",
    "duplicate category id": r"categories\[1\]: id 42 is used twice",
    "no categories key": r"not a COCO detection file",
}


@pytest.mark.parametrize("case", sorted(COCO_REFUSALS))
def test_bad_coco_entries_are_refused_at_load_naming_file_and_entry(tmp_path, case):
    json_file, root, data = _coco(tmp_path)
    (tmp_path / "export.json").write_text(json.dumps(_mutate(data, case)))
    register_coco_dataset("rd_coco_bad", json_file, root)
    with pytest.raises(COCOFormatError, match=COCO_REFUSALS[case]) as info:
        load_detection_dicts("rd_coco_bad")
    assert "export.json" in str(info.value)


def test_coco_not_json_and_missing_image_in_eval_set(tmp_path):
    json_file, root, data = _coco(tmp_path)
    register_coco_dataset("rd_coco_broken", json_file, root)
    (tmp_path / "export.json").write_text(json.dumps(data)[:-20])
    with pytest.raises(COCOFormatError, match="export.json: not valid JSON"):
        load_detection_dicts("rd_coco_broken")
    (tmp_path / "export.json").write_text(json.dumps(data))
    os.remove(os.path.join(root, "batch1", "b.png"))
    assert len(load_detection_dicts("rd_coco_broken", filter_empty=False)) == 4  # training: the mapper skips it
    with pytest.raises(OSError, match=r"batch1/b.png"):
        load_detection_dicts("rd_coco_broken", filter_empty=False, strict=True)


# ----------------------------------------------------------------------------- end to end

def test_eval_only_on_labelme_voc_folder_through_the_tool(tmp_path):
    dirname, split = make_voc(str(tmp_path / "labelme_voc"), "labelme")
    config = tmp_path / "labelme_voc_eval.py"
    config.write_text(f'''
from detectron2.config import LazyConfig
from disco_detr.data import register_voc_dataset

_tiny = LazyConfig.load({TINY_CONFIG!r})
_voc = LazyConfig.load({os.path.join(REPO, "configs", "finetune_cond_voc.py")!r})
model, dataloader, optimizer, train, lr_multiplier = (
    _tiny.model, _tiny.dataloader, _tiny.optimizer, _tiny.train, _tiny.lr_multiplier)
register_voc_dataset("my_labelme_val", {dirname!r}, {split!r}, ["cat", "dog"])
model.num_classes = 2
dataloader.test.dataset.names = "my_labelme_val"
dataloader.evaluator = _voc.dataloader.evaluator
''')
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "lazyconfig_train_net.py"), "--config-file", str(config),
         "--eval-only", f"train.output_dir={out}"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "[bbox] AP " in text and "[pascal_voc] AP " in text and "AP50 " in text
    assert "copypaste: Task: pascal_voc" in text and "copypaste: Task: bbox" in text


def test_a_voc_test_set_gets_voc_ap_beside_the_configs_coco_evaluator(tmp_path, demo_root):
    """The demo / COCO evaluator alone (configs/common/data/detr_detection.py) on a VOC dataset: the trainer adds
    VOC AP; a config that already has it gets it once; a COCO-type dataset gets COCO-style AP only."""
    _register_voc("rd_voc_auto", tmp_path / "voc", "labelme")
    cfg = tiny_config(str(tmp_path / "out"), "dataloader.test.dataset.names=rd_voc_auto", "model.num_classes=2")
    assert cfg.dataloader.evaluator._target_ is COCODetectionEvaluator
    results = Trainer.test(cfg, _Oracle("rd_voc_auto"))
    assert set(results) == {"bbox", "pascal_voc"}
    assert results["bbox"]["AP"] == pytest.approx(100.0) and results["pascal_voc"]["AP"] == pytest.approx(100.0)
    results = Trainer.test(_voc_eval_config(tmp_path / "out2", "rd_voc_auto"), _Oracle("rd_voc_auto"))
    assert set(results) == {"bbox", "pascal_voc"}
    assert set(Trainer.test(tiny_config(str(tmp_path / "out3")), _Oracle("disco_demo_val"))) == {"bbox"}
