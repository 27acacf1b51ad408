#!/usr/bin/env python
"""Pre-train a detector on a folder of your own unlabelled images: proposals, config, training, and the
fine-tuning config that matches.

The entry point of :mod:`disco_detr.tooling.pretrain_on_folder` (options: ``--help``).
"""
import sys

from disco_detr.tooling.pretrain_on_folder import main

if __name__ == "__main__":
    sys.exit(main())
