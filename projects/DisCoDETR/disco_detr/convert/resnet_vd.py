"""Convert ResNet-vd checkpoints to :class:`disco_detr.modeling.resnet_vd.ResNetVd` names.

Three source layouts (``source``):

``"rtdetr"``  the PyTorch RT-DETR release's ``PResNet`` (lyuwenyu/RT-DETR ``rtdetr_pytorch``
             ``src/nn/backbone/presnet.py``): ``conv1.conv1_{1,2,3}.{conv,norm}``,
             ``res_layers.{s}.blocks.{b}.branch2{a,b,c}.{conv,norm}``, shortcut ``short.{conv,norm}``
             (stride 1) or ``short.conv.{conv,norm}`` (after the average pool). This is the layout of
             its ImageNet file ``ResNet50_vd_ssld_v2_pretrained_from_paddle.pth`` (bare keys) and of
             full RT-DETR checkpoints (``backbone.`` prefix, inside ``model`` or ``ema.module``).
``"timm"``    timm ``resnet50d`` / ``resnet101d`` / ``resnet152d``: ``conv1.{0,3,6}`` + BNs ``conv1.{1,4}``, ``bn1``,
             ``layer{L}.{b}.conv{k}`` / ``bn{k}``, shortcut ``downsample.{1,2}``; ``fc`` is dropped.
``"hf"``      HuggingFace transformers ``RTDetrResNet`` (4.x and 5.x): ``embedder.embedder.{n}``,
             ``encoder.stages.{s}.layers.{b}.layer.{k}``, shortcut ``shortcut`` or ``shortcut.1``, each with
             ``convolution`` / ``normalization``; inside RT-DETR models under ``model.backbone.model.``.

The backbone's key prefix inside the file is found from the first stem convolution (or given as
``source_prefix``); keys outside it (the rest of a detector) and BN step counters are dropped.
Every backbone key must map to a key of the architecture inferred from the converted tensors, and
every key of that architecture must be present with the same shape: otherwise a ``KeyError`` /
``ValueError`` names the offending keys. (``ResNetVd`` gives the first block of every stage a projection
shortcut, as the release does; HF and timm omit it where input and output widths agree at stride 1, which
no published ResNet-vd has: such a file fails with the missing shortcut keys named.)
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..modeling.resnet_vd import ResNetVd

__all__ = ["RESNET_VD_SOURCES", "convert_resnet_vd", "infer_resnet_vd_config", "unwrap_state_dict"]

_BN = r"(weight|bias|running_mean|running_var)"


def _rules(pairs: list[tuple[str, Callable[[re.Match], str]]]) -> list[tuple[re.Pattern, Callable[[re.Match], str]]]:
    return [(re.compile(p), f) for p, f in pairs]


def _stage(s: str, offset: int) -> str:
    return f"res{int(s) + offset}"


_RTDETR_RULES = _rules([
    (r"^conv1\.conv1_([123])\.conv\.weight$", lambda m: f"stem.conv{m[1]}.weight"),
    (rf"^conv1\.conv1_([123])\.norm\.{_BN}$", lambda m: f"stem.conv{m[1]}.norm.{m[2]}"),
    (r"^res_layers\.(\d+)\.blocks\.(\d+)\.branch2([abc])\.conv\.weight$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.conv{'abc'.index(m[3]) + 1}.weight"),
    (rf"^res_layers\.(\d+)\.blocks\.(\d+)\.branch2([abc])\.norm\.{_BN}$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.conv{'abc'.index(m[3]) + 1}.norm.{m[4]}"),
    (r"^res_layers\.(\d+)\.blocks\.(\d+)\.short\.(?:conv\.)?conv\.weight$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.shortcut.weight"),
    (rf"^res_layers\.(\d+)\.blocks\.(\d+)\.short\.(?:conv\.)?norm\.{_BN}$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.shortcut.norm.{m[3]}"),
])

_TIMM_STEM = {"0": "conv1", "3": "conv2", "6": "conv3"}
_TIMM_STEM_BN = {"1": "conv1", "4": "conv2"}
_TIMM_RULES = _rules([
    (r"^conv1\.([036])\.weight$", lambda m: f"stem.{_TIMM_STEM[m[1]]}.weight"),
    (rf"^conv1\.([14])\.{_BN}$", lambda m: f"stem.{_TIMM_STEM_BN[m[1]]}.norm.{m[2]}"),
    (rf"^bn1\.{_BN}$", lambda m: f"stem.conv3.norm.{m[1]}"),
    (r"^layer(\d+)\.(\d+)\.conv([123])\.weight$", lambda m: f"{_stage(m[1], 1)}.{m[2]}.conv{m[3]}.weight"),
    (rf"^layer(\d+)\.(\d+)\.bn([123])\.{_BN}$", lambda m: f"{_stage(m[1], 1)}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (r"^layer(\d+)\.(\d+)\.downsample\.1\.weight$", lambda m: f"{_stage(m[1], 1)}.{m[2]}.shortcut.weight"),
    (rf"^layer(\d+)\.(\d+)\.downsample\.2\.{_BN}$", lambda m: f"{_stage(m[1], 1)}.{m[2]}.shortcut.norm.{m[3]}"),
])

_HF_RULES = _rules([
    (r"^embedder\.embedder\.([012])\.convolution\.weight$", lambda m: f"stem.conv{int(m[1]) + 1}.weight"),
    (rf"^embedder\.embedder\.([012])\.normalization\.{_BN}$", lambda m: f"stem.conv{int(m[1]) + 1}.norm.{m[2]}"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.([012])\.convolution\.weight$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.conv{int(m[3]) + 1}.weight"),
    (rf"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.([012])\.normalization\.{_BN}$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.conv{int(m[3]) + 1}.norm.{m[4]}"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(?:1\.)?convolution\.weight$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.shortcut.weight"),
    (rf"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(?:1\.)?normalization\.{_BN}$",
     lambda m: f"{_stage(m[1], 2)}.{m[2]}.shortcut.norm.{m[3]}"),
])

# source -> (rename rules, key of the first stem convolution, keys dropped inside the backbone)
_SOURCES = {
    "rtdetr": (_RTDETR_RULES, "conv1.conv1_1.conv.weight", re.compile(r"num_batches_tracked$")),
    "timm": (_TIMM_RULES, "conv1.0.weight", re.compile(r"num_batches_tracked$|^fc\.")),
    "hf": (_HF_RULES, "embedder.embedder.0.convolution.weight", re.compile(r"num_batches_tracked$")),
}
RESNET_VD_SOURCES = tuple(_SOURCES)


def load_weights_file(path: str, allow_pickle: bool = False):
    """The object in a .pth / .pt / .bin (torch.load on the CPU, ``weights_only`` unless
    ``allow_pickle``: only for files you trust) or .safetensors file (needs ``safetensors``).
    Errors do not name the file: the converter tools add it."""
    if not os.path.isfile(path):
        raise FileNotFoundError("file not found")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError("reading .safetensors needs the 'safetensors' package (pip install safetensors)") from e
        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=not allow_pickle)


def unwrap_state_dict(obj, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint.

    ``key`` is a dotted path (``"ema.module"``, ``"model"``); without it the object is used as is if
    it holds tensors, else the first of ``state_dict``, ``model``, ``module`` found (recursively).
    """
    if key:
        for part in key.split("."):
            if not isinstance(obj, Mapping) or part not in obj:
                raise KeyError(f"checkpoint has no entry {part!r} on the path {key!r}")
            obj = obj[part]
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    return dict(obj)


def _find_prefix(keys, anchor: str, source: str) -> str:
    prefixes = sorted({k[: -len(anchor)] for k in keys
                       if k.endswith(anchor) and (len(k) == len(anchor) or k[-len(anchor) - 1] == ".")})
    if not prefixes:
        raise KeyError(f"no '{anchor}' key found: not a {source!r}-layout ResNet-vd checkpoint "
                       f"(first keys: {list(keys)[:5]})")
    if len(prefixes) > 1:
        raise ValueError(f"several backbones in the checkpoint (prefixes {prefixes}); pass source_prefix")
    return prefixes[0]


def infer_resnet_vd_config(state: Mapping[str, torch.Tensor]) -> dict:
    """``ResNetVd`` keyword arguments (stem_widths, depths, widths, bottleneck_ratio, in_channels) read from
    tensors in our layout (no prefix). Raises ``KeyError`` naming a key that the inference needs."""
    def shape(key):
        if key not in state:
            raise KeyError(f"missing key {key!r}")
        return tuple(state[key].shape)

    stem_widths = tuple(shape(f"stem.conv{n}.weight")[0] for n in (1, 2, 3))
    blocks: dict[int, set[int]] = {}
    for k in state:
        m = re.match(r"^res(\d+)\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    stages = sorted(blocks)
    if not stages or stages != list(range(2, 2 + len(stages))):
        raise KeyError(f"stages must be res2, res3, ... without gaps; found {[f'res{s}' for s in stages]}")
    for s in stages:
        if sorted(blocks[s]) != list(range(len(blocks[s]))):
            raise KeyError(f"res{s} has blocks {sorted(blocks[s])}, expected 0..{len(blocks[s]) - 1}")
    depths = tuple(len(blocks[s]) for s in stages)
    widths = tuple(shape(f"res{s}.0.conv3.weight")[0] for s in stages)
    ratios = {w // shape(f"res{s}.0.conv1.weight")[0] for s, w in zip(stages, widths)}
    if len(ratios) != 1:
        raise ValueError(f"bottleneck ratio differs between stages ({sorted(ratios)}); not a ResNet-vd")
    return {"stem_widths": stem_widths, "depths": depths, "widths": widths, "bottleneck_ratio": ratios.pop(),
            "in_channels": shape("stem.conv1.weight")[1]}


def _reference_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = ResNetVd(**config, out_features=(f"res{len(config['depths']) + 1}",))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_resnet_vd(state: Mapping[str, torch.Tensor], source: str, prefix: str = "", *,
                      source_prefix: str | None = None,
                      reference: nn.Module | Mapping[str, torch.Tensor] | None = None,
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a ``source``-layout ResNet-vd state dict to ``ResNetVd`` names.

    Args:
        state: tensor dict (use :func:`unwrap_state_dict` on a loaded checkpoint file).
        source: ``"rtdetr"``, ``"timm"`` or ``"hf"`` (see the module docstring).
        prefix: prepended to every output key (``"backbone."`` for our detectors' ``init_checkpoint``).
        source_prefix: the backbone's prefix inside ``state``; found from the stem key when ``None``.
        reference: a ``ResNetVd`` (built with all stages) or its state dict to check against; by default
            the architecture inferred from the converted shapes (:func:`infer_resnet_vd_config`).

    Returns:
        (converted, dropped): the renamed tensors (the input tensors, not copies) and the input keys
        not converted (outside the backbone prefix, BN step counters, timm's ``fc``).

    Raises:
        KeyError / ValueError naming the keys: unknown source, a backbone key that no rule maps,
        two keys mapping to one name, missing keys, unexpected keys, shape mismatches.
    """
    if source not in _SOURCES:
        raise KeyError(f"unknown source {source!r}; choose from {RESNET_VD_SOURCES}")
    rules, anchor, drop = _SOURCES[source]
    if source_prefix is None:
        source_prefix = _find_prefix(state.keys(), anchor, source)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped, unmapped = [], []
    for key, value in state.items():
        if not key.startswith(source_prefix) or not isinstance(value, torch.Tensor):
            dropped.append(key)
            continue
        local = key[len(source_prefix):]
        if drop.search(local):
            dropped.append(key)
            continue
        for pattern, target in rules:
            m = pattern.match(local)
            if m:
                new = target(m)
                if new in converted:
                    raise ValueError(f"{key!r} and {origin[new]!r} both map to {new!r}")
                converted[new], origin[new] = value, key
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyError(f"unexpected {source!r} backbone keys (no {source} ResNet-vd name): {unmapped[:20]}"
                       + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 20 else ""))

    if not converted:
        raise KeyError(f"no {source!r} backbone keys under the prefix {source_prefix!r}")
    if reference is None:
        expected = _reference_shapes(infer_resnet_vd_config(converted))
    else:
        ref_state = reference.state_dict() if isinstance(reference, nn.Module) else reference
        expected = {k: tuple(v.shape) for k, v in ref_state.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in converted]
    if missing:
        raise KeyError(f"missing keys for the ResNet-vd: {missing[:20]}" + (f" ... ({len(missing)} in all)"
                                                                             if len(missing) > 20 else ""))
    unexpected = [f"{origin[k]} -> {k}" for k in converted if k not in expected]
    if unexpected:
        raise KeyError(f"unexpected keys (no place in the ResNet-vd): {unexpected[:20]}")
    bad = [f"{origin[k]} -> {k}: {tuple(v.shape)} vs expected {expected[k]}"
           for k, v in converted.items() if tuple(v.shape) != expected[k]]
    if bad:
        raise ValueError(f"shape mismatch: {bad[:20]}")
    return {prefix + k: v for k, v in converted.items()}, dropped
