"""tools/predict.py on a folder of demo images with a bad file, an EXIF-rotated, a grey 16-bit and an RGBA image."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig
from PIL import Image
from pycocotools.coco import COCO
from tiny_detectors import tiny_config, tiny_detector

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.deploy import read_image


def _tool():
    from disco_detr.tooling import predict

    return predict


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    """A tiny Conditional DETR (tests/test_export.py's) saved as a fine-tuned checkpoint, with its config."""
    detector = tiny_detector("cond")
    weights = str(tmp_path / "model_final.pth")
    torch.save({"model": detector.state_dict()}, weights)
    config = str(tmp_path / "tiny.yaml")
    cfg = tiny_config("cond")
    cfg.dataloader.test.mapper.min_sizes = (80,)
    LazyConfig.save(cfg, config)
    return detector, config, weights


def _folder(tmp_path, demo_root):
    folder = tmp_path / "images"
    folder.mkdir()
    val = os.path.join(demo_root, "images", "val")
    first, second = sorted(os.listdir(val))[:2]
    image = np.asarray(Image.open(os.path.join(val, first)).convert("RGB"))
    Image.open(os.path.join(val, second)).save(folder / "b_plain.jpg")
    wide = np.ascontiguousarray(image[:60])                      # 60 x 96, so that rotation shows
    exif = Image.Exif()
    exif[0x0112] = 6                                            # displayed rotated 90 degrees clockwise
    Image.fromarray(wide).save(folder / "c_exif.jpg", exif=exif)
    Image.fromarray(image[..., 1].astype(np.uint16) * 257).save(folder / "d_grey16.png")
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])).save(folder / "e_rgba.png")
    (folder / "a_broken.jpg").write_bytes(b"\xff\xd8 truncated, not a JPEG")
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def test_predict_on_a_folder_with_a_bad_image(tmp_path, demo_root, tiny_checkpoint, capsys):
    detector, config, weights = tiny_checkpoint
    folder = _folder(tmp_path, demo_root)
    out = tmp_path / "out"
    code = _tool().main(["--config-file", config, "--weights", weights, "--input", str(folder), "--output", str(out),
                         "--confidence", "0", "--batch-size", "2", "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err + captured.out and "a_broken.jpg" in captured.err + captured.out
    pictures = sorted(p for p in os.listdir(out) if not p.endswith(".json"))
    assert pictures == ["b_plain.jpg", "c_exif.jpg", "d_grey16.png", "e_rgba.png"]

    meta = json.load(open(out / "images.json"))
    sizes = {os.path.basename(m["file_name"]): (m["height"], m["width"]) for m in meta["images"]}
    assert sizes["c_exif.jpg"] == (96, 60)                       # the displayed (rotated) size
    assert [c["name"] for c in meta["categories"]] == list(DEMO_CLASSES)
    # a picture is the image as displayed (Visualizer may scale it up, keeping the aspect)
    pic = Image.open(out / "c_exif.jpg")
    assert abs(pic.width / pic.height - 60 / 96) < 0.02

    gt = COCO(str(out / "images.json"))
    dets = gt.loadRes(str(out / "predictions.json"))
    assert len(dets.getAnnIds()) == len(json.load(open(out / "predictions.json"))) > 0
    assert set(dets.getImgIds()) == set(gt.getImgIds())
    k = min(detector.num_detections, detector.num_queries * detector.num_classes)
    for image_id, m in gt.imgs.items():
        anns = dets.loadAnns(dets.getAnnIds(imgIds=[image_id]))
        assert 0 < len(anns) <= k
        for a in anns:
            x, y, w, h = a["bbox"]
            assert -1e-3 <= x and x + w <= m["width"] + 1e-3 and -1e-3 <= y and y + h <= m["height"] + 1e-3
            assert gt.cats[a["category_id"]]["name"] == a["category"]    # the dataset's own ids (demo: 1..5)

    # the JSON holds the model's own detections in pixels of the original image (xywh); e_rgba.png shares its
    # batch with d_grey16.png, of the same size, so no padding changes its result
    plain = read_image(str(folder / "e_rgba.png"))
    from detectron2.data import transforms as T

    resized = T.ResizeShortestEdge(80, max_size=300).get_transform(plain).apply_image(plain)
    with torch.no_grad():
        inst = detector([{"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()), "height": plain.shape[0],
                          "width": plain.shape[1]}])[0]["instances"]
    plain_id = next(i for i, m in gt.imgs.items() if m["file_name"].endswith("e_rgba.png"))
    anns = sorted(dets.loadAnns(dets.getAnnIds(imgIds=[plain_id])), key=lambda a: -a["score"])
    xyxy = inst.pred_boxes.tensor.numpy()
    np.testing.assert_allclose([a["score"] for a in anns], inst.scores.numpy(), atol=1e-5)
    np.testing.assert_allclose([a["bbox"] for a in anns],
                               np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1), atol=1e-3)


def test_predict_refuses_a_pretraining_checkpoint_and_a_missing_input(tmp_path, demo_root, tiny_checkpoint, capsys):
    detector, config, _ = tiny_checkpoint
    state = {f"detector.{k}": v for k, v in detector.state_dict().items()}
    pretrain = tmp_path / "pretrain.pth"
    torch.save({"model": state}, pretrain)
    folder = _folder(tmp_path, demo_root)
    args = ["--config-file", config, "--output", str(tmp_path / "o"), "--device", "cpu"]
    assert _tool().main([*args, "--weights", str(pretrain), "--input", str(folder)]) == 2
    assert "pre-training checkpoint" in capsys.readouterr().err
    assert _tool().main([*args, "--weights", str(pretrain), "--input", str(tmp_path / "nothing*.jpg")]) == 2
    assert "nothing*.jpg" in capsys.readouterr().err


def test_predict_summary_names_the_highest_score_when_nothing_passes(tmp_path, demo_root, tiny_checkpoint, capsys):
    """A weak model's empty pictures come with the highest score seen and the --confidence that keeps it."""
    _, config, weights = tiny_checkpoint
    folder = _folder(tmp_path, demo_root)
    args = ["--config-file", config, "--weights", weights, "--input", str(folder), "--batch-size", "2",
            "--device", "cpu"]
    assert _tool().main([*args, "--output", str(tmp_path / "all"), "--confidence", "0"]) == 0
    best = max(d["score"] for d in json.load(open(tmp_path / "all" / "predictions.json")))
    assert "highest score" not in capsys.readouterr().out
    assert _tool().main([*args, "--output", str(tmp_path / "none"), "--confidence", "1.5"]) == 0
    out = capsys.readouterr().out
    assert json.load(open(tmp_path / "none" / "predictions.json")) == []
    assert f"highest score was {best:.3f}" in out
    keep = float(out.split("(--confidence ")[1].split()[0])
    assert keep <= best < keep + 0.01


def test_an_init_checkpoint_override_names_the_weights(tmp_path, demo_root, tiny_checkpoint, capsys):
    """Without --weights, ``train.init_checkpoint=<file>`` names the weights (as for lazyconfig_train_net.py
    --eval-only), not ``<train.output_dir>/model_final.pth``; the config file's own init_checkpoint is not used."""
    _, config, weights = tiny_checkpoint
    folder = _folder(tmp_path, demo_root)
    args = ["--config-file", config, "--input", str(folder), "--output", str(tmp_path / "o"), "--device", "cpu",
            "--confidence", "0"]
    assert _tool().main([*args, f"train.init_checkpoint={weights}", f"train.output_dir={tmp_path / 'none'}"]) == 0
    assert len(json.load(open(tmp_path / "o" / "predictions.json"))) > 0
    capsys.readouterr()
    assert _tool().main([*args, f"train.output_dir={tmp_path / 'none'}"]) == 2    # the config's own: not used
    assert os.path.join(str(tmp_path / "none"), "model_final.pth") in capsys.readouterr().err
