"""BatchNorm whose training statistics are those of the whole global batch under DDP, on CPU (GLOO) as on CUDA.

With one process, or in eval, each class is exactly its ``torch.nn`` parent (same state-dict keys, same numbers).
Under DDP the per-channel mean, then the mean of squared deviations from it, are averaged over processes with
differentiable all-reduces: two passes, as BatchNorm itself computes them (E[x^2] - E[x]^2 in float32 loses the
variance when |mean| >> std, which pooled features and conv maps reach). Every process must hold the same number
of values per channel (rows x spatial size): the pre-training heads and RT-DETR's encoder at one image size do.
Unlike ``nn.SyncBatchNorm`` they run on CPU too and support ``affine=False``.

Inputs: (N, C) or (N, C, L) for :class:`SyncBatchNorm1d`, (N, C, H, W) for :class:`SyncBatchNorm2d`; same shape out.
"""
from __future__ import annotations

import torch
from detectron2.utils import comm
from fvcore.nn.distributed import differentiable_all_reduce
from torch import Tensor, nn

__all__ = ["SyncBatchNorm1d", "SyncBatchNorm2d"]


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, world: int) -> Tensor:
    """``bn`` (training) on ``x`` with statistics over every process's batch; updates its running stats."""
    dims = [0, *range(2, x.dim())]
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    xf = x.float()
    mean = differentiable_all_reduce(xf.mean(dims)) / world
    centred = xf - mean.view(shape)
    var = differentiable_all_reduce((centred * centred).mean(dims)) / world
    if bn.track_running_stats:
        total = x.numel() // x.shape[1] * world
        with torch.no_grad():
            bn.num_batches_tracked += 1
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            unbiased = var * total / max(total - 1, 1)
            bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)
    out = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out.to(x.dtype)


class _GlobalBatchStatistics:
    """The forward of both classes: the parent BatchNorm with one process or in eval, else global statistics."""

    def forward(self, x: Tensor) -> Tensor:
        world = comm.get_world_size()
        if not self.training or world == 1:
            return super().forward(x)
        return _global_batch_norm(self, x, world)


class SyncBatchNorm1d(_GlobalBatchStatistics, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with global-batch statistics under DDP (module docstring)."""


class SyncBatchNorm2d(_GlobalBatchStatistics, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with global-batch statistics under DDP (module docstring)."""
