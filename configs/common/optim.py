# AdamW with a lower learning rate for the backbone and no weight decay on norms/embeddings.
import torch
from detectron2.config import LazyCall as L

from disco_detr.solver import detr_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(detr_param_groups)(
        # params.model is set by the trainer
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        backbone_lr_factor=0.1,
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)
