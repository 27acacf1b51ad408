from . import detectors  # noqa: F401  (registers the meta-architectures)
from .backbone import MobileNetV2Backbone, build_resnet, build_tiny_resnet
from .criterion import SetCriterion
from .detectors import DABDETR, DFINE, DINO, RTDETR, ConditionalDETR, DeformableDETR
from .matching import HungarianMatcher
from .resnet_vd import ResNetVd, build_resnet_vd

__all__ = [
    "DABDETR",
    "DFINE",
    "DINO",
    "RTDETR",
    "ConditionalDETR",
    "DeformableDETR",
    "HungarianMatcher",
    "MobileNetV2Backbone",
    "ResNetVd",
    "SetCriterion",
    "build_resnet",
    "build_resnet_vd",
    "build_tiny_resnet",
]
