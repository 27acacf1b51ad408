"""Set-prediction losses of the fine-tuning detectors (and the terms pre-training reuses).

* :mod:`.losses`: element-wise sigmoid focal and varifocal losses, matched-box L1 + GIoU;
* :mod:`.set_criterion`: :class:`SetCriterion` (Hungarian-matched focal + L1 + GIoU over a ``DecoderOutput``);
* :mod:`.rt_detr`: :class:`RTDETRCriterion` (varifocal classification, or DEIM's MAL);
* :mod:`.mal`: DEIM's matchability-aware loss;
* :mod:`.d_fine`: :class:`DFineCriterion` (RT-DETR's plus the distribution losses FGL and DDF);
* :mod:`.denoising`: the contrastive denoising loss DINO and RT-DETR share.
"""
from .d_fine import DFineCriterion
from .denoising import denoising_losses
from .losses import box_losses, sigmoid_focal_loss, varifocal_loss
from .mal import matchability_aware_loss
from .rt_detr import RTDETRCriterion
from .set_criterion import SetCriterion, flatten_indices, num_boxes_across_workers

__all__ = [
    "DFineCriterion",
    "RTDETRCriterion",
    "SetCriterion",
    "box_losses",
    "denoising_losses",
    "flatten_indices",
    "matchability_aware_loss",
    "num_boxes_across_workers",
    "sigmoid_focal_loss",
    "varifocal_loss",
]
