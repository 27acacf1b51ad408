"""Deterministic seeds: the training loader and the trainer derive every RNG seed from a few integers."""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["mix_seeds", "seed_rngs"]


def mix_seeds(*values: int) -> int:
    """A deterministic 63-bit hash of a few integers (stable across processes and runs)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, np.uint32).astype(np.uint64)
               .view(np.uint64)[0] >> np.uint64(1))


def seed_rngs(seed: int) -> None:
    """Seed python, numpy and torch RNGs of this process (detectron2 augmentations use numpy)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
