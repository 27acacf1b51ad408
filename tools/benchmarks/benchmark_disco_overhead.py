#!/usr/bin/env python
"""Overhead of DisCo DETR over Siamese DETR: step time and parameters, side by side.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_disco_overhead` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_disco_overhead import main

if __name__ == "__main__":
    main()
