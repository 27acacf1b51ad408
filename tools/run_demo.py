#!/usr/bin/env python
"""The whole DisCo DETR story on the demo data, on a CPU (``make demo``); the logic and the full description are
in disco_detr/tooling/run_demo.py (``python tools/run_demo.py --help``)."""
from disco_detr.tooling.run_demo import main

if __name__ == "__main__":
    main()
