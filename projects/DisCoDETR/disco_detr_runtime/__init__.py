"""Deployment without PyTorch: run an exported DisCo DETR detector with numpy, Pillow and an ONNX runtime.

This package imports neither torch nor detectron2 (tests/test_predict_runtime.py checks ``sys.modules``), so
that ``tools/predict.py --model model.onnx`` runs where only ``numpy``, ``Pillow`` and ``onnxruntime`` or
``openvino`` are installed. It sits beside ``disco_detr`` because importing that package loads detectron2.

* :mod:`.image_io`: the project's image decoder (``disco_detr.data.image_io`` reads with it too);
* :mod:`.session`: :class:`RuntimeDetector`, an exported graph run by onnxruntime or OpenVINO;
* :mod:`.predict`: the prediction tool's runtime path, and the file listing and COCO writer both paths share.
"""
from .image_io import IMAGE_EXTENSIONS, decode_rgb_image, read_rgb_image
from .session import INPUT_NAMES, OUTPUT_NAMES, RUNTIMES, RuntimeDetector

__all__ = ["IMAGE_EXTENSIONS", "INPUT_NAMES", "OUTPUT_NAMES", "RUNTIMES", "RuntimeDetector", "decode_rgb_image",
           "read_rgb_image"]
