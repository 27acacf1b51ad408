#!/usr/bin/env python
"""Convert a detrex checkpoint (IDEA-Research/detrex) to our detectors' layout, for ``train.init_checkpoint``.

The entry point of :mod:`disco_detr.tooling.convert.convert_detrex` (options: ``--help``).
"""
from disco_detr.tooling.convert.convert_detrex import main

if __name__ == "__main__":
    main()
