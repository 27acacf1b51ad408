"""Conversion on load: one converter per source layout, all reporting what they kept and dropped.

Every converter takes the object ``torch.load`` returned for the downloaded file and gives our key
names. Detector layouts give the detector's own keys (``backbone.*``, ``encoder.*`` ...), which load
into a fine-tuning detector, or, prefixed by the checkpointer, into a pre-training wrapper; backbone
layouts give ``backbone.*`` only; Siamese DETR's pre-trained detectors give ``detector.*`` keys, the
format of our own pre-training checkpoints, so the checkpointer's pre-train -> fine-tune transfer
(class head dropped, transfer report) applies to them as to ours.

A layout whose converter is not in this code base raises :class:`MissingConverterError` naming the
converter, before anything is downloaded (:func:`check_converter`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from detectron2.config import LazyConfig, instantiate
from torch import Tensor

from ..convert import d_fine, detrex, resnet_vd, rtdetr, siamese_detr, torchvision_resnet
from ..modeling.pretrain.base import DETECTOR_PREFIX
from .catalog import get_config_file

__all__ = ["MissingConverterError", "ZooConversion", "check_converter", "convert_entry"]


class MissingConverterError(NotImplementedError):
    """The entry's source layout needs a converter this code base does not have (yet)."""


@dataclass
class ZooConversion:
    """The conversion report: ``kept`` our keys (sorted), ``dropped`` source keys with the reason,
    ``details`` the converter's own report (its to_dict()), ``converter`` what ran."""

    name: str
    layout: str
    converter: str
    kept: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"model zoo {self.name} ({self.layout}, {self.converter}): kept {len(self.kept)} tensors, "
                f"dropped {len(self.dropped)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _tensors(obj, what: str) -> dict[str, Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"no {what} state dict found (expected a dict of tensors, or one under 'model' / 'state_dict')")
    return dict(obj)


def _torchvision(obj, entry):
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    out, dropped = torchvision_resnet.torchvision_resnet_to_detectron2(_tensors(state, "ResNet"), prefix="backbone.")
    return out, {k: "classifier / self-supervised head / BN step counter" for k in dropped}, {}


def _resnet_vd(source: str):
    def run(obj, entry):
        state = resnet_vd.unwrap_state_dict(obj, entry.options.get("key"))
        out, dropped = resnet_vd.convert_resnet_vd(state, source, "backbone.", source_prefix=entry.options.get("source_prefix"))
        return out, {k: "outside the backbone / BN step counter / classifier" for k in dropped}, {}
    return run


def _detrex(variant: str):
    def run(obj, entry):
        out, report = detrex.convert_detrex(_tensors(obj, "detrex"), variant, strict=True)
        return out, {k: "BN step counter / loss buffer" for k in report.dropped}, report.to_dict()
    return run


def _siamese(obj, entry):
    variant = entry.options.get("variant")
    out, report = siamese_detr.convert_siamese_detr(siamese_detr.unwrap_siamese_detr(obj), variant)
    return {f"{DETECTOR_PREFIX}{k}": v for k, v in out.items()}, dict(report.dropped), report.to_dict()


def _ours(obj, entry):
    state = _tensors(obj, "DisCo DETR")
    dropped = {k: "not a tensor" for k, v in state.items() if not isinstance(v, Tensor)}
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}, dropped, {}


def _reference_model(entry):
    """Our model of the entry's first config, on the meta device (shapes only, no memory)."""
    cfg = LazyConfig.load(get_config_file(entry.name))
    with torch.device("meta"):
        return instantiate(cfg.model)


def _two_stage(layout: str, module, function: str, name: str):
    """RT-DETR's and D-FINE's: the EMA weights where the file has them, converted by ``module.function`` (looked
    up at each call) against the entry's model."""
    def run(obj, entry):
        key = entry.options.get("key") or ("ema.module" if isinstance(obj, Mapping) and "ema" in obj else None)
        state = resnet_vd.unwrap_state_dict(obj, key)
        out, dropped = getattr(module, function)(state, layout.split("_", 1)[1], _reference_model(entry))
        return out, {k: f"dropped by the {name} converter (merged duplicate / constant / unused head)"
                     for k in dropped}, {}
    return run


def _rtdetr(layout: str):
    return _two_stage(layout, rtdetr, "convert_rtdetr", "RT-DETR")


def _detrex_available(variant: str) -> str | None:
    if variant in detrex.DETREX_VARIANTS:
        return None
    return (f"disco_detr.convert.detrex.convert_detrex(variant={variant!r}) (detrex's {variant} layout; the detrex "
            f"converter handles only {detrex.DETREX_VARIANTS} so far)")


def _target_available(converter: str, model: str):
    def check(entry) -> str | None:
        if not entry.fits and not entry.config:
            return (f"a target config for disco_detr.convert.{converter}, which checks every key against our "
                    f"{model} model built from the config the entry fits; this entry fits none of our configs (see "
                    "its note)")
        return None
    return check


_rtdetr_available = _target_available("rtdetr.convert_rtdetr", "RT-DETR")
_dfine_available = _target_available("d_fine.convert_dfine", "D-FINE")


def _siamese_available(entry) -> str | None:
    if entry.options.get("variant") not in siamese_detr.SIAMESE_DETR_VARIANTS:
        return (f"a Siamese DETR converter for variant {entry.options.get('variant')!r} (options.variant must be one of "
                f"{siamese_detr.SIAMESE_DETR_VARIANTS})")
    return None


# layout -> (converter description, converter, availability check returning the missing converter or None)
_CONVERTERS: dict[str, tuple[str, Callable, Callable]] = {
    "torchvision_resnet": ("convert.torchvision_resnet.torchvision_resnet_to_detectron2", _torchvision, lambda e: None),
    "resnet_vd_release": ("convert.resnet_vd.convert_resnet_vd(source='rtdetr')", _resnet_vd("rtdetr"),
                          lambda e: None),
    "resnet_vd_timm": ("convert.resnet_vd.convert_resnet_vd(source='timm')", _resnet_vd("timm"), lambda e: None),
    "detrex_conditional": ("convert.detrex.convert_detrex('conditional')", _detrex("conditional"),
                           lambda e: _detrex_available("conditional")),
    "detrex_deformable": ("convert.detrex.convert_detrex('deformable')", _detrex("deformable"),
                          lambda e: _detrex_available("deformable")),
    "detrex_dab": ("convert.detrex.convert_detrex('dab')", _detrex("dab"), lambda e: _detrex_available("dab")),
    "detrex_dino": ("convert.detrex.convert_detrex('dino')", _detrex("dino"), lambda e: _detrex_available("dino")),
    "rtdetr_hf": ("convert.rtdetr.convert_rtdetr(source='hf')", _rtdetr("rtdetr_hf"),
                  _rtdetr_available),
    "rtdetr_release": ("convert.rtdetr.convert_rtdetr(source='release')", _rtdetr("rtdetr_release"),
                       _rtdetr_available),
    "dfine_hf": ("convert.d_fine.convert_dfine(source='hf')", _two_stage("dfine_hf", d_fine, "convert_dfine", "D-FINE"),
                 _dfine_available),
    "dfine_release": ("convert.d_fine.convert_dfine(source='release')",
                      _two_stage("dfine_release", d_fine, "convert_dfine", "D-FINE"), _dfine_available),
    "siamese_detr": ("convert.siamese_detr.convert_siamese_detr", _siamese, _siamese_available),
    "ours": ("none (our own layout)", _ours, lambda e: None),
}


def check_converter(entry) -> None:
    """Raise :class:`MissingConverterError` naming the converter ``entry``'s layout needs, if it is missing."""
    if entry.layout not in _CONVERTERS:
        raise MissingConverterError(f"model zoo entry {entry.name!r}: no converter is registered for layout {entry.layout!r}")
    missing = _CONVERTERS[entry.layout][2](entry)
    if missing:
        raise MissingConverterError(
            f"model zoo entry {entry.name!r} has source layout {entry.layout!r}, whose converter is missing: {missing}. "
            "Nothing was downloaded.")


def convert_entry(entry, obj, source_file: str = "") -> tuple[dict[str, Tensor], ZooConversion]:
    """Convert the loaded file of ``entry`` to our names. Errors name the entry and the file."""
    check_converter(entry)
    description, run, _ = _CONVERTERS[entry.layout]
    try:
        out, dropped, details = run(obj, entry)
    except (KeyError, ValueError) as e:
        raise type(e)(f"model zoo entry {entry.name!r} ({entry.layout}): converting {source_file or 'the file'} "
                      f"failed: {e}") from e
    return out, ZooConversion(entry.name, entry.layout, description, sorted(out), dict(dropped), details)
