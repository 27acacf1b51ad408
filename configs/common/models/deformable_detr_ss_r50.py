# Single-scale Deformable DETR R50: configs/common/models/deformable_detr_r50.py on res5 only (one level,
# no extra level), the model of the paper's Deformable-SS rows.
from .deformable_detr_r50 import model, single_scale

single_scale(model)
