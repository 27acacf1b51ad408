from .conditional_detr import ConditionalDETR
from .deformable_detr import DeformableDETR

__all__ = ["ConditionalDETR", "DeformableDETR"]

from .dab_detr import DABDETR  # noqa: E402

__all__ += ["DABDETR"]

from .dino import DINO  # noqa: E402

__all__ += ["DINO"]

from .rt_detr import RTDETR  # noqa: E402

__all__ += ["RTDETR"]
