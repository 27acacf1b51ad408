"""Half precision for an exported detector graph (``tools/export_model.py --half``): fp16 weights and activations,
with the arithmetic that needs fp32 kept in fp32.

:func:`convert_to_half` rewrites an fp32 ONNX model (``disco_detr/deploy.py``'s graph) node by node. Every node
computes in fp16 except the *fp32 part*:

* ``Softmax`` (attention weights, where fp16 rounds small weights to zero), ``TopK`` (scores that differ by
  less than fp16's resolution keep their order) and ``GridSample`` (bilinear weights of the sampling points);
* the sampling locations: every node upstream of a ``GridSample``'s grid input, and upstream of each float graph
  output (box arithmetic, reference points, box refinement, the scaling to pixels), back to the nearest
  ``MatMul`` / ``Gemm`` / ``Conv`` (whose products stay fp16) or graph input. In fp16 a location in [0, 1]
  carries 2^-11 of relative error: 0.3 px on a 640-px image, more than the export tolerance.

Float initializers and constants of fp16 nodes become fp16 (finite values clipped to +-65504, fp16's largest);
a ``Cast`` node is inserted wherever a tensor crosses between the parts. The inputs stay ``images`` (B, 3, H, W)
float32 and ``orig_sizes`` int64, the outputs ``boxes`` / ``scores`` float32: the interface of the fp32 graph.
The gather sampling path (``--sampling gather``) computes pixel coordinates, where fp16 loses a whole pixel above
2048 px and parts of one far below: ``export_onnx`` refuses it with ``half``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FP32_OPS", "convert_to_half"]

#: ops that always compute in fp32
FP32_OPS = frozenset({"Softmax", "TopK", "GridSample"})
#: ops whose products stay fp16: the upstream walk of the fp32 part stops at them
_STOP_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"})
#: (op, input index) of float inputs whose type the ONNX spec fixes to float32 (Resize's roi and scales)
_FIXED_FP32_INPUTS = frozenset({("Resize", 1), ("Resize", 2)})
_FP16_MAX = float(np.finfo(np.float16).max)


def _half_array(array: np.ndarray) -> np.ndarray:
    """float32 -> float16, finite values clipped to fp16's range (a -1e9 mask fill stays a large finite value)."""
    finite = np.isfinite(array)
    return np.where(finite, np.clip(array, -_FP16_MAX, _FP16_MAX), array).astype(np.float16)


def _fp32_nodes(graph, float_tensors: set[str]) -> set[int]:
    """Indices of the nodes of the fp32 part (module docstring)."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    keep = {i for i, node in enumerate(graph.node) if node.op_type in FP32_OPS}
    seeds = [node.input[1] for node in graph.node if node.op_type == "GridSample"]
    seeds += [o.name for o in graph.output if o.name in float_tensors]
    walked = set()
    while seeds:
        i = producer.get(seeds.pop())
        if i is None or i in walked or graph.node[i].op_type in _STOP_OPS:
            continue
        walked.add(i)
        keep.add(i)
        seeds += [x for x in graph.node[i].input if x in float_tensors]
    return keep


def convert_to_half(model):
    """An fp32 detector ``onnx.ModelProto`` -> its fp16 version (module docstring); the metadata is kept."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if any(node.op_type in ("Loop", "If", "Scan") for node in model.graph.node):
        raise ValueError("graphs with subgraphs (Loop / If / Scan) are not converted to fp16")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    float_tensors = {name for name, t in types.items() if t == TensorProto.FLOAT}
    keep = _fp32_nodes(graph, float_tensors)
    initializers = {t.name: t for t in graph.initializer}

    precision = {i.name: TensorProto.FLOAT for i in graph.input}     # float tensor -> the type it is now held in
    converted, nodes = {}, []                                         # (tensor, type) -> its copy in that type

    def in_type(name: str, want: int) -> str:
        if not name or name not in float_tensors:
            return name
        if name in initializers and want == TensorProto.FLOAT16:
            key = (name, want)
            if key not in converted:
                copy = numpy_helper.from_array(_half_array(numpy_helper.to_array(initializers[name])), f"{name}__fp16")
                graph.initializer.append(copy)
                converted[key] = copy.name
            return converted[key]
        have = precision.get(name, TensorProto.FLOAT)
        if have == want:
            return name
        key = (name, want)
        if key not in converted:
            converted[key] = f"{name}__{'fp16' if want == TensorProto.FLOAT16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [converted[key]], to=want,
                                          name=f"{converted[key]}/Cast"))
        return converted[key]

    for i, node in enumerate(graph.node):
        want = TensorProto.FLOAT if i in keep else TensorProto.FLOAT16
        for j, name in enumerate(node.input):
            if (node.op_type, j) not in _FIXED_FP32_INPUTS:
                node.input[j] = in_type(name, want)
        if want == TensorProto.FLOAT16:
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
                elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(_half_array(numpy_helper.to_array(attr.t)), attr.t.name))
        for out in node.output:
            if out in float_tensors:
                precision[out] = want
        nodes.append(node)

    for output in graph.output:   # the outputs keep their fp32 type: a last Cast where fp16 produced them
        if precision.get(output.name) == TensorProto.FLOAT16:
            inner = f"{output.name}__fp16_out"
            for node in nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if x == output.name else x for x in node.input]
            nodes.append(helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT,
                                          name=f"{output.name}/Cast"))
    used = {x for node in nodes for x in node.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]   # the fp32 types inferred above no longer hold
    onnx.checker.check_model(model)
    return model
