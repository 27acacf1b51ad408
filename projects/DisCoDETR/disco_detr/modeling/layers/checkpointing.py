"""Activation checkpointing of layer stacks (``train.activation_checkpointing``; docs/gpu.md).

A module whose forward loops over layers (an encoder, a decoder, a backbone's stages) derives from
:class:`LayerCheckpointing` and calls each layer through :meth:`LayerCheckpointing.run_layer`. With
``activation_checkpointing`` set, a layer keeps only its inputs for backward and is run again there
(``torch.utils.checkpoint``, non-reentrant, RNG state preserved so dropout draws the same mask), so the
gradients are those of the plain run. Training-mode BatchNorm inside a checkpointed layer updates its running
statistics once: the re-run restores them. Tensors in and out keep their shapes; nothing else changes.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = ["CHECKPOINT_PARTS", "LayerCheckpointing", "checkpointed_call", "set_layer_checkpointing"]

#: The parts of a detector ``train.activation_checkpointing`` may name.
CHECKPOINT_PARTS = ("backbone", "encoder", "decoder")


def _batchnorm_state(module: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(buffer, copy) of every running statistic of the training-mode BatchNorms in ``module``."""
    return [(buf, buf.clone()) for m in module.modules() if isinstance(m, _BatchNorm) and m.training
            for buf in m.buffers()]


def checkpointed_call(layer: nn.Module, fn: Callable, *args):
    """``fn(*args)`` (a call of ``layer``, or of code using only ``layer``'s parameters) under activation
    checkpointing when autograd records it; otherwise a plain call. Keyword arguments go through a closure."""
    if not torch.is_grad_enabled():
        return fn(*args)
    calls = []

    def run(*inputs):
        if not calls:  # the forward
            calls.append(True)
            return fn(*inputs)
        saved = _batchnorm_state(layer)  # the re-run in backward: leave the running statistics as they were
        try:
            return fn(*inputs)
        finally:
            with torch.no_grad():
                for buf, copy in saved:
                    buf.copy_(copy)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)


class LayerCheckpointing:
    """Mixin for a module that runs a stack of layers: ``run_layer(layer, *args)`` is ``layer(*args)``, under
    activation checkpointing while ``activation_checkpointing`` is True (set by :func:`set_layer_checkpointing`)."""

    activation_checkpointing: bool = False

    def run_layer(self, layer: Callable, *args):
        if self.activation_checkpointing:
            return checkpointed_call(layer, layer, *args)
        return layer(*args)


def set_layer_checkpointing(module: nn.Module, enabled: bool) -> int:
    """Set ``activation_checkpointing`` on every :class:`LayerCheckpointing` in ``module`` (itself included);
    returns how many there are."""
    stacks = [m for m in module.modules() if isinstance(m, LayerCheckpointing)]
    for m in stacks:
        m.activation_checkpointing = bool(enabled)
    return len(stacks)
