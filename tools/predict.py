#!/usr/bin/env python
"""Run a fine-tuned detector on your own images: pictures with the detections drawn, and one COCO results JSON.

The entry point of :mod:`disco_detr.tooling.predict` (options: ``--help``).
"""
import sys

from disco_detr.tooling.predict import main

if __name__ == "__main__":
    sys.exit(main())
