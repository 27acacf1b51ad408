from . import detectors  # noqa: F401  (registers the meta-architectures)
from .backbone import build_resnet, build_tiny_resnet
from .criterion import SetCriterion
from .detectors import ConditionalDETR
from .matching import HungarianMatcher

__all__ = ["ConditionalDETR", "HungarianMatcher", "SetCriterion", "build_resnet", "build_tiny_resnet"]
