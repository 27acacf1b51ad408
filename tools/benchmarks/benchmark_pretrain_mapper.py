#!/usr/bin/env python
"""Throughput of the paired-view pre-training data path, old and new side by side.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_pretrain_mapper` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_pretrain_mapper import main

if __name__ == "__main__":
    main()
