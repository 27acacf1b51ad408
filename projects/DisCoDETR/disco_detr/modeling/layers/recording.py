"""Opt-in recording of attention inside a forward pass, for the analysis plots.

Attention layers call :func:`emit` with what they computed; nothing is kept (and nothing
extra is computed) unless a caller opened :func:`record_attention`::

    with record_attention() as records:
        model(inputs)
    for r in records:  # in call order
        r.site, r.tensors

Sites emitted by the shared layers:

* ``"self_attn"`` / ``"cross_attn"`` from dense multi-head attention:
  ``weights`` (B, heads, Nq, Nk), softmax-normalised, padding keys at 0;
* ``"deformable"`` from multi-scale deformable attention: ``locations`` (B, Nq, heads,
  levels, points, 2) normalised (x, y) per level, ``weights`` (B, Nq, heads, levels, points),
  plus ``spatial_shapes`` (levels, 2) as (h, w).

A layer tells which one it is through the ``module`` name (``Record.module``): the owner
registers names with :func:`name_modules` (done by ``record_attention(model)``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["Record", "emit", "is_recording", "record_attention"]

_active: list[list[Record]] = []


@dataclass
class Record:
    """One emission: the site kind, the emitting module's qualified name ('' if unnamed)
    and detached tensors."""

    site: str
    module: str
    tensors: dict[str, Tensor] = field(default_factory=dict)


def is_recording() -> bool:
    """True inside :func:`record_attention`: layers compute what they would emit only then."""
    return bool(_active)


def emit(site: str, module: nn.Module | None = None, **tensors: Tensor) -> None:
    """Store detached copies of ``tensors`` under ``site`` in every open recording."""
    if not _active:
        return
    name = getattr(module, "_recording_name", "") if module is not None else ""
    record = Record(site, name, {k: v.detach() for k, v in tensors.items()})
    for records in _active:
        records.append(record)


@contextlib.contextmanager
def record_attention(model: nn.Module | None = None):
    """Collect every :class:`Record` emitted inside the block, in call order. With ``model``,
    its sub-modules are tagged with their qualified names first (``Record.module``)."""
    if model is not None:
        for name, module in model.named_modules():
            module._recording_name = name
    records: list[Record] = []
    _active.append(records)
    try:
        yield records
    finally:
        _active.remove(records)
