"""tools/predict.py --model: an exported graph run by onnxruntime or OpenVINO without torch or detectron2.

One tiny Conditional DETR checkpoint (tests/test_predict.py's), exported once by tools/export_model.py as a
dynamic graph and as a fixed 80 x 80 batch-2 graph; the PyTorch path and the runtime path run on the same folder
(a bad file, an EXIF-rotated, a 16-bit grey and an RGBA image). Detections are compared as sets paired within
tied scores (``match_detections``) at the export tests' tolerances: boxes within 1e-4 of the image size, scores
within 1e-5, labels equal.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig
from PIL import Image
from test_predict import _folder
from tiny_detectors import tiny_config, tiny_detector

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.tooling import export_model
from disco_detr.tooling import predict as torch_predict
from disco_detr_runtime import RuntimeDetector
from disco_detr_runtime import predict as runtime_predict
from disco_detr_runtime.predict import resize_image, resized_shape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOX_TOL, SCORE_TOL = 1e-4, 1e-5
RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="openvino is not installed"))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo_root):
    """(folder, the PyTorch path's output folder, the dynamic graph, the fixed graph, the config file)."""
    root = tmp_path_factory.mktemp("runtime")
    weights, config = str(root / "model_final.pth"), str(root / "tiny.yaml")
    torch.save({"model": tiny_detector("cond").state_dict()}, weights)
    cfg = tiny_config("cond")
    cfg.dataloader.test.mapper.min_sizes = (80,)
    LazyConfig.save(cfg, config)
    graphs = {"dynamic": str(root / "dynamic.onnx"), "fixed": str(root / "fixed.onnx")}
    common = ["--config-file", config, "--weights", weights, "--no-check"]
    assert export_model.main([*common, "--output", graphs["dynamic"], "--dynamic"]) == 0
    assert export_model.main([*common, "--output", graphs["fixed"], "--batch-size", "2"]) == 0   # 80 x 80
    folder = _folder(root, demo_root)
    reference = root / "torch"
    assert torch_predict.main(["--config-file", config, "--weights", weights, "--input", str(folder), "--output",
                               str(reference), "--confidence", "0", "--batch-size", "1", "--device", "cpu"]) == 0
    return folder, reference, graphs, config


def _read(out):
    images = json.load(open(out / "images.json"))
    detections = json.load(open(out / "predictions.json"))
    return images, detections


def _assert_same_detections(got_dir, want_dir, names=None):
    """The runtime path's predictions.json equals the PyTorch path's, image by image (``names``: only these)."""
    (got_images, got), (want_images, want) = _read(got_dir), _read(want_dir)
    assert got_images["categories"] == want_images["categories"]
    assert [(m["file_name"], m["height"], m["width"], m["picture"]) for m in got_images["images"]] == \
        [(m["file_name"], m["height"], m["width"], m["picture"]) for m in want_images["images"]]
    compared = 0
    for meta in want_images["images"]:
        if names is not None and os.path.basename(meta["file_name"]) not in names:
            continue
        scale = np.array([meta["width"], meta["height"]] * 2, np.float64)

        def arrays(dets, meta=meta, scale=scale):
            mine = [d for d in dets if d["image_id"] == meta["id"]]
            xywh = np.array([d["bbox"] for d in mine], np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            return xyxy / scale, np.array([d["score"] for d in mine]), np.array([d["category_id"] for d in mine])

        mine, theirs = arrays(got), arrays(want)
        assert len(mine[1]) > 0 and abs(len(mine[1]) - len(theirs[1])) <= 1
        box_err, score_err, _ = export_model.match_detections(mine, theirs, BOX_TOL)
        assert box_err < BOX_TOL and score_err < SCORE_TOL
        compared += 1
    assert compared == (len(want_images["images"]) if names is None else len(names))


def test_the_runtime_package_imports_neither_torch_nor_detectron2(exported, tmp_path):
    """tools/predict.py --model, run in a fresh interpreter, never imports torch or detectron2."""
    folder, _, graphs, _ = exported
    script = ("import runpy, sys\n"
              f"sys.argv = ['predict.py', '--model', {graphs['dynamic']!r}, '--input', {str(folder)!r},"
              f" '--output', {str(tmp_path / 'out')!r}]\n"
              "try:\n    runpy.run_path('tools/predict.py', run_name='__main__')\n"
              "except SystemExit as e:\n    assert e.code == 0, e.code\n"
              "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'detectron2', 'disco_detr'})\n"
              "print('LOADED', loaded)\n")
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "projects", "DisCoDETR")}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout
    assert (tmp_path / "out" / "predictions.json").exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_path_equals_the_pytorch_path(exported, tmp_path, runtime, capsys):
    """The dynamic graph gets the config's test resize (recorded at export): every image's detections equal the
    PyTorch path's; the bad file is skipped with its name; the same pictures, class names from the metadata."""
    folder, reference, graphs, _ = exported
    out = tmp_path / "out"
    assert runtime_predict.main(["--model", graphs["dynamic"], "--runtime", runtime, "--input", str(folder),
                                 "--output", str(out), "--confidence", "0", "--batch-size", "2"]) == 0
    printed = capsys.readouterr()
    assert "skipped" in printed.out + printed.err and "a_broken.jpg" in printed.out + printed.err
    _assert_same_detections(out, reference)
    assert [c["name"] for c in _read(out)[0]["categories"]] == list(DEMO_CLASSES)
    assert all(d["category"] == DEMO_CLASSES[d["category_id"] - 1] for d in _read(out)[1])
    pictures = sorted(p for p in os.listdir(out) if not p.endswith(".json"))
    assert pictures == sorted(p for p in os.listdir(reference) if not p.endswith(".json"))
    pic = Image.open(out / "c_exif.jpg")                     # the image as displayed: 96 x 60 upright
    assert abs(pic.width / pic.height - 60 / 96) < 0.02


def test_a_fixed_graph_resizes_to_its_size_and_fills_its_batch(exported, tmp_path):
    """The fixed 80 x 80 batch-2 graph: the square images (resized to 80 x 80 by the config too) give the
    PyTorch path's detections; three readable images run as two batches of two, the last one filled."""
    folder, reference, graphs, _ = exported
    session = RuntimeDetector(graphs["fixed"])
    assert (session.batch_size, session.height, session.width) == (2, 80, 80)
    assert session.test_resize == {"min_size": 80, "max_size": 300} and session.class_names == list(DEMO_CLASSES)
    out = tmp_path / "out"
    assert runtime_predict.main(["--model", graphs["fixed"], "--input", str(folder), "--output", str(out),
                                 "--confidence", "0"]) == 0
    _assert_same_detections(out, reference, names={"b_plain.jpg", "d_grey16.png", "e_rgba.png"})


def test_resize_matches_detectron2():
    from detectron2.data import transforms as T

    image = np.random.default_rng(0).integers(0, 256, (37, 91, 3), dtype=np.uint8)
    for short, longest in ((80, 300), (80, 120), (800, 1333)):
        want = T.ResizeShortestEdge(short, max_size=longest).get_transform(image).apply_image(image)
        h, w = resized_shape(*image.shape[:2], {"min_size": short, "max_size": longest})
        assert (h, w) == want.shape[:2]
        np.testing.assert_array_equal(resize_image(image, h, w), want.transpose(2, 0, 1).astype(np.float32))
    want = T.Resize((64, 64)).get_transform(image).apply_image(image)
    assert resized_shape(37, 91, {"square": 64}) == (64, 64)
    np.testing.assert_array_equal(resize_image(image, 64, 64), want.transpose(2, 0, 1).astype(np.float32))
