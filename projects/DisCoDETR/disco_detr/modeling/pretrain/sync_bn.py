"""BatchNorm over (N, C) features with statistics synchronised across processes."""
from __future__ import annotations

import torch
from detectron2.utils import comm
from fvcore.nn.distributed import differentiable_all_reduce
from torch import Tensor, nn

__all__ = ["SyncBatchNorm1d"]


class SyncBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are those of the whole global batch.

    With one process (or in eval) it is exactly ``nn.BatchNorm1d``. Under DDP the per-process
    mean and mean of squares are averaged over processes with a differentiable all-reduce,
    so N rows per process on P processes normalise as N x P rows would on one (every process
    must hold the same N: the pre-training heads always do). Unlike ``nn.SyncBatchNorm`` it
    runs on CPU (GLOO) too, and it supports ``affine=False``.

    (N, C) -> (N, C).
    """

    def forward(self, x: Tensor) -> Tensor:
        world = comm.get_world_size()
        if not self.training or world == 1:
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        stats = differentiable_all_reduce(torch.cat([xf.mean(0), (xf * xf).mean(0)])) / world
        mean, meansqr = stats[:c], stats[c:]
        var = (meansqr - mean * mean).clamp(min=0)
        if self.track_running_stats:
            total = x.shape[0] * world
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * total / max(total - 1, 1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)

