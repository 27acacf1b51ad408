#!/usr/bin/env python
"""Figures of the paper's analysis (DisCo DETR, Figures 3-8) from run folders.

The entry point of :mod:`disco_detr.tooling.analyze` (options: ``--help``).
"""
import sys

from disco_detr.tooling.analyze import main

if __name__ == "__main__":
    sys.exit(main())
