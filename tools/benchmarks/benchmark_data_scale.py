#!/usr/bin/env python
"""The pre-training data path at ImageNet scale, on synthetic data (no real image is read).

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_data_scale` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_data_scale import main

if __name__ == "__main__":
    main()
