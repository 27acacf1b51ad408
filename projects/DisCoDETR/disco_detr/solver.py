"""Optimizer parameter groups referenced by the LazyConfig files."""
from __future__ import annotations

from torch import nn

__all__ = ["detr_param_groups"]

# Normalisation layers only: the learned query embeddings are decayed, as in DETR and the
# DisCo release.
_NO_DECAY_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def detr_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                      backbone_lr_factor: float = 0.1, backbone_key: str = "backbone",
                      lr_factor_keys: dict[str, float] | None = None) -> list[dict]:
    """Parameter groups for AdamW: the backbone at ``backbone_lr_factor`` x ``base_lr``, and no
    weight decay on normalisation layers (the learned query embeddings are decayed, as in
    DETR and the DisCo release).

    A parameter belongs to the backbone when ``backbone_key`` is one of the dotted parts of
    its module path (so ``detector.backbone.*`` inside a pre-training wrapper counts too).
    ``lr_factor_keys`` ({module name: factor}) scales the lr of the parameters whose module path
    has that name as one of its dotted parts in the same way (Deformable DETR:
    ``{"sampling_offsets": 0.1, "reference_points": 0.1}``); factors that apply together multiply.
    Frozen parameters (``requires_grad=False``) are left out. Groups with equal
    hyper-parameters are merged.
    """
    groups: dict[tuple[float, float], list] = {}
    seen = set()
    for module_name, module in model.named_modules():
        parts = module_name.split(".")
        factor = backbone_lr_factor if backbone_key in parts else 1.0
        for key, key_factor in (lr_factor_keys or {}).items():
            if key in parts:
                factor *= key_factor
        for _, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * factor
            wd = 0.0 if isinstance(module, _NO_DECAY_TYPES) else weight_decay
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]
