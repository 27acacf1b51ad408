#!/usr/bin/env python
"""Run a fine-tuned detector on your own images: pictures with the detections drawn, and one COCO results JSON.

The entry point of :mod:`disco_detr.tooling.predict` (options: ``--help``); with ``--model model.onnx`` that of
:mod:`disco_detr_runtime.predict` (an exported graph run by onnxruntime or OpenVINO), chosen here before
anything imports torch or detectron2.
"""
import sys

if __name__ == "__main__":
    if any(arg == "--model" or arg.startswith("--model=") for arg in sys.argv[1:]):
        from disco_detr_runtime.predict import main
    else:
        from disco_detr.tooling.predict import main
    sys.exit(main())
