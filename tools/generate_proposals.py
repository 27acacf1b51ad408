#!/usr/bin/env python
"""Computes offline object proposals for a folder of images into a SQLite store.

The entry point of :mod:`disco_detr.tooling.generate_proposals` (options: ``--help``).
"""
import sys

from disco_detr.tooling.generate_proposals import main

if __name__ == "__main__":
    sys.exit(main())
