#!/usr/bin/env python
"""Where does pre-training pay? Fine-tuning AP against the labelled fraction, per pre-training start, over folds;
the logic and the full description are in disco_detr/tooling/label_efficiency_study.py (``--help``)."""
from disco_detr.tooling.label_efficiency_study import main

if __name__ == "__main__":
    main()
