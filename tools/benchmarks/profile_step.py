#!/usr/bin/env python
"""Where one training (or inference) step of a detector spends its time: torch.profiler's op table.

The entry point of :mod:`disco_detr.tooling.benchmarks.profile_step` (options: ``--help``).
"""
from disco_detr.tooling.benchmarks.profile_step import main

if __name__ == "__main__":
    main()
