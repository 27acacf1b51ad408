"""The load report of a model zoo checkpoint: what the model takes, like the transfer report."""
from __future__ import annotations

from torch import Tensor

__all__ = ["check_against_model"]


def check_against_model(state: dict[str, Tensor], model_state: dict[str, Tensor], *, source: str,
                        class_heads: tuple[str, ...] = ("class_embed.",), policy: str = "error",
                        conversion: dict | None = None) -> tuple[dict[str, Tensor], dict]:
    """Match a converted zoo checkpoint (our key names) against the model's state dict.

    Tensors whose shape differs from the model's: under a class-head prefix (``class_heads``, e.g. COCO's
    80 classes into a 20-class VOC model) they are always left freshly initialised; others follow ``policy``
    (``"error"``: ValueError naming them and the fix; ``"fresh"``: left freshly initialised). Keys the
    model lacks are left out (``unexpected``). Returns (the state dict to load, the report:
    checkpoint, kept, dropped (by the conversion), fresh, mismatched, unexpected, conversion summary).
    """
    mismatched, fresh_heads = [], []
    for key, value in state.items():
        if key in model_state and tuple(value.shape) != tuple(model_state[key].shape):
            item = {"key": key, "checkpoint_shape": list(value.shape), "model_shape": list(model_state[key].shape)}
            (fresh_heads if key.startswith(tuple(class_heads)) else mismatched).append(item)
    if mismatched and policy == "error":
        shapes = "; ".join(f"{m['key']}: {m['checkpoint_shape']} in the checkpoint, {m['model_shape']} in the model"
                           for m in mismatched[:10])
        raise ValueError(f"Model zoo checkpoint {source!r} does not fit this model: {shapes}"
                         + (f" ... ({len(mismatched)} in all)" if len(mismatched) > 10 else "")
                         + ". Use a config the entry fits (see its 'fits'), or set train.transfer_mismatch=fresh to "
                           "initialise these tensors freshly on purpose.")
    skip = {m["key"] for m in mismatched + fresh_heads}
    unexpected = sorted(k for k in state if k not in model_state)
    kept = {k: v for k, v in state.items() if k in model_state and k not in skip}
    conversion = conversion or {}
    report = {
        "checkpoint": source, "policy": policy, "kept": sorted(kept),
        "dropped": conversion.get("dropped", {}),
        "fresh": sorted(set(model_state) - set(kept)),
        "mismatched": fresh_heads + mismatched, "unexpected": unexpected,
        "conversion": {k: conversion.get(k) for k in ("name", "layout", "converter", "source", "source_url",
                                                        "source_sha256", "converted")},
    }
    return kept, report
