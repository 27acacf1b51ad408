#!/usr/bin/env python
"""Export a fine-tuned detector's inference graph to ONNX, and check it against PyTorch with onnxruntime.

The entry point of :mod:`disco_detr.tooling.export_model` (options: ``--help``).
"""
import sys

from disco_detr.tooling.export_model import main

if __name__ == "__main__":
    sys.exit(main())
