"""Convert torchvision-layout ResNet checkpoints (torchvision, SwAV, MoCo, DINO ...) to the
detectron2 ResNet layout used by our detectors."""
from __future__ import annotations

import re

import torch

__all__ = ["torchvision_resnet_to_detectron2"]

_STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
_DROP = re.compile(r"^(fc|projection_head|prototypes|head)\.|num_batches_tracked$")


def _rename(key: str) -> str:
    key = key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    key = re.sub(r"^conv1\.", "stem.conv1.", key)
    key = re.sub(r"^bn1\.", "stem.conv1.norm.", key)
    key = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", key)
    key = re.sub(r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm.", key)
    return key


def torchvision_resnet_to_detectron2(state: dict, prefix: str = "backbone.") -> tuple[dict, list[str]]:
    """Rename a torchvision-layout ResNet state dict to detectron2's ResNet names.

    Common wrappers (``module.``, ``backbone.``, ``encoder.``, ``model.``) are stripped; the
    classifier and self-supervised heads (``fc``, ``projection_head``, ``prototypes``,
    ``head``) and BN step counters are dropped. Returns (renamed dict with ``prefix``
    prepended, dropped keys). Raises ValueError if no ResNet key is found.
    """
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out, dropped = {}, []
    for key, value in state.items():
        plain = key
        changed = True
        while changed:
            changed = False
            for p in _STRIP_PREFIXES:
                if plain.startswith(p):
                    plain, changed = plain[len(p):], True
        if _DROP.search(plain) or not isinstance(value, torch.Tensor):
            dropped.append(key)
            continue
        out[prefix + _rename(plain)] = value
    if not any(k.startswith(prefix + "stem.") for k in out):
        raise ValueError("No ResNet stem (conv1/bn1) found: is this a torchvision-layout ResNet checkpoint?")
    return out, dropped
