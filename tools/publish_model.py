#!/usr/bin/env python
"""Publish a training run folder as a model zoo entry (``zoo://<name>``).

The entry point of :mod:`disco_detr.tooling.publish_model` (options: ``--help``).
"""
import sys

from disco_detr.tooling.publish_model import main

if __name__ == "__main__":
    sys.exit(main())
