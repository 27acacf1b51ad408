#!/usr/bin/env python
"""GPU figures of pre-training and fine-tuning, in one run (issue 12 item 4).

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_gpu` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_gpu import main

if __name__ == "__main__":
    main()
