"""Convert Siamese DETR's released pre-trained checkpoints (Zx55/SiameseDETR) to our detectors' names.

The key names follow the release's model code (commit b38a0c6: ``openselfsup/models/siamese_detr.py``,
``necks/conditional_tr.py``, ``necks/deformable_tr.py``, ``necks/vanilla_tr.py``, ``heads/siamdetr_head.py``,
``tools/convert_to_detr.py``). The released files themselves could not be opened here, so both forms the
code produces are accepted:

* the OpenSelfSup training checkpoint: ``{"state_dict": {...}}``, keys optionally under ``module.``:
  ``backbone.<torchvision ResNet>``, ``patch2query``, ``input_proj``, ``query_embed``, ``transformer.*``,
  ``pred_head.{bbox_embed,class_embed,feature_align}``, ``pred_head.criterion.empty_weight``,
  ``enc_head.*``, ``dec_head.*``;
* the output of the release's ``tools/convert_to_detr.py``: ``{"model": {...}}`` with the backbone under
  ``backbone.0.body.``, ``bbox_embed`` without ``pred_head.`` and, for Deformable DETR (``--deform``),
  six identical copies ``bbox_embed.<i>`` / ``class_embed.<i>``.

``variant="conditional"`` -> :class:`~disco_detr.modeling.ConditionalDETR`:
    encoder ``self_attn.in_proj_{weight,bias}`` (rows q, k, v) -> ``self_attn.{q,k,v}_proj``; ``norm1`` ->
    ``norm``, ``norm2`` -> ``ffn.norm``, ``linear{1,2}`` -> ``ffn.linear{1,2}``; decoder ``sa_*_proj`` /
    ``ca_*_proj`` -> ``proj.sa_*`` / ``proj.ca_*``, ``self_attn.out_proj`` -> ``proj.sa_out``,
    ``cross_attn.out_proj`` -> ``proj.ca_out``, ``norm{1,2}`` kept, ``norm3`` -> ``ffn.norm``;
    ``transformer.decoder.{norm,query_scale,ref_point_head}`` -> ``decoder.*``.
``variant="deformable"`` (multi-scale, 4 levels) -> :class:`~disco_detr.modeling.DeformableDETR`:
    the positional ``query_embed`` (N, d) and the content ``transformer.tgt_embed`` (N, d) become our
    ``query_embed`` (N, 2d) = [positional | content]; the decoder layer's ``norm2`` (after self-attention in
    the Deformable DETR code) -> our ``norm1``, ``norm1`` (after cross-attention) -> ``norm2``, ``norm3`` ->
    ``ffn.norm``; deformable attention keeps its names and row layouts; ``transformer.level_embed`` ->
    ``level_embed``; ``transformer.reference_points`` -> ``reference_points``.

Both: the torchvision-layout backbone goes through :func:`~.torchvision_resnet.torchvision_resnet_to_detectron2`;
``pred_head.bbox_embed`` -> ``bbox_embed``; ``pred_head.class_embed`` (3 outputs: object / no-object
in Siamese DETR's own head) -> ``class_embed`` (fine-tuning transfer drops it); the pre-training-only
modules (``patch2query``, ``pred_head.feature_align``, ``enc_head``, ``dec_head``, loss buffers) are
dropped and listed. Two-stage / box-refinement keys and the single-scale Deformable variant (a plain
1x1 input projection without GroupNorm) are refused.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .detrex import take_rows
from .torchvision_resnet import torchvision_resnet_to_detectron2

__all__ = ["SIAMESE_DETR_VARIANTS", "SiameseDETRConversion", "convert_siamese_detr", "unwrap_siamese_detr"]

SIAMESE_DETR_VARIANTS = ("conditional", "deformable")

_WB = r"(weight|bias)"
_ENC = r"transformer\.encoder\.layers\.(\d+)\."
_DEC = r"transformer\.decoder\.layers\.(\d+)\."
_COND_PROJ = r"(sa_qcontent|sa_qpos|sa_kcontent|sa_kpos|sa_v|ca_qcontent|ca_qpos|ca_qpos_sine|ca_kcontent|ca_kpos|ca_v)"
_MSDA = r"(sampling_offsets|attention_weights|value_proj|output_proj)"

#: pre-training-only modules: (pattern, why it is dropped)
_PRETRAIN_ONLY = [
    (re.compile(r"^patch2query\."), "object-feature projection (pre-training only)"),
    (re.compile(r"^pred_head\.feature_align\."), "feature reconstruction MLP (pre-training only)"),
    (re.compile(r"^pred_head\.criterion\."), "loss buffer"),
    (re.compile(r"^(enc_head|dec_head)\."), "encoder / decoder contrastive head (pre-training only)"),
    (re.compile(r"(^|\.)num_batches_tracked$"), "BN step counter"),
]
_REFUSED = re.compile(r"^transformer\.(enc_output|enc_output_norm|pos_trans|pos_trans_norm|decoder\.(bbox|class)_embed)\.")


def _split(prefix: str, suffix: str) -> list[tuple[str, tuple[int, int] | None]]:
    return [(f"{prefix}.{n}_proj.{suffix}", (k, 3)) for k, n in enumerate("qkv")]


def _one(key: str) -> list[tuple[str, tuple[int, int] | None]]:
    return [(key, None)]


_COMMON = [
    (rf"^input_proj\.{_WB}$", lambda m: _one(f"input_proj.{m[1]}")),
    (rf"^input_proj\.(\d+)\.([01])\.{_WB}$", lambda m: _one(f"input_proj.{m[1]}.{m[2]}.{m[3]}")),
    (rf"^pred_head\.bbox_embed\.layers\.(\d+)\.{_WB}$", lambda m: _one(f"bbox_embed.layers.{m[1]}.{m[2]}")),
    (rf"^pred_head\.class_embed\.{_WB}$", lambda m: _one(f"class_embed.{m[1]}")),
    (rf"^{_ENC}linear([12])\.{_WB}$", lambda m: _one(f"encoder.layers.{m[1]}.ffn.linear{m[2]}.{m[3]}")),
    (rf"^{_DEC}linear([12])\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.ffn.linear{m[2]}.{m[3]}")),
    (rf"^{_DEC}norm3\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.ffn.norm.{m[2]}")),
    (rf"^{_ENC}norm2\.{_WB}$", lambda m: _one(f"encoder.layers.{m[1]}.ffn.norm.{m[2]}")),
]

_CONDITIONAL = [(re.compile(p), f) for p, f in _COMMON + [
    (r"^query_embed\.weight$", lambda m: _one("query_embed.weight")),
    (rf"^{_ENC}self_attn\.in_proj_{_WB}$", lambda m: _split(f"encoder.layers.{m[1]}.self_attn", m[2])),
    (rf"^{_ENC}self_attn\.out_proj\.{_WB}$", lambda m: _one(f"encoder.layers.{m[1]}.self_attn.out_proj.{m[2]}")),
    (rf"^{_ENC}norm1\.{_WB}$", lambda m: _one(f"encoder.layers.{m[1]}.norm.{m[2]}")),
    (rf"^{_DEC}{_COND_PROJ}_proj\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.proj.{m[2]}.{m[3]}")),
    (rf"^{_DEC}self_attn\.out_proj\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.proj.sa_out.{m[2]}")),
    (rf"^{_DEC}cross_attn\.out_proj\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.proj.ca_out.{m[2]}")),
    (rf"^{_DEC}norm([12])\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.norm{m[2]}.{m[3]}")),
    (rf"^transformer\.decoder\.norm\.{_WB}$", lambda m: _one(f"decoder.norm.{m[1]}")),
    (rf"^transformer\.decoder\.(query_scale|ref_point_head)\.layers\.(\d+)\.{_WB}$",
     lambda m: _one(f"decoder.{m[1]}.layers.{m[2]}.{m[3]}")),
]]

_DEFORMABLE = [(re.compile(p), f) for p, f in _COMMON + [
    # query_embed / tgt_embed are merged separately
    (r"^transformer\.level_embed$", lambda m: _one("level_embed")),
    (rf"^transformer\.reference_points\.{_WB}$", lambda m: _one(f"reference_points.{m[1]}")),
    (rf"^{_ENC}self_attn\.{_MSDA}\.{_WB}$", lambda m: _one(f"encoder.layers.{m[1]}.self_attn.{m[2]}.{m[3]}")),
    (rf"^{_ENC}norm1\.{_WB}$", lambda m: _one(f"encoder.layers.{m[1]}.norm1.{m[2]}")),
    (rf"^{_DEC}cross_attn\.{_MSDA}\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.cross_attn.{m[2]}.{m[3]}")),
    (rf"^{_DEC}self_attn\.in_proj_{_WB}$", lambda m: _split(f"decoder.layers.{m[1]}.self_attn", m[2])),
    (rf"^{_DEC}self_attn\.out_proj\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.self_attn.out_proj.{m[2]}")),
    (rf"^{_DEC}norm2\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.norm1.{m[2]}")),  # after self-attention
    (rf"^{_DEC}norm1\.{_WB}$", lambda m: _one(f"decoder.layers.{m[1]}.norm2.{m[2]}")),  # after cross-attention
]]


@dataclass
class SiameseDETRConversion:
    """What :func:`convert_siamese_detr` did. ``converted``: (source key, our key) pairs (a split in_proj gives
    three); ``merged``: exported per-layer head copies equal to the first; ``dropped``: {source key: reason};
    ``unmatched``: keys no rule knows (an error when strict); ``form``: ``"openselfsup"`` or ``"convert_to_detr"``."""

    variant: str
    form: str = ""
    converted: list[tuple[str, str]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"Siamese DETR {self.variant} ({self.form}): {len(self.converted)} tensors converted, "
                f"{len(self.merged)} head copies merged, {len(self.dropped)} dropped, {len(self.unmatched)} unmatched")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def unwrap_siamese_detr(obj) -> dict[str, Tensor]:
    """The tensor dict in a loaded Siamese DETR file (``state_dict`` or ``model`` entry, or the dict itself)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("no state dict found (expected a dict of tensors, or one under 'state_dict' / 'model')")
    return dict(obj)


def _canonical(state: Mapping[str, Tensor], variant: str, report: SiameseDETRConversion) -> dict[str, Tensor]:
    """OpenSelfSup names, whatever form the file has: strip ``module.``, undo convert_to_detr.py's renames."""
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    exported = any(k.startswith("backbone.0.body.") for k in state) or any(
        re.match(r"^(bbox|class)_embed\.", k) for k in state)
    report.form = "convert_to_detr" if exported else "openselfsup"
    if not exported:
        return dict(state)
    out: dict[str, Tensor] = {}
    first: dict[str, str] = {}
    for key, value in state.items():
        new = key
        if key.startswith("backbone.0.body."):
            new = "backbone." + key[len("backbone.0.body."):]
        else:
            m = re.match(r"^(bbox|class)_embed\.(?:(\d+)\.)?(.*)$", key)
            if m:
                new = f"pred_head.{m[1]}_embed.{m[3]}"
                if new in out:
                    if out[new].shape != value.shape or not torch.equal(out[new], value):
                        raise ValueError(f"{key!r} differs from {first[new]!r}: the exported per-layer head copies of "
                                         "the plain Deformable DETR must be equal")
                    report.merged.append(key)
                    continue
        first[new] = key
        out[new] = value
    return out


def convert_siamese_detr(state: Mapping[str, Tensor], variant: str, *, strict: bool = True,
                         ) -> tuple[dict[str, Tensor], SiameseDETRConversion]:
    """Rename a Siamese DETR state dict (either form, see the module docstring) to our detector's names.

    Returns (our detector state dict, no ``detector.`` prefix; :class:`SiameseDETRConversion`).
    Raises KeyError naming keys (unknown variant, unmatched keys when ``strict``, refused two-stage keys,
    a missing ``tgt_embed``), ValueError (single-scale Deformable, differing head copies, q/k/v rows).
    """
    if variant not in SIAMESE_DETR_VARIANTS:
        raise KeyError(f"unknown Siamese DETR variant {variant!r}; choose from {SIAMESE_DETR_VARIANTS}")
    report = SiameseDETRConversion(variant)
    state = _canonical(state, variant, report)
    refused = sorted(k for k in state if _REFUSED.match(k))
    if refused:
        raise KeyError(f"two-stage / box-refinement keys ({refused[:4]} ...): only the plain pre-trained detector converts")
    if variant == "deformable" and "input_proj.weight" in state:
        raise ValueError("single-scale Siamese DETR Deformable checkpoint (input_proj is one 1x1 conv without GroupNorm): "
                         "not supported; use the multi-scale release (input_proj.<level>.{0,1})")
    out: dict[str, Tensor] = {}
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if backbone:
        renamed, dropped = torchvision_resnet_to_detectron2(backbone, prefix="backbone.")
        for k in dropped:
            report.dropped["backbone." + k] = "backbone head / BN step counter"
        kept = [k for k in backbone if k not in set(dropped)]  # the converter keeps the input order
        report.converted += [("backbone." + src, dst) for src, dst in zip(kept, renamed)]
        out.update(renamed)
    rules = _CONDITIONAL if variant == "conditional" else _DEFORMABLE
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        reason = next((why for pattern, why in _PRETRAIN_ONLY if pattern.search(key)), None)
        if reason is not None or not isinstance(value, Tensor):
            report.dropped[key] = reason or "not a tensor"
            continue
        if variant == "deformable" and key in ("query_embed.weight", "transformer.tgt_embed.weight"):
            continue
        for pattern, target in rules:
            m = pattern.match(key)
            if m is None:
                continue
            for new, rows in target(m):
                part = take_rows(key, value, rows)
                if new in out:
                    raise KeyError(f"{key!r} maps to {new!r}, which another key already gave")
                out[new] = part
                report.converted.append((key, new))
            break
        else:
            report.unmatched.append(key)
    if variant == "deformable":
        if ("query_embed.weight" in state) != ("transformer.tgt_embed.weight" in state):
            raise KeyError("a Deformable Siamese DETR checkpoint needs both query_embed.weight (positional query) and "
                           "transformer.tgt_embed.weight (content query)")
        if "query_embed.weight" in state:
            pos, content = state["query_embed.weight"], state["transformer.tgt_embed.weight"]
            if pos.shape != content.shape:
                raise ValueError(f"query_embed {tuple(pos.shape)} and tgt_embed {tuple(content.shape)} differ in shape")
            out["query_embed.weight"] = torch.cat([pos, content], dim=1)
            report.converted += [("query_embed.weight", "query_embed.weight[:, :d]"),
                                 ("transformer.tgt_embed.weight", "query_embed.weight[:, d:]")]
    if strict and report.unmatched:
        raise KeyError(f"unexpected Siamese DETR {variant} keys (no rule converts them): {report.unmatched[:20]}"
                       + (f" ... ({len(report.unmatched)} in all)" if len(report.unmatched) > 20 else ""))
    return out, report
