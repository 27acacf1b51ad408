#!/usr/bin/env python
"""ResNet forward + backward on CPU: detectron2's ResNet against ours (frozen BN folded, channels-last).

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_backbone` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_backbone import main

if __name__ == "__main__":
    main()
