from . import detectors  # noqa: F401  (registers the meta-architectures)
from .backbone import MobileNetV2Backbone, build_resnet, build_tiny_resnet
from .criterion import SetCriterion
from .detectors import ConditionalDETR
from .matching import HungarianMatcher

__all__ = [
    "ConditionalDETR",
    "HungarianMatcher",
    "MobileNetV2Backbone",
    "SetCriterion",
    "build_resnet",
    "build_tiny_resnet",
]
