"""Exponential moving average (EMA) of the model weights, owned by the trainer (``train.ema``).

Any config turns it on with ``train.ema.enabled=True`` (RT-DETR's configs do, as its release does).

Update rule (the RT-DETR release's ``ModelEMA``, from YOLOv5), after every optimizer step, with ``t`` the
number of updates so far including this one::

    d_t = decay * (1 - exp(-t / warmups))
    ema = d_t * ema + (1 - d_t) * weights        # every floating-point parameter and buffer (BN statistics)

Integer buffers (BN step counters) are copied. The warm-up makes early averages follow the weights closely
(d_1 is about decay / warmups); ``warmups=0`` uses the constant ``decay``.

What uses the EMA weights (:class:`EMAHook`):

* evaluation during and after training (``Trainer._evaluate`` evaluates the EMA copy);
* the final checkpoint: after the last step the EMA weights are copied into the model, so ``model_final.pth``
  (what fine-tuning results, inference and pre-training transfer load) holds them;
* resume: every checkpoint stores the EMA weights and the update count in the trainer's hook state
  (``hooks/EMAHook``), restored exactly, so a killed and resumed run ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import copy
import logging
import math

import torch
from detectron2.engine import HookBase
from torch import nn

__all__ = ["EMAHook", "ModelEMA", "ema_decay"]

logger = logging.getLogger("detectron2")


def ema_decay(updates: int, decay: float, warmups: float) -> float:
    """``decay * (1 - exp(-updates / warmups))`` (``decay`` when ``warmups`` is 0)."""
    if warmups <= 0:
        return decay
    return decay * (1.0 - math.exp(-updates / warmups))


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ModelEMA:
    """An EMA copy of a model (``module``: a frozen deep copy in eval mode, on the model's device).

    update(model): one step of the rule in the module docstring. state_dict() / load_state_dict(): the EMA
    tensors and the update count, for checkpoints.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmups: float = 2000):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema.decay must be in [0, 1), got {decay}")
        if warmups < 0:
            raise ValueError(f"train.ema.warmups must be >= 0, got {warmups}")
        self.module = copy.deepcopy(_bare(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmups = float(warmups)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = ema_decay(self.updates, self.decay, self.warmups)
        current = _bare(model).state_dict()
        for name, value in self.module.state_dict().items():
            source = current[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(source)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the EMA weights into ``model`` (same architecture)."""
        _bare(model).load_state_dict(self.module.state_dict())

    def state_dict(self) -> dict:
        return {"module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


class EMAHook(HookBase):
    """Updates a :class:`ModelEMA` after every step and, after the last one, copies it into the model (so the
    final checkpoint and the final evaluation see the EMA weights). Register it before the checkpointer and
    the evaluation hooks. Its state (EMA tensors + update count) is part of every checkpoint."""

    def __init__(self, ema: ModelEMA):
        self.ema = ema

    def before_train(self):
        # a fresh run starts the average from the weights train.init_checkpoint loaded (the copy was made
        # before loading); a resumed run already restored the average from the checkpoint
        if self.ema.updates == 0:
            self.ema.module.load_state_dict(_bare(self.trainer.model).state_dict())

    def after_step(self):
        self.ema.update(self.trainer.model)
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self.ema.copy_to(self.trainer.model)
            logger.info("EMA: the final weights are the EMA weights (%d updates, decay %.6f)", self.ema.updates,
                        ema_decay(self.ema.updates, self.ema.decay, self.ema.warmups))

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state_dict):
        self.ema.load_state_dict(state_dict)
