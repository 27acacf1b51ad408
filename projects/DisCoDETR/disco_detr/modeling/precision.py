"""Mixed-precision policy: the parts of a step that always run in float32, whatever autocast says.

Under ``train.amp.enabled`` on CUDA the trainer runs the model in ``torch.autocast`` (bfloat16 where the GPU
supports it, else float16 with a loss scaler). Matrix products of the backbone, encoder, decoder and heads then
run in that dtype. The functions decorated with :func:`float32_policy` run with autocast switched off (CPU and
CUDA) and cast their floating inputs up themselves: the Hungarian matching and DMOQF's query assignment (costs
and distances decide discrete choices), the criteria (focal / varifocal / cross-entropy, L1, GIoU: GIoU's
epsilon underflows in float16) and the pre-training losses. Deformable attention's sampling has its own policy
(float32 locations, weights and accumulation; see ``layers.ms_deform_attn.ms_deform_attn``).
"""
from __future__ import annotations

import functools

import torch

__all__ = ["at_least_float32", "float32_policy"]


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged (float64 tests keep their precision)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def float32_policy(fn):
    """Decorator: run ``fn`` with autocast disabled on CPU and CUDA (its body casts inputs with ``.float()``)."""

    @functools.wraps(fn)
    def without_autocast(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return without_autocast
