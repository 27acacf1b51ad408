"""An exported detector (``tools/export_model.py``'s ONNX graph) run by onnxruntime or OpenVINO, without torch.

:class:`RuntimeDetector` runs the graph that ``disco_detr/deploy.py`` documents: inputs ``images`` (B, 3, H, W)
float32 RGB in [0, 255] already resized to H x W (the graph normalises them itself) and ``orig_sizes`` (B, 2)
int64 (height, width) of the originals; outputs ``boxes`` (B, K, 4) float32 xyxy in pixels of the originals,
``scores`` (B, K) float32 highest first, ``labels`` (B, K) int64 contiguous class indices. It reads the
model's metadata (written by the export tool): ``class_names`` and ``category_ids`` (JSON lists),
``input_size`` (``"HxW"`` or ``"dynamic"``), ``batch_size``, ``test_resize`` (JSON, the fine-tuning config's
test resize: ``{"min_size": s, "max_size": m}`` or ``{"square": s}``) and ``precision``.

OpenVINO runs on its CPU plugin with the inference precision pinned to f32 (the plugin's default on CPUs
with bf16 / AMX units is bf16, which would not reach the export tolerances); a ``precision=fp16`` graph
computes in fp16 where the graph says so in both runtimes.
"""
from __future__ import annotations

import json

import numpy as np

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "RUNTIMES", "RuntimeDetector"]

INPUT_NAMES = ("images", "orig_sizes")
OUTPUT_NAMES = ("boxes", "scores", "labels")
RUNTIMES = ("onnxruntime", "openvino")


def _openvino_metadata(model) -> dict[str, str]:
    """The ONNX ``metadata_props`` as OpenVINO keeps them (its ``framework`` run-time info)."""
    if not model.has_rt_info(["framework"]):
        return {}
    keys = model.get_rt_info()["framework"]
    return {str(k): model.get_rt_info(["framework", str(k)]).astype(str) for k in keys}


class RuntimeDetector:
    """An exported detector run by ``runtime`` ("onnxruntime" or "openvino") on the CPU.

    ``__call__(images (B, 3, H, W) float32, orig_sizes (B, 2) int64)`` -> (boxes, scores, labels) numpy arrays
    (module docstring); :meth:`run` returns any outputs by name. ``height``, ``width``, ``batch_size``: the
    graph's fixed input size and batch, or None where the axis is free. ``threads``: intra-op threads (None:
    the runtime's default); ``providers``: onnxruntime execution providers (default the CPU one).
    """

    def __init__(self, path: str, runtime: str = "onnxruntime", threads: int | None = None,
                 providers: list[str] | None = None):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.path, self.runtime = path, runtime
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3   # errors only: an fp16 graph draws constant-folding notices
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])
            self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
            shape = self.session.get_inputs()[0].shape
        else:
            import openvino as ov

            core = ov.Core()
            model = core.read_model(path)
            self.metadata = _openvino_metadata(model)
            config = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self.session = core.compile_model(model, "CPU", config)
            self._request = self.session.create_infer_request()
            shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        self.batch_size, self.height, self.width = (d if isinstance(d, int) else None for d in
                                                    (shape[0], shape[2], shape[3]))

    @property
    def class_names(self) -> list[str] | None:
        names = self.metadata.get("class_names")
        return json.loads(names) if names else None

    @property
    def category_ids(self) -> list[int] | None:
        """The dataset's own category id of each class index (None: the export did not record them)."""
        ids = self.metadata.get("category_ids")
        return [int(i) for i in json.loads(ids)] if ids else None

    @property
    def test_resize(self) -> dict | None:
        resize = self.metadata.get("test_resize")
        return json.loads(resize) if resize else None

    def run(self, images: np.ndarray, orig_sizes: np.ndarray, names=OUTPUT_NAMES) -> list[np.ndarray]:
        """The graph's outputs ``names`` for (B, 3, H, W) float32 ``images`` and (B, 2) int64 ``orig_sizes``."""
        feeds = {"images": np.ascontiguousarray(images, dtype=np.float32),
                 "orig_sizes": np.ascontiguousarray(orig_sizes, dtype=np.int64)}
        if self.runtime == "onnxruntime":
            return self.session.run(list(names), feeds)
        results = self._request.infer(feeds)
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        return [np.array(by_name[n]) for n in names]

    def __call__(self, images: np.ndarray, orig_sizes: np.ndarray) -> list[np.ndarray]:
        return self.run(images, orig_sizes)
