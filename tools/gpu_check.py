#!/usr/bin/env python
"""The GPU check (issue 21): runs the CUDA-only tests and measures the GPU figures; the logic and the full
description are in disco_detr/tooling/gpu_check.py (``python tools/gpu_check.py --help``)."""
import warnings

with warnings.catch_warnings():  # detectron2's import-time deprecation notices: the refusal stays one line
    warnings.simplefilter("ignore", FutureWarning)
    from disco_detr.tooling.gpu_check import main

if __name__ == "__main__":
    main()
