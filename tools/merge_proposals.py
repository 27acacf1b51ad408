#!/usr/bin/env python
"""Joins proposal stores, e.g. the N shards of ``tools/generate_proposals.py --shard I/N``, into one.

The entry point of :mod:`disco_detr.tooling.merge_proposals` (options: ``--help``).
"""
import sys

from disco_detr.tooling.merge_proposals import main

if __name__ == "__main__":
    sys.exit(main())
