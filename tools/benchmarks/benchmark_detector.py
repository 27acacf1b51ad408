#!/usr/bin/env python
"""Speed of Conditional DETR R50 at the paper's fine-tuning resolution (800 x 1333).

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_detector` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_detector import main

if __name__ == "__main__":
    main()
