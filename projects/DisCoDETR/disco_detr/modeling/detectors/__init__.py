from .conditional_detr import ConditionalDETR
from .deformable_detr import DeformableDETR

__all__ = ["ConditionalDETR", "DeformableDETR"]
