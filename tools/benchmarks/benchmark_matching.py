#!/usr/bin/env python
"""Benchmarks the DMOQF query-to-proposal assignment: naive (two scipy Hungarians per image) vs fast.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_matching` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_matching import main

if __name__ == "__main__":
    main()
