"""Half-precision export (``tools/export_model.py --half``, disco_detr/onnx_half.py) against the fp32 PyTorch model.

fp16 weights and activations, with Softmax, TopK, GridSample, the sampling locations and the box arithmetic in
fp32: onnxruntime and OpenVINO stay within the --half check's tolerance of PyTorch fp32 (measured on the tiny
detectors: per query boxes ~1e-4, scores ~1e-4; the paper-size errors per variant are in docs/deployment.md).
The one-stage variants are checked here (Deformable DETR MS, Conditional DETR through the tool): DINO and RT-DETR
select their queries among encoder proposals by score, and a random tiny detector's near-tied proposal scores
swap under fp16 rounding, which changes the decoder's queries (docs/deployment.md, "Half precision").
"""
import numpy as np
import onnx
import pytest
import torch
from detectron2.config import LazyConfig
from tiny_detectors import tiny_config, tiny_detector

from disco_detr.deploy import export_onnx
from disco_detr.onnx_half import FP32_OPS
from disco_detr.tooling import export_model
from disco_detr_runtime import RuntimeDetector

SIZES = [(64, 96, 1), (96, 64, 2)]


def _input_types(model):
    """{node name: [elem_type of each float-or-other input]} after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return {n.name: [types.get(x) for x in n.input] for n in g.node}, g


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_half_graph_is_fp16_except_the_fp32_part_and_matches_fp32_pytorch(tmp_path, runtime):
    detector = tiny_detector("deformable_ms")
    path = export_onnx(detector, str(tmp_path / "fp16.onnx"), 64, 64, dynamic=True, per_query_outputs=True, half=True)
    model = onnx.load(path)
    inputs, graph = _input_types(model)
    weights = [t for t in graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    half_bytes = sum(len(t.raw_data) for t in weights if t.data_type == onnx.TensorProto.FLOAT16)
    assert half_bytes > 0.9 * sum(len(t.raw_data) for t in weights)        # the weights are fp16
    assert {n.op_type for n in graph.node if n.op_type == "MatMul"} and all(
        onnx.TensorProto.FLOAT16 in inputs[n.name] for n in graph.node if n.op_type in ("MatMul", "Conv"))
    for n in graph.node:                                                    # the fp32 part
        if n.op_type in FP32_OPS:
            assert onnx.TensorProto.FLOAT16 not in inputs[n.name], n.name
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64]
    assert [o.type.tensor_type.elem_type for o in graph.output][:2] == [onnx.TensorProto.FLOAT] * 2
    session = RuntimeDetector(path, runtime)
    assert session.metadata["precision"] == "fp16"
    report = export_model.check_parity(detector, path, SIZES, export_model.HALF_TOLERANCE, runtime=runtime)
    for r in report.values():
        assert r["query_boxes"] < 1e-3 and r["boxes"] < 1e-3 and r["scores"] < 1e-3, r
        assert r["query_logits"] > 1e-5   # fp16 rounding shows: the graph did compute in fp16


def test_export_tool_half_checks_against_fp32_and_refuses_the_gather_path(tmp_path, demo_root, capsys):
    detector = tiny_detector("cond")
    weights = str(tmp_path / "model_final.pth")
    torch.save({"model": detector.state_dict()}, weights)
    config = str(tmp_path / "tiny.yaml")
    LazyConfig.save(tiny_config("cond"), config)
    args = ["--config-file", config, "--weights", weights, "--height", "64", "--width", "96", "--half"]
    assert export_model.main([*args, "--output", str(tmp_path / "h.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "fp16" in printed and "onnxruntime vs PyTorch at 64x96, batch 1" in printed
    logits = float(printed.split("per query max |logits| ")[1].split(",")[0])
    assert 0 < logits < export_model.HALF_TOLERANCE                     # fp16 rounding shows, within the check
    boxes, scores, labels = RuntimeDetector(str(tmp_path / "h.onnx"))(
        np.zeros((1, 3, 64, 96), np.float32), np.array([[64, 96]]))
    assert boxes.dtype == scores.dtype == np.float32 and labels.dtype == np.int64
    assert export_model.main([*args, "--output", str(tmp_path / "g.onnx"), "--sampling", "gather"]) == 2
    assert "grid_sample" in capsys.readouterr().err
