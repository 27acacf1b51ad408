#!/usr/bin/env python
"""Submit any config as a SLURM job of N nodes x G GPUs, with detectron2's ``launch`` inside each node.

The entry point of :mod:`disco_detr.tooling.submit` (options: ``--help``).
"""
import sys

from disco_detr.tooling.submit import main

if __name__ == "__main__":
    main(sys.argv[1:])
