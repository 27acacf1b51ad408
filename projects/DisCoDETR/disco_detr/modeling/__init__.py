from . import detectors  # noqa: F401  (registers the meta-architectures)
from .backbone import MobileNetV2Backbone, build_resnet, build_tiny_resnet
from .criterion import SetCriterion
from .detectors import DABDETR, DFINE, DINO, RTDETR, ConditionalDETR, DeformableDETR
from .hgnetv2 import HGNetV2, build_hgnetv2
from .matching import HungarianMatcher
from .resnet_vd import ResNetVd, build_resnet_vd

__all__ = [
    "DABDETR",
    "DFINE",
    "DINO",
    "RTDETR",
    "ConditionalDETR",
    "DeformableDETR",
    "HGNetV2",
    "HungarianMatcher",
    "MobileNetV2Backbone",
    "ResNetVd",
    "SetCriterion",
    "build_hgnetv2",
    "build_resnet",
    "build_resnet_vd",
    "build_tiny_resnet",
]
