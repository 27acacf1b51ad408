# Learning-rate schedules. Milestones are fractions of train.max_iter, so overriding
# max_iter (e.g. for a short run) keeps the schedule's shape.
import math

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

_UNITS = 100000  # resolution of the fractional milestones


def epochs_to_iters(epochs: float, dataset_size: int, batch_size: int) -> int:
    """Iterations that make ``epochs`` passes over ``dataset_size`` images at ``batch_size``."""
    return int(math.ceil(epochs * dataset_size / batch_size))


def step_schedule(drop_fraction: float, warmup_fraction: float = 0.0, gamma: float = 0.1):
    """Constant lr, multiplied by ``gamma`` after ``drop_fraction`` of training (e.g. 40/50),
    with a linear warm-up from 0.001x over the first ``warmup_fraction`` of training.
    ``drop_fraction`` >= 1: no drop (a constant lr after the warm-up)."""
    drop = int(round(drop_fraction * _UNITS))
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[1.0, gamma] if drop < _UNITS else [1.0],
            milestones=[drop, _UNITS] if drop < _UNITS else [_UNITS],
        ),
        warmup_length=warmup_fraction,
        warmup_factor=0.001,
    )
