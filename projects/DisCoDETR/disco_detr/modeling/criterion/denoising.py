"""The contrastive denoising loss of DINO (Zhang et al. 2023, section 3.3) and RT-DETR: the detector's own
per-layer losses on the denoising queries with their fixed assignment (each positive query reconstructs the
box and class it was made from; negatives only enter the classification term as "no object"), normalised by
the number of target boxes times the number of denoising groups."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from ..detectors.base import DenoisingOutput

__all__ = ["denoising_losses"]


def denoising_losses(criterion: nn.Module, denoising: DenoisingOutput, targets: list[dict],
                     num_boxes: float) -> dict[str, Tensor]:
    """Weighted losses ``{name}_dn`` (last layer) and ``{name}_dn_{l}`` of every layer of ``denoising`` that
    ``criterion.aux_loss`` supervises, with ``criterion.layer_losses`` (a :class:`.set_criterion.SetCriterion`'s:
    focal or varifocal classification, L1, GIoU) on the fixed matches ``denoising.groups.matches()``;
    ``num_boxes``: the matching loss's normaliser."""
    groups = denoising.groups
    matches = groups.matches()
    losses = {}
    for suffix, logits, boxes in denoising.supervised_layers(criterion.aux_loss):
        values = criterion.layer_losses(logits, boxes, targets, num_boxes * groups.num_groups, indices=matches)
        for name, value in values.items():
            losses[name + suffix] = value * criterion.weights[name]
    return losses
