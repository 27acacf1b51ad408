# tiny_cond.py with plain SGD: updates are linear in the gradient, so one process and two
# DDP processes must agree to float precision (Adam would amplify rounding on near-zero
# gradients and blur the comparison).
import os

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from disco_detr.solver import detr_param_groups

_tiny = LazyConfig.load(os.path.join(os.path.dirname(__file__), "tiny_cond.py"))
model, dataloader, train, lr_multiplier = _tiny.model, _tiny.dataloader, _tiny.train, _tiny.lr_multiplier
optimizer = L(torch.optim.SGD)(
    params=L(detr_param_groups)(base_lr="${..lr}", weight_decay="${..weight_decay}", backbone_lr_factor=1.0),
    lr=0.05,
    momentum=0.9,
    weight_decay=1e-4,
)
