#!/usr/bin/env python
"""Benchmarks multi-scale deformable attention (pure PyTorch) against dense multi-head attention of the same width.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_ms_deform_attn` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_ms_deform_attn import main

if __name__ == "__main__":
    main()
