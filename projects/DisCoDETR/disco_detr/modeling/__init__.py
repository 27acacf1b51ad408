from . import detectors  # noqa: F401  (registers the meta-architectures)
from .backbone import MobileNetV2Backbone, build_resnet, build_tiny_resnet
from .criterion import SetCriterion
from .detectors import ConditionalDETR, DeformableDETR
from .matching import HungarianMatcher
from .resnet_vd import ResNetVd, build_resnet_vd

__all__ = [
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
from .detectors import DABDETR  # noqa: E402

__all__ += ["DABDETR"]
from .detectors import DINO  # noqa: E402

__all__ += ["DINO"]
from .detectors import RTDETR  # noqa: E402

__all__ += ["RTDETR"]
