#!/usr/bin/env python
"""Does pre-training help at demo scale? The demo story over a grid of pre-training budgets and seeds; the
logic and the full description are in disco_detr/tooling/studies.py (``--help``)."""
from disco_detr.tooling.studies import main

if __name__ == "__main__":
    main()
