"""Optimizer parameter groups referenced by the LazyConfig files."""
from __future__ import annotations

from torch import nn

__all__ = ["detr_param_groups"]

_NO_DECAY_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                   nn.Embedding)


def detr_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                      backbone_lr_factor: float = 0.1, backbone_key: str = "backbone") -> list[dict]:
    """Parameter groups for AdamW: the backbone at ``backbone_lr_factor`` x ``base_lr``, and no
    weight decay on normalisation layers and embeddings (the learned queries).

    A parameter belongs to the backbone when ``backbone_key`` is one of the dotted parts of
    its module path (so ``detector.backbone.*`` inside a pre-training wrapper counts too).
    Frozen parameters (``requires_grad=False``) are left out. Groups with equal
    hyper-parameters are merged.
    """
    groups: dict[tuple[float, float], list] = {}
    seen = set()
    for module_name, module in model.named_modules():
        in_backbone = backbone_key in module_name.split(".")
        for _, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * (backbone_lr_factor if in_backbone else 1.0)
            wd = 0.0 if isinstance(module, _NO_DECAY_TYPES) else weight_decay
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]
