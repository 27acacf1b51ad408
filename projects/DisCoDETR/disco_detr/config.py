"""LazyConfig loading with strict command-line overrides."""
from __future__ import annotations

from detectron2.config import LazyConfig
from omegaconf import OmegaConf

__all__ = ["load_config"]

_MISSING = object()


def load_config(config_file: str, overrides: list[str] | None = None):
    """Load a LazyConfig file and apply ``key=value`` overrides.

    detectron2 silently *adds* an overridden key that does not exist, so a typo such as
    ``train.max_iters=10`` would be ignored. Here such an override raises ``KeyError``
    naming the key and the file; prefix the key with ``+`` to add a new key on purpose.
    """
    cfg = LazyConfig.load(config_file)
    plain = []
    for override in overrides or []:
        if "=" not in override:
            raise ValueError(f"Override {override!r} is not of the form key=value")
        key = override.split("=", 1)[0]
        if key.startswith("+"):
            plain.append(override[1:])
            continue
        if OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is _MISSING:
            raise KeyError(f"Config key {key!r} does not exist in {config_file} "
                           f"(use +{key}=... to add a new key on purpose)")
        plain.append(override)
    return LazyConfig.apply_overrides(cfg, plain)
