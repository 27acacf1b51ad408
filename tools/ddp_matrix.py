#!/usr/bin/env python
"""The DDP matrix (issue 35): every variant x {fine-tuning, DisCo DETR, Siamese DETR, DETReg}, two CPU processes
(GLOO) against one with the same global batch, 3 iterations each; prints the table and exits 1 if a case differs.
The logic is in disco_detr/tooling/ddp_matrix.py (``python tools/ddp_matrix.py --help``).

    python tools/ddp_matrix.py                                  # the whole matrix (about 5 minutes on 2 cores)
    python tools/ddp_matrix.py --variants rtdetr --kinds finetune --out output/ddp_matrix
"""
import sys

from disco_detr.tooling.ddp_matrix import main

if __name__ == "__main__":
    sys.exit(main())
