#!/usr/bin/env python
"""Draw what the paired-view pre-training mapper produces, one PNG per image.

The entry point of :mod:`disco_detr.tooling.visualize_pretrain_data` (options: ``--help``).
"""
from disco_detr.tooling.visualize_pretrain_data import main

if __name__ == "__main__":
    main()
