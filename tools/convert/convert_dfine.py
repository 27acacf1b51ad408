#!/usr/bin/env python
"""Convert a D-FINE checkpoint (HuggingFace transformers or the D-FINE release) for ``train.init_checkpoint``.

The entry point of :mod:`disco_detr.tooling.convert.convert_dfine` (options: ``--help``).
"""
from disco_detr.tooling.convert.convert_dfine import main

if __name__ == "__main__":
    main()
