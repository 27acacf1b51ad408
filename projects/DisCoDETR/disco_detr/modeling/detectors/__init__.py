"""The detector variants, one module each over the contract in :mod:`.base` (importing them registers them
on detectron2's META_ARCH_REGISTRY). Their table (configs, presets, converters, test shrink):
disco_detr/variants.py."""
from .conditional_detr import ConditionalDETR
from .d_fine import DFINE
from .dab_detr import DABDETR
from .deformable_detr import DeformableDETR
from .dino import DINO
from .rt_detr import RTDETR

__all__ = ["DABDETR", "DFINE", "DINO", "RTDETR", "ConditionalDETR", "DeformableDETR"]
