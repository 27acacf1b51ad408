# Pieces the model configs of the DETR family share (the detectors' own settings stay in
# their files): the focal-loss set criterion of the detrex releases and the pixel statistics
# of torchvision / SwAV ResNets.
from detectron2.config import LazyCall as L

from disco_detr.modeling import HungarianMatcher, SetCriterion

# RGB in [0, 255], normalised with the ImageNet statistics
IMAGENET_PIXEL_MEAN = [123.675, 116.280, 103.530]
IMAGENET_PIXEL_STD = [58.395, 57.120, 57.375]


def focal_set_criterion(weight_class: float):
    """Hungarian matching with costs class 2 (focal) / L1 5 / GIoU 2 and losses
    ``weight_class`` / 5 / 2 on every decoder layer; ``num_classes`` follows the model's."""
    return L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost="focal"),
        weight_class=weight_class,
        weight_bbox=5.0,
        weight_giou=2.0,
        aux_loss=True,
    )
