#!/usr/bin/env python
"""Images per second of the PyTorch model vs onnxruntime, CPU, every variant, side by side in one run.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_onnx` (options: ``--help``).
"""
import sys

from disco_detr.tooling.benchmarks.benchmark_onnx import main

if __name__ == "__main__":
    sys.exit(main())
