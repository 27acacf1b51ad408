"""Pre-training health metrics shared by the pre-training methods (DisCo / Siamese DETR, DETReg).

They are computed from tensors of the training step (no extra pass) and go into detectron2's
event storage as ``pretrain_health/<name>`` (metrics.json, TensorBoard; ``tools/analyze.py
summary`` prints them). Distances are in normalised image units.
"""
from __future__ import annotations

import torch
from detectron2.utils.events import EventStorage, get_event_storage
from torch import Tensor

__all__ = ["due_storage", "put_health", "reference_health"]


@torch.no_grad()
def reference_health(bare_reference: Tensor, used_references: Tensor | None, start: Tensor | None) -> dict[str, float]:
    """What the queries' references do in one step.

    Args:
        bare_reference: (M, N, 2|4) the detector's initial references (normalised cxcy[wh]) before any
            pre-training input entered the queries.
        used_references: (L, M, N, 2|4) the reference each decoder layer used (``DecoderOutput``), or None
            where nothing enters the queries (DETReg: the offset would only measure box refinement).
        start: (N, 2) buffer of the bare centres at the run's first step (NaN until then; filled here),
            for learned queries (the same references for every image); None for image-dependent ones.

    Returns ``reference_offset`` (with ``used_references``: mean L2 distance between the used and the
    bare centres, every layer), ``reference_spread`` (std of the bare centres over queries, mean of x and y, averaged over
    images) and, with ``start``, ``reference_displacement`` (mean L2 distance of the bare centres
    from where they were at the first step).
    """
    bare_xy = bare_reference[..., :2].float()
    out = {"reference_spread": bare_xy.std(1).mean().item()}
    if used_references is not None:
        out["reference_offset"] = (used_references[..., :2].float() - bare_xy[None]).norm(dim=-1).mean().item()
    if start is not None:
        if torch.isnan(start).any():
            start.copy_(bare_xy[0])
        out["reference_displacement"] = (bare_xy[0] - start).norm(dim=-1).mean().item()
    return out


def due_storage(period: int) -> EventStorage | None:
    """detectron2's event storage when the health metrics are due at this iteration (the first, then
    every ``period``); None outside a trainer, with ``period`` 0, or between two logs."""
    if period == 0:
        return None
    try:
        storage = get_event_storage()
    except AssertionError:  # outside a trainer (tests, tools)
        return None
    it = storage.iter
    return storage if it == 0 or (it + 1) % period == 0 else None


def put_health(storage: EventStorage, metrics: dict[str, float]) -> None:
    """Write ``metrics`` as ``pretrain_health/<name>`` scalars (not smoothed)."""
    for name, value in metrics.items():
        storage.put_scalar(f"pretrain_health/{name}", value, smoothing_hint=False)
