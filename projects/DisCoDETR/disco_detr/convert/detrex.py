"""Convert detrex checkpoints (IDEA-Research/detrex) to our detectors' key layout.

Supported ``variant`` values (detrex's model names; our canonical variant names, :data:`LAYOUT_OF`, are
accepted too) and what changes on the way:

``"conditional"``  detrex ``ConditionalDETR`` -> :class:`~disco_detr.modeling.ConditionalDETR`:
    the encoder's ``attn.in_proj_weight`` / ``in_proj_bias`` (rows q, k, v stacked) are split into
    ``self_attn.{q,k,v}_proj``; the decoder's ``ConditionalSelfAttention`` / ``ConditionalCrossAttention``
    projections become the ``proj`` entries ``sa_*`` / ``ca_*``; ``norms.{0,1,2}`` become ``norm1``,
    ``norm2`` and the FFN's own ``norm``; ``post_norm_layer`` becomes ``decoder.norm``.
``"deformable"``   detrex ``DeformableDETR`` (plain: no box refinement, not two-stage) ->
    :class:`~disco_detr.modeling.DeformableDETR`: the ``ChannelMapper`` neck (``neck.convs.i`` and
    ``neck.extra_convs.j``, each conv + GroupNorm) becomes ``input_proj.k.{0,1}`` (extra levels after the
    backbone levels); ``query_embedding`` -> ``query_embed``; ``transformer.level_embeds`` -> ``level_embed``;
    ``transformer.reference_points`` -> ``reference_points``; deformable attention keeps detrex's parameter
    names and row layouts; the decoder's self-attention ``in_proj`` is split as above. detrex stores the
    class and box heads once per decoder layer (``class_embed.<i>``, ``bbox_embed.<i>``) although they are
    one shared module in the plain model: the copies must be equal (else the checkpoint comes from the
    box-refinement / two-stage model, which is refused) and become our single ``class_embed`` / ``bbox_embed``.

``"dab"``          detrex ``DABDETR`` (single pattern, ``modulate_hw_attn``) -> :class:`~disco_detr.modeling.DABDETR`:
    as ``"conditional"`` for the shared layers; ``anchor_box_embed`` -> ``anchor_embed``; the encoder's and
    decoder's ``query_scale``, ``ref_point_head``, ``ref_anchor_head`` keep their names; each FFN's PReLU is
    stored twice by detrex (``ffns.0.activation`` and ``ffns.0.layers.0.1``) and the decoder's alias of the shared
    box head (``transformer.decoder.bbox_embed``) repeats ``bbox_embed``: the copies must be equal and are merged
    into ``<layer>.ffn.activation.weight`` and ``bbox_embed``.

``"dino"``         detrex ``DINO`` (4-scale, two-stage, box refinement) -> :class:`~disco_detr.modeling.DINO`: neck,
    level embeddings, encoder and decoder layers as ``"deformable"``; ``transformer.tgt_embed`` -> ``tgt_embed``,
    ``transformer.enc_output`` / ``enc_output_norm`` and ``transformer.decoder.ref_point_head`` / ``norm`` keep
    their names (without ``transformer.``); the per-layer heads ``class_embed.l`` / ``bbox_embed.l`` (l < number
    of decoder layers) keep theirs and the last one (the encoder's) becomes ``enc_class_embed`` /
    ``enc_bbox_embed``; ``label_enc`` is kept. detrex's decoder aliases of the heads
    (``transformer.decoder.{class,bbox}_embed``) must equal them and are merged.

Backbone keys (``backbone.*``, detectron2 ResNet names in detrex as in our configs) are copied unchanged.
BN step counters and ``criterion.*`` buffers are dropped. Any other key without a rule is *unmatched*:
an error naming it (``strict=True``, the default) or listed in the report.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["DETREX_VARIANTS", "LAYOUT_OF", "DetrexConversion", "check_against", "convert_detrex",
           "load_detrex_state_dict"]

DETREX_VARIANTS = ("conditional", "deformable", "dab", "dino")
#: our canonical variant name (disco_detr.variants) -> the detrex layout its checkpoints use
LAYOUT_OF = {"cond": "conditional", "deformable_ss": "deformable", "deformable_ms": "deformable", "dab": "dab",
             "dino": "dino"}

# A rule maps a regex match to [(our key, row slice index or None)]: index k of n means rows
# k*R/n .. (k+1)*R/n of the source tensor (q/k/v split of an in_proj), None the whole tensor.
_Target = list[tuple[str, tuple[int, int] | None]]
_Rule = tuple[re.Pattern, Callable[[re.Match], _Target]]

_WB = r"(weight|bias)"
_BN = r"(weight|bias|running_mean|running_var)"


def _rules(pairs) -> list[_Rule]:
    return [(re.compile(p), f) for p, f in pairs]


def _whole(key: str) -> _Target:
    return [(key, None)]


def _split_qkv(prefix: str, suffix: str) -> _Target:
    return [(f"{prefix}.{name}_proj.{suffix}", (k, 3)) for k, name in enumerate("qkv")]


def _ffn_rules(src: str, dst: str, last_norm: int) -> list:
    """detrex FFN ``ffns.0.layers.0.0`` (Linear-ReLU-Dropout) and ``ffns.0.layers.1`` + the layer's last norm
    -> our :class:`~disco_detr.modeling.layers.FFN` (``linear1``, ``linear2``, ``norm``)."""
    return [
        (rf"^{src}\.(\d+)\.ffns\.0\.layers\.0\.0\.{_WB}$", lambda m: _whole(f"{dst}.{m[1]}.ffn.linear1.{m[2]}")),
        (rf"^{src}\.(\d+)\.ffns\.0\.layers\.1\.{_WB}$", lambda m: _whole(f"{dst}.{m[1]}.ffn.linear2.{m[2]}")),
        (rf"^{src}\.(\d+)\.norms\.{last_norm}\.{_WB}$", lambda m: _whole(f"{dst}.{m[1]}.ffn.norm.{m[2]}")),
    ]


_COMMON = [
    (r"^(backbone\..+)$", lambda m: _whole(m[1])),
]

_COND_SA = {"query_content_proj": "sa_qcontent", "query_pos_proj": "sa_qpos", "key_content_proj": "sa_kcontent",
            "key_pos_proj": "sa_kpos", "value_proj": "sa_v", "out_proj": "sa_out"}
_COND_CA = {"query_content_proj": "ca_qcontent", "query_pos_proj": "ca_qpos", "query_pos_sine_proj": "ca_qpos_sine",
            "key_content_proj": "ca_kcontent", "key_pos_proj": "ca_kpos", "value_proj": "ca_v", "out_proj": "ca_out"}
_ENC = r"transformer\.encoder\.layers"
_DEC = r"transformer\.decoder\.layers"

_CONDITIONAL_RULES = _rules(_COMMON + [
    (rf"^input_proj\.{_WB}$", lambda m: _whole(f"input_proj.{m[1]}")),
    (r"^query_embed\.weight$", lambda m: _whole("query_embed.weight")),
    (rf"^class_embed\.{_WB}$", lambda m: _whole(f"class_embed.{m[1]}")),
    (rf"^bbox_embed\.layers\.(\d+)\.{_WB}$", lambda m: _whole(f"bbox_embed.layers.{m[1]}.{m[2]}")),
    (rf"^{_ENC}\.(\d+)\.attentions\.0\.attn\.in_proj_{_WB}$",
     lambda m: _split_qkv(f"encoder.layers.{m[1]}.self_attn", m[2])),
    (rf"^{_ENC}\.(\d+)\.attentions\.0\.attn\.out_proj\.{_WB}$",
     lambda m: _whole(f"encoder.layers.{m[1]}.self_attn.out_proj.{m[2]}")),
    (rf"^{_ENC}\.(\d+)\.norms\.0\.{_WB}$", lambda m: _whole(f"encoder.layers.{m[1]}.norm.{m[2]}")),
    *_ffn_rules(_ENC, "encoder.layers", 1),
    (rf"^{_DEC}\.(\d+)\.attentions\.0\.({'|'.join(_COND_SA)})\.{_WB}$",
     lambda m: _whole(f"decoder.layers.{m[1]}.proj.{_COND_SA[m[2]]}.{m[3]}")),
    (rf"^{_DEC}\.(\d+)\.attentions\.1\.({'|'.join(_COND_CA)})\.{_WB}$",
     lambda m: _whole(f"decoder.layers.{m[1]}.proj.{_COND_CA[m[2]]}.{m[3]}")),
    (rf"^{_DEC}\.(\d+)\.norms\.([01])\.{_WB}$", lambda m: _whole(f"decoder.layers.{m[1]}.norm{int(m[2]) + 1}.{m[3]}")),
    *_ffn_rules(_DEC, "decoder.layers", 2),
    (rf"^transformer\.decoder\.(query_scale|ref_point_head)\.layers\.(\d+)\.{_WB}$",
     lambda m: _whole(f"decoder.{m[1]}.layers.{m[2]}.{m[3]}")),
    (rf"^transformer\.decoder\.post_norm_layer\.{_WB}$", lambda m: _whole(f"decoder.norm.{m[1]}")),
])

_DAB_RULES = _rules(_COMMON + [
    (rf"^input_proj\.{_WB}$", lambda m: _whole(f"input_proj.{m[1]}")),
    (r"^anchor_box_embed\.weight$", lambda m: _whole("anchor_embed.weight")),
    (rf"^class_embed\.{_WB}$", lambda m: _whole(f"class_embed.{m[1]}")),
    (rf"^(?:transformer\.decoder\.)?bbox_embed\.layers\.(\d+)\.{_WB}$", lambda m: _whole(f"bbox_embed.layers.{m[1]}.{m[2]}")),
    (rf"^{_ENC}\.(\d+)\.attentions\.0\.attn\.in_proj_{_WB}$",
     lambda m: _split_qkv(f"encoder.layers.{m[1]}.self_attn", m[2])),
    (rf"^{_ENC}\.(\d+)\.attentions\.0\.attn\.out_proj\.{_WB}$",
     lambda m: _whole(f"encoder.layers.{m[1]}.self_attn.out_proj.{m[2]}")),
    (rf"^{_ENC}\.(\d+)\.norms\.0\.{_WB}$", lambda m: _whole(f"encoder.layers.{m[1]}.norm.{m[2]}")),
    *_ffn_rules(_ENC, "encoder.layers", 1),
    (rf"^{_ENC}\.(\d+)\.ffns\.0\.(?:activation|layers\.0\.1)\.weight$",
     lambda m: _whole(f"encoder.layers.{m[1]}.ffn.activation.weight")),
    (rf"^transformer\.encoder\.query_scale\.layers\.(\d+)\.{_WB}$",
     lambda m: _whole(f"encoder.query_scale.layers.{m[1]}.{m[2]}")),
    (rf"^{_DEC}\.(\d+)\.attentions\.0\.({'|'.join(_COND_SA)})\.{_WB}$",
     lambda m: _whole(f"decoder.layers.{m[1]}.proj.{_COND_SA[m[2]]}.{m[3]}")),
    (rf"^{_DEC}\.(\d+)\.attentions\.1\.({'|'.join(_COND_CA)})\.{_WB}$",
     lambda m: _whole(f"decoder.layers.{m[1]}.proj.{_COND_CA[m[2]]}.{m[3]}")),
    (rf"^{_DEC}\.(\d+)\.norms\.([01])\.{_WB}$", lambda m: _whole(f"decoder.layers.{m[1]}.norm{int(m[2]) + 1}.{m[3]}")),
    *_ffn_rules(_DEC, "decoder.layers", 2),
    (rf"^{_DEC}\.(\d+)\.ffns\.0\.(?:activation|layers\.0\.1)\.weight$",
     lambda m: _whole(f"decoder.layers.{m[1]}.ffn.activation.weight")),
    (rf"^transformer\.decoder\.(query_scale|ref_point_head|ref_anchor_head)\.layers\.(\d+)\.{_WB}$",
     lambda m: _whole(f"decoder.{m[1]}.layers.{m[2]}.{m[3]}")),
    (rf"^transformer\.decoder\.post_norm_layer\.{_WB}$", lambda m: _whole(f"decoder.norm.{m[1]}")),
])
# our DAB keys that detrex stores twice (one tensor in detrex): the PReLUs and the decoder's box-head alias
_DAB_ALIASED = re.compile(r"^bbox_embed\.|\.ffn\.activation\.weight$")

_MSDA = r"(sampling_offsets|attention_weights|value_proj|output_proj)"


def _deformable_rules(num_in_levels: int) -> list[_Rule]:
    return _rules(_COMMON + [
        (rf"^neck\.convs\.(\d+)\.conv\.{_WB}$", lambda m: _whole(f"input_proj.{m[1]}.0.{m[2]}")),
        (rf"^neck\.convs\.(\d+)\.norm\.{_WB}$", lambda m: _whole(f"input_proj.{m[1]}.1.{m[2]}")),
        (rf"^neck\.extra_convs\.(\d+)\.conv\.{_WB}$",
         lambda m: _whole(f"input_proj.{num_in_levels + int(m[1])}.0.{m[2]}")),
        (rf"^neck\.extra_convs\.(\d+)\.norm\.{_WB}$",
         lambda m: _whole(f"input_proj.{num_in_levels + int(m[1])}.1.{m[2]}")),
        (r"^query_embedding\.weight$", lambda m: _whole("query_embed.weight")),
        (r"^transformer\.level_embeds$", lambda m: _whole("level_embed")),
        (rf"^transformer\.reference_points\.{_WB}$", lambda m: _whole(f"reference_points.{m[1]}")),
        (rf"^class_embed\.\d+\.{_WB}$", lambda m: _whole(f"class_embed.{m[1]}")),
        (rf"^bbox_embed\.\d+\.layers\.(\d+)\.{_WB}$", lambda m: _whole(f"bbox_embed.layers.{m[1]}.{m[2]}")),
        (rf"^{_ENC}\.(\d+)\.attentions\.0\.{_MSDA}\.{_WB}$",
         lambda m: _whole(f"encoder.layers.{m[1]}.self_attn.{m[2]}.{m[3]}")),
        (rf"^{_ENC}\.(\d+)\.norms\.0\.{_WB}$", lambda m: _whole(f"encoder.layers.{m[1]}.norm1.{m[2]}")),
        *_ffn_rules(_ENC, "encoder.layers", 1),
        (rf"^{_DEC}\.(\d+)\.attentions\.0\.attn\.in_proj_{_WB}$",
         lambda m: _split_qkv(f"decoder.layers.{m[1]}.self_attn", m[2])),
        (rf"^{_DEC}\.(\d+)\.attentions\.0\.attn\.out_proj\.{_WB}$",
         lambda m: _whole(f"decoder.layers.{m[1]}.self_attn.out_proj.{m[2]}")),
        (rf"^{_DEC}\.(\d+)\.attentions\.1\.{_MSDA}\.{_WB}$",
         lambda m: _whole(f"decoder.layers.{m[1]}.cross_attn.{m[2]}.{m[3]}")),
        (rf"^{_DEC}\.(\d+)\.norms\.([01])\.{_WB}$",
         lambda m: _whole(f"decoder.layers.{m[1]}.norm{int(m[2]) + 1}.{m[3]}")),
        *_ffn_rules(_DEC, "decoder.layers", 2),
    ])


def _num_decoder_layers(state: Mapping[str, Tensor]) -> int:
    return 1 + max((int(m[1]) for k in state if (m := re.match(rf"^{_DEC}\.(\d+)\.", k))), default=-1)


def _dino_head(kind: str, index: str, rest: str, num_layers: int) -> _Target:
    """DINO's head ``{kind}_embed.<index>``: decoder layer ``index`` or, for index == num_layers, the encoder's."""
    return _whole(f"enc_{kind}_embed.{rest}" if int(index) == num_layers else f"{kind}_embed.{index}.{rest}")


def _dino_rules(num_in_levels: int, num_layers: int) -> list[_Rule]:
    """DINO's own keys first; the shared neck / encoder / decoder-layer keys as ``"deformable"``."""
    return _rules([
        (r"^(?:transformer\.decoder\.)?(class|bbox)_embed\.(\d+)\.(.+)$",
         lambda m: _dino_head(m[1], m[2], m[3], num_layers)),
        (r"^transformer\.tgt_embed\.weight$", lambda m: _whole("tgt_embed.weight")),
        (rf"^transformer\.(enc_output|enc_output_norm)\.{_WB}$", lambda m: _whole(f"{m[1]}.{m[2]}")),
        (rf"^transformer\.decoder\.ref_point_head\.layers\.(\d+)\.{_WB}$",
         lambda m: _whole(f"decoder.ref_point_head.layers.{m[1]}.{m[2]}")),
        (rf"^transformer\.decoder\.norm\.{_WB}$", lambda m: _whole(f"decoder.norm.{m[1]}")),
        (r"^label_enc\.weight$", lambda m: _whole("label_enc.weight")),
    ]) + _deformable_rules(num_in_levels)


# dropped without a rule: BN step counters and loss buffers (e.g. a softmax criterion's class weights)
_DROP = re.compile(r"(^|\.)num_batches_tracked$|^criterion\.")
# detrex keys of the box-refinement / two-stage Deformable DETR, which we do not build
_REFINE = re.compile(r"^transformer\.(decoder\.(class|bbox)_embed|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.")


@dataclass
class DetrexConversion:
    """What :func:`convert_detrex` did. ``converted``: (detrex key, our key) pairs in source order (a split
    in_proj gives three pairs); ``merged``: detrex keys equal to another one that already gave the same
    key of ours (the per-layer copies of a shared head); ``dropped``: keys with no counterpart on purpose
    (BN counters, criterion buffers); ``unmatched``: keys no rule knows (an error when strict)."""

    variant: str
    converted: list[tuple[str, str]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"detrex {self.variant}: {len(self.converted)} tensors converted, {len(self.merged)} shared-head "
                f"copies merged, {len(self.dropped)} dropped, {len(self.unmatched)} unmatched")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _num_neck_inputs(state: Mapping[str, Tensor]) -> int:
    ids = {int(m[1]) for k in state if (m := re.match(r"^neck\.convs\.(\d+)\.", k))}
    if ids and sorted(ids) != list(range(len(ids))):
        raise KeyError(f"detrex neck levels must be neck.convs.0..n-1 without gaps, found {sorted(ids)}")
    return len(ids)


def load_detrex_state_dict(path: str, allow_pickle: bool = False) -> dict[str, Tensor]:
    """The model state dict inside a detrex checkpoint file (detectron2's ``{"model": ...}``, a bare state
    dict, or ``{"state_dict": ...}``). Errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"detrex checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path!r} holds Python objects that torch refuses with weights_only=True; "
                                     f"if you trust the file, allow pickle (--allow-pickle). ({e})") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} holds no state dict (expected a dict of tensors, or one under 'model' / "
                         "'state_dict')")
    return dict(obj)



def take_rows(key: str, value: Tensor, rows: tuple[int, int] | None) -> Tensor:
    """Part ``k`` of ``n`` equal row blocks of ``value`` for ``rows = (k, n)`` (a stacked q/k/v
    ``in_proj`` tensor -> its q, k or v rows); ``value`` itself for ``rows = None``."""
    if rows is None:
        return value
    k, n = rows
    if value.shape[0] % n:
        raise ValueError(f"{key!r}: {value.shape[0]} rows do not split into {n} (q, k, v) parts")
    return value.chunk(n, 0)[k]

def convert_detrex(state: Mapping[str, Tensor], variant: str, *, strict: bool = True,
                   reference: nn.Module | Mapping[str, Tensor] | None = None,
                   ) -> tuple[dict[str, Tensor], DetrexConversion]:
    """Rename a detrex state dict to our layout.

    Args:
        state: detrex's model state dict (:func:`load_detrex_state_dict` reads one from a file).
        variant: one of :data:`DETREX_VARIANTS`, or a key of :data:`LAYOUT_OF` (our name for it).
        strict: raise ``KeyError`` naming every key no rule knows (else they are only reported).
        reference: our model (or its state dict) to check the result against with :func:`check_against`.

    Returns:
        (our state dict, :class:`DetrexConversion`). Tensors keep their dtype (detectron2's loader casts).

    Raises:
        KeyError naming the keys: unknown variant, unmatched keys (strict), two different keys mapping to
        one of ours, box-refinement / two-stage keys; ValueError: shared-head copies that differ, a q/k/v
        projection whose rows do not divide by 3; and whatever :func:`check_against` raises.
    """
    variant = LAYOUT_OF.get(variant, variant)
    if variant not in DETREX_VARIANTS:
        raise KeyError(f"unknown detrex variant {variant!r}; choose from {DETREX_VARIANTS}")
    refine = sorted(k for k in state if _REFINE.match(k))
    if variant == "deformable" and refine:
        raise KeyError(f"this detrex checkpoint has box-refinement / two-stage keys ({refine[:4]} ...); only the "
                       "plain Deformable DETR (with_box_refine=False, as_two_stage=False) converts")
    if variant == "dab":
        rules = _DAB_RULES
    elif variant == "dino":
        rules = _dino_rules(_num_neck_inputs(state), _num_decoder_layers(state))
    else:
        rules = _CONDITIONAL_RULES if variant == "conditional" else _deformable_rules(_num_neck_inputs(state))
    report = DetrexConversion(variant)
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor) or _DROP.search(key):
            report.dropped.append(key)
            continue
        for pattern, target in rules:
            m = pattern.match(key)
            if m is None:
                continue
            for new, rows in target(m):
                part = take_rows(key, value, rows)
                if new in out:
                    same_head = re.match(r"^(class|bbox)_embed\.", new) and variant == "deformable"
                    same_head = same_head or (variant == "dab" and _DAB_ALIASED.search(new))
                    same_head = same_head or (variant == "dino" and re.match(r"^(enc_)?(class|bbox)_embed\.", new))
                    if not same_head:
                        raise KeyError(f"{key!r} and {origin[new]!r} both map to {new!r}")
                    if part.shape != out[new].shape or not torch.equal(part, out[new]):
                        raise ValueError(f"{key!r} differs from {origin[new]!r}: the per-layer heads are not shared, "
                                         "so this is not the plain Deformable DETR (box refinement?)")
                    report.merged.append(key)
                    continue
                out[new], origin[new] = part, key
                report.converted.append((key, new))
            break
        else:
            report.unmatched.append(key)
    if strict and report.unmatched:
        raise KeyError(f"unexpected detrex {variant} keys (no rule converts them): {report.unmatched[:20]}"
                       + (f" ... ({len(report.unmatched)} in all)" if len(report.unmatched) > 20 else ""))
    if reference is not None:
        check_against(out, reference, origin)
    return out, report


def check_against(state: Mapping[str, Tensor], reference: nn.Module | Mapping[str, Tensor],
                  origin: Mapping[str, str] | None = None) -> None:
    """Raise ``KeyError`` naming keys of ``reference`` missing from ``state`` or keys of ``state`` that
    ``reference`` does not have, and ``ValueError`` naming shape mismatches (``origin`` maps our keys to
    the source keys for the messages). Non-persistent buffers are not part of a state dict, so not checked."""
    ref = reference.state_dict() if isinstance(reference, nn.Module) else reference
    expected = {k: tuple(v.shape) for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    origin = origin or {}

    def name(k):
        return f"{k} (from {origin[k]})" if k in origin else k

    missing = sorted(k for k in expected if k not in state)
    if missing:
        raise KeyError(f"missing keys (the model has them, the converted checkpoint does not): {missing[:20]}"
                       + (f" ... ({len(missing)} in all)" if len(missing) > 20 else ""))
    unexpected = sorted(k for k in state if k not in expected and not k.endswith("num_batches_tracked"))
    if unexpected:
        raise KeyError(f"unexpected keys (not in the model): {[name(k) for k in unexpected[:20]]}"
                       + (f" ... ({len(unexpected)} in all)" if len(unexpected) > 20 else ""))
    bad = [f"{name(k)}: {tuple(v.shape)} vs model {expected[k]}" for k, v in state.items()
           if k in expected and tuple(v.shape) != expected[k]]
    if bad:
        raise ValueError(f"shape mismatch: {bad[:20]}")
