#!/usr/bin/env python
"""Benchmarks offline proposal generation and the proposals store.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_proposals` (options: ``--help``).
"""
import sys

from disco_detr.tooling.benchmarks.benchmark_proposals import main

if __name__ == "__main__":
    sys.exit(main())
