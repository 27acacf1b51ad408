"""OpenVINO as a second CPU runtime of the exported graphs: parity with PyTorch for every variant.

The tolerances of tests/test_export.py's onnxruntime checks (boxes within 1e-4 of the image size, scores within
1e-5, labels equal; per query before the top-k, and the top-k as sets paired within tied scores), through one
dynamic graph per variant exported at 64 x 64 and run by OpenVINO at the export size and two others, batch 1 and
3. OpenVINO's CPU plugin runs in f32 (``disco_detr_runtime.session`` pins it). Tiny detectors
(tests/tiny_detectors.py).
"""
import numpy as np
import pytest
from tiny_detectors import tiny_detector

from disco_detr.deploy import export_onnx
from disco_detr.tooling.export_model import check_parity
from disco_detr.variants import VARIANTS
from disco_detr_runtime import RuntimeDetector

pytest.importorskip("openvino")

BOX_TOL, SCORE_TOL = 1e-4, 1e-5
#: (H, W, B): the export size and two others, batches 1 and 3
SIZES = [(64, 64, 1), (96, 64, 3), (64, 128, 1)]


def _assert_within(report):
    assert len(report) == len(SIZES)
    for r in report.values():
        assert r["query_boxes"] < 1e-5 and r["boxes"] < BOX_TOL and r["scores"] < SCORE_TOL, r


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_openvino_equals_pytorch(variant, tmp_path):
    detector = tiny_detector(variant)
    path = export_onnx(detector, str(tmp_path / f"{variant}.onnx"), 64, 64, dynamic=True, per_query_outputs=True,
                       metadata={"class_names": '["a"]'})
    _assert_within(check_parity(detector, path, SIZES, SCORE_TOL, runtime="openvino"))
    session = RuntimeDetector(path, "openvino")
    assert session.metadata["class_names"] == '["a"]' and session.metadata["input_size"] == "dynamic"
    assert (session.batch_size, session.height, session.width) == (None, None, None)


def test_openvino_runs_the_gather_sampling_and_a_fixed_graph(tmp_path):
    """DINO with the gather sampling (opset 18) through a dynamic graph, and a fixed 64 x 96 batch-2 graph
    whose outputs equal onnxruntime's."""
    detector = tiny_detector("dino")
    path = export_onnx(detector, str(tmp_path / "gather.onnx"), 64, 64, dynamic=True, opset=18, sampling="gather",
                       per_query_outputs=True)
    _assert_within(check_parity(detector, path, SIZES, SCORE_TOL, runtime="openvino"))
    fixed = export_onnx(detector, str(tmp_path / "fixed.onnx"), 64, 96, batch_size=2)
    ov, ort = RuntimeDetector(fixed, "openvino"), RuntimeDetector(fixed, "onnxruntime")
    assert (ov.batch_size, ov.height, ov.width) == (ort.batch_size, ort.height, ort.width) == (2, 64, 96)
    images = np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 96)).astype(np.float32)
    sizes = np.array([[64, 96], [128, 100]], np.int64)
    got, want = ov(images, sizes), ort(images, sizes)
    np.testing.assert_allclose(got[1], want[1], atol=SCORE_TOL, rtol=0)
    np.testing.assert_allclose(got[0], want[0], atol=BOX_TOL * 128, rtol=0)
    np.testing.assert_array_equal(got[2], want[2])
