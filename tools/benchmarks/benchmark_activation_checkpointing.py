#!/usr/bin/env python
"""Memory and time of activation checkpointing: one training step per variant, batch 2, with and without.

The entry point of :mod:`disco_detr.tooling.benchmarks.benchmark_activation_checkpointing` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.benchmark_activation_checkpointing import main

if __name__ == "__main__":
    main()
