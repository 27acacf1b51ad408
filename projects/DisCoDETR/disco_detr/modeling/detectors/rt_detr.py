"""RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024) as a family member.

Architecture (the release's ``rtdetr_pytorch`` and transformers' ``RTDetr`` port; d = 256 for R50-vd):

* Backbone: any detectron2 ``Backbone`` (ResNet-50-vd for the paper's model) giving strides 8/16/32.
* Efficient hybrid encoder (:class:`HybridEncoder`): per level conv1x1 (no bias) + BN to d; **AIFI**: one
  post-norm transformer layer (GELU FFN) on the stride-32 map only, with a 2-d sin-cos position embedding
  (temperature 10000, built for the actual map size) added to queries and keys; **CCFM**: top-down (lateral
  conv1x1+BN+SiLU, nearest upsample, concat with the finer level, :class:`CSPRepLayer`) then bottom-up
  (conv3x3/s2+BN+SiLU, concat with the top-down map, :class:`CSPRepLayer`). The upsample goes to the finer
  map's size (not a fixed x2), so odd image sizes work (the backbone rounds sizes up at every stride).
* Query selection (:mod:`..layers.query_selection`): the decoder-input-projected memory (per level
  conv1x1 + BN, flattened) is zeroed on invalid tokens, then ``enc_output`` (Linear + LayerNorm),
  ``enc_score_head`` and ``enc_bbox_head`` (3-layer MLP, added to the logit-space anchors) turn every token
  into a scored proposal; the top-N tokens by best class logit (IoU-aware selection: the score head is
  trained with the varifocal loss, whose target is the IoU) give the content queries (their ``enc_output``
  rows, detached) and the initial reference boxes (their proposals, sigmoid, detached).
* Decoder (:class:`RTDETRDecoder`): per layer self-attention (query position = MLP(4 -> 2d -> d) of the
  reference box, added to queries and keys), multi-scale deformable cross-attention around the reference
  box (:class:`~..layers.MultiScaleDeformableAttention`, offsets scaled by w/h), FFN (ReLU); post-norm.
  Per-layer heads; iterative box refinement ``box_i = sigmoid(bbox_embed[i](h_i) + logit(ref_i))``, the
  next layer's reference is ``box_i`` (detached in training; the loss of layer i > 0 flows into the
  previous layer's box, as the release does).
* Losses (:class:`RTDETRCriterion`): varifocal loss (weight 1, alpha 0.75, gamma 2) + L1 5 + GIoU 2 on every
  decoder layer and on the encoder's top-N proposals, each with its own Hungarian matching (focal class
  cost 2, L1 5, GIoU 2, alpha 0.25, gamma 2: the release's matcher); plus the same losses on the
  contrastive denoising queries in fine-tuning (last paragraph).
* Inference: the base class's top-k over queries x classes (300 in the release).

Coordinates: boxes and references are normalised (cx, cy, w, h) of each image's un-padded size (the family
convention); the deformable attention gets them multiplied by each level's valid ratios. The release never
pads (every batch is resized to one square size); here padding is masked (AIFI keys, deformable values,
proposals), and without padding the model computes exactly what the release computes.

Deviations (documented, deliberate):

* AIFI position embedding: ``aifi_position="hf"`` (default) uses the row/column of each token; the release's
  grid (``meshgrid(arange(W), arange(H), indexing="ij")`` flattened) swaps rows and columns on non-square
  maps. ``"release"`` reproduces it, for its published checkpoints at non-square sizes (equal on square
  maps such as 640x640).
* Invalid proposals (padding, or a coordinate outside (0.01, 0.99)) are never selected (their score is -inf
  in the top-k); the release can select them, with an infinite reference logit.

Pre-training (DisCo / Siamese DETR), through the contract of :mod:`.base`
-------------------------------------------------------------------------
``references_depend_on_image = True``: ``initial_queries`` returns each view's own top-N selection, and
DMOQF matches proposals to the centres of those selected boxes (the anchors the decoder starts from).
``fusion_target = "content"``: the other view's object feature is added to the selected content queries
(the reference boxes stay the encoder's), as the authors' ``necks/rt_tr.py`` does (``output = output + tgt1``).

*IoU-aware query selection* stays on in pre-training, and its heads are trained: in training mode
:meth:`RTDETR.decode` returns the encoder's top-N predictions as an extra first layer of
:class:`DecoderOutput` (hidden = the selected ``enc_output`` rows, logits = ``enc_score_head``, boxes = the
selected proposals, reference = their anchors). Every per-layer loss (DisCo's matched localisation loss,
the fine-tuning criterion) therefore trains the selection heads too. Reason: the authors' code appends
``enc_topk_logits`` / ``enc_topk_bboxes`` to the auxiliary outputs its pre-training head computes losses on
(``out['aux_outputs'].extend(...)`` in ``rt_tr.py``), exactly as the release does in fine-tuning; without a
loss the selection heads would stay at their random initialisation and pick arbitrary tokens, and DMOQF
would match proposals to arbitrary anchors. In evaluation mode ``decode`` returns the decoder layers only.

*Denoising* is off in pre-training. The authors' ``rt_tr.py`` builds contrastive denoising groups from the
pseudo targets (the proposals, all labelled "object") whenever it trains, but (1) their pre-training never
ran (the training step iterates ``for idx in len(batch_size)``), so there is no evidence for it; (2) with a
single pseudo class, label noise is void and only box denoising of the very boxes the decoder must predict
remains, a pretext task the paper does not describe; (3) the pre-training contract gives ``decode`` no
targets (DisCo's queries carry the proposal information through fusion instead). Denoising runs in
fine-tuning (:meth:`RTDETR.forward_train`) only.

Denoising in fine-tuning uses the shared contrastive denoising groups of :mod:`..layers.denoising` with the
release's group count (``num_denoising // max_gt`` groups of positive + negative copies, label noise 0.5, box
noise 1.0); the denoising queries start from the noised boxes and the label embedding
``denoising_class_embed`` (C + 1 rows, the last one for padding slots).
"""
from __future__ import annotations

import math

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList
from torch import Tensor, nn
from torch.nn import functional as F

from ..criterion import SetCriterion, box_losses, flatten_indices, num_boxes_across_workers
from ..layers import MLP, MultiheadAttention, MultiScaleDeformableAttention, box_cxcywh_to_xyxy, box_iou, inverse_sigmoid
from ..layers.denoising import build_denoising_groups, denoising_num_groups
from ..layers.query_selection import encoder_proposals, gather_tokens, select_topk, selection_scores
from ..matching import HungarianMatcher
from ..precision import float32_policy
from .base import DecoderOutput, DETRDetector, EncoderOutput, QueryInit

__all__ = [
    "AIFILayer",
    "CSPRepLayer",
    "ConvNormAct",
    "HybridEncoder",
    "RTDETR",
    "RTDETRCriterion",
    "RTDETRDecoder",
    "RTDETRDecoderLayer",
    "RepVGGBlock",
    "sincos_position_embedding_2d",
    "varifocal_loss",
]


# ---- hybrid encoder --------------------------------------------------------------------------------------
class ConvNormAct(nn.Module):
    """Conv2d (no bias, 'same' padding (k-1)//2) + BatchNorm2d + SiLU (or no activation): (B,Ci,H,W)->(B,Co,H',W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class RepVGGBlock(nn.Module):
    """RepVGG block (training form): SiLU(conv3x3+BN (x) + conv1x1+BN (x)), same width."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, act=False)
        self.conv2 = ConvNormAct(channels, channels, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """CSP block of RepVGG blocks: conv3(bottlenecks(conv1(x)) + conv2(x)), hidden width
    ``int(out * expansion)``; conv3 is the identity when the hidden width equals the output width (R50: 1.0)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 3, expansion: float = 1.0):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormAct(in_channels, hidden, 1)
        self.conv2 = ConvNormAct(in_channels, hidden, 1)
        self.bottlenecks = nn.Sequential(*[RepVGGBlock(hidden) for _ in range(num_blocks)])
        self.conv3 = ConvNormAct(hidden, out_channels, 1) if hidden != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


def sincos_position_embedding_2d(h: int, w: int, dim: int, temperature: float = 10000.0, layout: str = "hf",
                                 device=None) -> Tensor:
    """AIFI's 2-d sin-cos embedding of an h x w map: (h*w, dim), token k = y * w + x (row-major).

    With omega_i = temperature^(-i / (dim/4)), i < dim/4: ``[sin(a omega), cos(a omega), sin(b omega),
    cos(b omega)]`` where (a, b) = (y, x) for ``layout="hf"`` (transformers) and (k // h, k % h) for
    ``layout="release"`` (the RT-DETR release's transposed grid; equal to "hf" on square maps).
    """
    if dim % 4:
        raise ValueError(f"the 2-d sin-cos embedding needs a width divisible by 4, got {dim}")
    k = torch.arange(h * w, device=device, dtype=torch.float32)
    if layout == "hf":
        a, b = torch.div(k, w, rounding_mode="floor"), k % w
    elif layout == "release":
        a, b = torch.div(k, h, rounding_mode="floor"), k % h
    else:
        raise ValueError(f"layout must be 'hf' or 'release', got {layout!r}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    a, b = a[:, None] * omega[None], b[:, None] * omega[None]
    return torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], 1)


class AIFILayer(nn.Module):
    """Post-norm transformer encoder layer (AIFI): self-attention with the position embedding added to
    queries and keys, add + LayerNorm, FFN (GELU), add + LayerNorm. (B, S, d) -> (B, S, d)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, key_padding_mask)))
        ffn = self.linear2(self.dropout(F.gelu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class HybridEncoder(nn.Module):
    """RT-DETR's efficient hybrid encoder (AIFI + CCFM).

    forward(maps: list of L backbone maps (B, C_l, h_l, w_l), finest first; masks: list of (B, h_l, w_l) bool,
    True on padding, or None) -> list of L maps (B, d, h_l, w_l).

    Args:
        in_channels: backbone channels per level; d_model: the width d; aifi_levels: indices of the levels AIFI
        runs on (the release: the last, ``(2,)``); num_aifi_layers: layers per AIFI level (1);
        expansion / depth_mult: CSPRepLayer hidden width factor and ``round(3 * depth_mult)`` RepVGG blocks;
        aifi_position: "hf" or "release" (see :func:`sincos_position_embedding_2d`).
    """

    def __init__(self, in_channels: list[int] | tuple[int, ...] = (512, 1024, 2048), d_model: int = 256,
                 num_heads: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0,
                 aifi_levels: tuple[int, ...] = (2,), num_aifi_layers: int = 1, temperature: float = 10000.0,
                 expansion: float = 1.0, depth_mult: float = 1.0, aifi_position: str = "hf"):
        super().__init__()
        self.in_channels = list(in_channels)
        self.d_model = d_model
        self.aifi_levels = tuple(aifi_levels)
        self.temperature = temperature
        if aifi_position not in ("hf", "release"):
            raise ValueError(f"aifi_position must be 'hf' or 'release', got {aifi_position!r}")
        self.aifi_position = aifi_position
        n = len(self.in_channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d_model, 1, bias=False), nn.BatchNorm2d(d_model)) for c in self.in_channels)
        self.aifi = nn.ModuleList(
            nn.ModuleList(AIFILayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_aifi_layers))
            for _ in self.aifi_levels)
        blocks = round(3 * depth_mult)
        self.lateral_convs = nn.ModuleList(ConvNormAct(d_model, d_model, 1) for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(CSPRepLayer(2 * d_model, d_model, blocks, expansion) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(ConvNormAct(d_model, d_model, 3, 2) for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(CSPRepLayer(2 * d_model, d_model, blocks, expansion) for _ in range(n - 1))

    def forward(self, maps: list[Tensor], masks: list[Tensor] | None = None) -> list[Tensor]:
        if len(maps) != len(self.in_channels):
            raise ValueError(f"HybridEncoder built for {len(self.in_channels)} levels, got {len(maps)}")
        proj = [p(x) for p, x in zip(self.input_proj, maps)]
        for layers, lvl in zip(self.aifi, self.aifi_levels):
            b, d, h, w = proj[lvl].shape
            src = proj[lvl].flatten(2).transpose(1, 2)
            pos = sincos_position_embedding_2d(h, w, d, self.temperature, self.aifi_position, src.device)
            pos = pos.to(src.dtype)[None]
            key_mask = None
            if masks is not None and masks[lvl].any():
                key_mask = masks[lvl].flatten(1)
            for layer in layers:
                src = layer(src, pos, key_mask)
            proj[lvl] = src.transpose(1, 2).reshape(b, d, h, w)

        n = len(proj)
        inner = [proj[-1]]                                   # top-down, coarsest first
        for i, idx in enumerate(range(n - 1, 0, -1)):
            high = self.lateral_convs[i](inner[0])
            inner[0] = high
            low = proj[idx - 1]
            up = F.interpolate(high, size=low.shape[-2:], mode="nearest")
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, low], 1)))
        outs = [inner[0]]                                    # bottom-up, finest first
        for i in range(n - 1):
            down = self.downsample_convs[i](outs[-1])
            high = inner[i + 1]
            if down.shape[-2:] != high.shape[-2:]:
                raise ValueError(f"level sizes do not halve: {down.shape[-2:]} vs {high.shape[-2:]}; the backbone "
                                 "must give ceil(H / stride) maps")
            outs.append(self.pan_blocks[i](torch.cat([down, high], 1)))
        return outs


# ---- decoder ---------------------------------------------------------------------------------------------
class RTDETRDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention (position added to q and k; optional (N, N) bool attention
    mask, True = blocked, for denoising groups), deformable cross-attention (position added to the query),
    ReLU FFN. tgt (B, N, d) -> (B, N, d)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float, num_levels: int,
                 num_points: int):
        super().__init__()
        self.num_heads = num_heads
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MultiScaleDeformableAttention(d_model, num_heads, num_levels, num_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def _self_attention(self, q: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        if attn_mask is None:
            return self.self_attn(q, q, v)
        attn = self.self_attn
        b, n, d = q.shape
        heads = self.num_heads

        def split(x):
            return x.view(b, n, heads, d // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(attn.q_proj(q)), split(attn.k_proj(q)), split(attn.v_proj(v)),
                                             attn_mask=~attn_mask, dropout_p=attn.dropout if self.training else 0.0)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, tgt: Tensor, query_pos: Tensor, reference: Tensor, memory: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, memory_mask: Tensor | None, attn_mask: Tensor | None = None) -> Tensor:
        tgt = self.norm1(tgt + self.dropout1(self._self_attention(tgt + query_pos, tgt, attn_mask)))
        out = self.cross_attn(tgt + query_pos, reference, memory, spatial_shapes, level_start_index, memory_mask)
        tgt = self.norm2(tgt + self.dropout2(out))
        ffn = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class RTDETRDecoder(nn.Module):
    """The stack of :class:`RTDETRDecoderLayer` and the query position head MLP(4 -> 2d -> d).

    The box heads live on the detector (they refine the references between layers, see :meth:`RTDETR.decode`).
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.0, num_levels: int = 3, num_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.num_levels = num_levels
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            RTDETRDecoderLayer(d_model, num_heads, dim_feedforward, dropout, num_levels, num_points)
            for _ in range(num_layers))
        self.query_pos_head = MLP(4, 2 * d_model, d_model, 2)


# ---- losses ----------------------------------------------------------------------------------------------
def varifocal_loss(logits: Tensor, onehot: Tensor, iou: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """Element-wise varifocal loss (Zhang et al. 2021, as RT-DETR uses it).

    logits, onehot: (..., C); iou: (...,) the IoU of each query's box with its matched target (0 where
    unmatched). Target q = iou * onehot; weight = alpha * sigmoid(logits)^gamma * (1 - onehot) + q
    (the sigmoid detached); loss = weight * BCE(logits, q).
    """
    target = iou[..., None].to(logits.dtype) * onehot
    weight = alpha * logits.sigmoid().detach().pow(gamma) * (1 - onehot) + target
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")


class RTDETRCriterion(SetCriterion):
    """RT-DETR's set loss: varifocal loss ``loss_vfl`` (IoU-aware classification) + ``loss_bbox`` (L1) +
    ``loss_giou``, each summed and divided by the number of target boxes, on every layer of the outputs
    (``pred_logits`` (L, B, Q, C), ``pred_boxes`` (L, B, Q, 4) normalised cxcywh; in training RT-DETR's
    layer 0 is the encoder's top-N selection, so ``_0`` names the encoder loss and ``_1`` .. ``_{L-2}`` the
    auxiliary decoder layers), each with its own Hungarian matching. Denoising outputs (``dn_logits``,
    ``dn_boxes`` (L', B, G*2*T, ...) and ``dn_indices``: per image (query_ids, target_ids)) add the same
    losses suffixed ``_dn_{l}``, normalised by the number of boxes times the number of groups.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_vfl: float = 1.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, alpha: float = 0.75, gamma: float = 2.0,
                 aux_loss: bool = True):
        super().__init__(num_classes, matcher, weight_class=weight_vfl, weight_bbox=weight_bbox,
                         weight_giou=weight_giou, focal_alpha=alpha, focal_gamma=gamma, aux_loss=aux_loss)
        self.weights = {"loss_vfl": weight_vfl, "loss_bbox": weight_bbox, "loss_giou": weight_giou}

    @float32_policy
    def matched_losses(self, logits: Tensor, boxes: Tensor, targets: list[dict], indices, num_boxes: float):
        logits, boxes = logits.float(), boxes.float()
        batch_ids, query_ids, _ = flatten_indices(indices, logits.device)
        labels = torch.cat([t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)])
        tgt_boxes = torch.cat([t["boxes"][tgt.to(t["boxes"].device)] for t, (_, tgt) in zip(targets, indices)]).float()
        src = boxes[batch_ids, query_ids]
        iou = torch.zeros(logits.shape[:2], device=logits.device)
        if len(src):
            matched_iou = torch.diag(box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt_boxes))).detach()
            iou[batch_ids, query_ids] = matched_iou
        onehot = torch.zeros_like(logits)
        onehot[batch_ids, query_ids, labels.to(logits.device)] = 1.0
        loss_vfl = varifocal_loss(logits, onehot, iou, self.focal_alpha, self.focal_gamma).sum() / num_boxes
        loss_bbox, loss_giou = box_losses(src, tgt_boxes, num_boxes)
        return {"loss_vfl": loss_vfl, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @float32_policy
    def layer_losses(self, logits: Tensor, boxes: Tensor, targets: list[dict], num_boxes: float) -> dict[str, Tensor]:
        indices = self.matcher(logits.float(), boxes.float(), targets)
        return self.matched_losses(logits, boxes, targets, indices, num_boxes)

    @float32_policy  # the denoising losses too (modeling/precision.py)
    def forward(self, outputs: dict[str, Tensor], targets: list[dict]) -> dict[str, Tensor]:
        losses = super().forward(outputs, targets)
        if "dn_logits" in outputs:
            num_boxes = num_boxes_across_workers(targets, outputs["dn_logits"].device)
            groups = outputs["dn_groups"]
            for layer in range(outputs["dn_logits"].shape[0]):
                values = self.matched_losses(outputs["dn_logits"][layer], outputs["dn_boxes"][layer], targets,
                                             outputs["dn_indices"], num_boxes * groups)
                for name, value in values.items():
                    losses[f"{name}_dn_{layer}"] = value * self.weights[name]
        return losses


# ---- the detector ----------------------------------------------------------------------------------------
@META_ARCH_REGISTRY.register()
class RTDETR(DETRDetector):
    """RT-DETR on a detectron2 backbone.

    Args (besides :class:`~.base.DETRDetector`'s):
        in_features: backbone outputs read, finest first (("res3", "res4", "res5")).
        encoder: :class:`HybridEncoder` (its ``in_channels`` must match the backbone's).
        decoder: :class:`RTDETRDecoder` with ``num_levels == len(in_features)``.
        criterion: :class:`RTDETRCriterion` (None in pre-training).
        num_denoising, label_noise_ratio, box_noise_scale: contrastive denoising in fine-tuning (release: 100,
            0.5, 1.0; 0 turns it off).
        pixel_mean / pixel_std: the release feeds RGB in [0, 1] (mean 0, std 255 on [0, 255] inputs).
    """

    fusion_target = "content"
    references_depend_on_image = True
    transfer_drop = ("class_embed.", "enc_score_head.", "denoising_class_embed.")

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], encoder: HybridEncoder,
                 decoder: RTDETRDecoder, num_classes: int, num_queries: int, criterion: RTDETRCriterion | None,
                 pixel_mean: list[float] = (0.0, 0.0, 0.0), pixel_std: list[float] = (255.0, 255.0, 255.0),
                 num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 num_detections: int = 300, size_divisibility: int = 0):
        d_model = decoder.d_model
        super().__init__(backbone=backbone, num_classes=num_classes, num_queries=num_queries, d_model=d_model,
                         criterion=criterion, pixel_mean=list(pixel_mean), pixel_std=list(pixel_std),
                         num_detections=num_detections, size_divisibility=size_divisibility)
        self.in_features = list(in_features)
        shapes = backbone.output_shape()
        missing = [f for f in self.in_features if f not in shapes]
        if missing:
            raise ValueError(f"backbone has no output {missing}; it gives {sorted(shapes)}")
        channels = [shapes[f].channels for f in self.in_features]
        if list(encoder.in_channels) != channels:
            raise ValueError(f"HybridEncoder in_channels {encoder.in_channels} != backbone channels {channels} "
                             f"of {self.in_features}")
        if encoder.d_model != d_model or decoder.num_levels != len(self.in_features):
            raise ValueError(f"encoder width {encoder.d_model} / decoder levels {decoder.num_levels} do not match "
                             f"decoder width {d_model} / {len(self.in_features)} input levels")
        self.encoder = encoder
        self.decoder = decoder
        self.decoder_input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d_model, d_model, 1, bias=False), nn.BatchNorm2d(d_model))
            for _ in self.in_features)
        self.enc_output = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model))
        self.enc_score_head = nn.Linear(d_model, num_classes)
        self.enc_bbox_head = MLP(d_model, d_model, 4, 3)
        self.class_embed = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(decoder.num_layers))
        self.bbox_embed = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(decoder.num_layers))
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        if num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, d_model, padding_idx=num_classes)
        self._reset_parameters()

    def _reset_parameters(self):
        """The release's initialisation: focal prior 0.01 on the class biases, zero last box layers,
        xavier ``enc_output`` / query-position head, deformable attention's own init."""
        bias = -math.log((1 - 0.01) / 0.01)
        for head in [self.enc_score_head, *self.class_embed]:
            nn.init.constant_(head.bias, bias)
        for head in [self.enc_bbox_head, *self.bbox_embed]:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.decoder.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for m in self.decoder.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()

    # ---- encode: backbone, hybrid encoder, decoder input, proposals and selection --------------------------
    def encode(self, images: ImageList) -> EncoderOutput:
        """Backbone + hybrid encoder + decoder input projections; ``extras`` hold the IoU-aware selection:
        ``topk_indices`` (B, N) long, ``content`` (B, N, d) the selected ``enc_output`` rows (with grad),
        ``reference_logits`` (B, N, 4) the selected proposals in logit space (with grad),
        ``enc_logits`` (B, N, C) their class logits, ``anchors`` (B, N, 4) their anchors (normalised)."""
        features = self.backbone(images.tensor)
        maps = [features[f] for f in self.in_features]
        masks = self.level_masks(images, maps)
        outs = self.encoder(maps, masks)
        outs = [proj(x) for proj, x in zip(self.decoder_input_proj, outs)]
        memory, mask, _, shapes, starts, ratios = self.flatten_levels(outs, masks)
        encoded = EncoderOutput(memory, None, mask, shapes, starts, ratios, list(images.image_sizes), features)
        encoded.extras.update(self.select_queries(encoded))
        return encoded

    def select_queries(self, encoded: EncoderOutput) -> dict[str, Tensor]:
        """IoU-aware query selection over all tokens (see the module docstring); shapes as in :meth:`encode`."""
        memory = encoded.memory
        anchors, valid = encoder_proposals(encoded.spatial_shapes, encoded.mask, dtype=memory.dtype)
        output_memory = self.enc_output(memory * valid.to(memory.dtype))
        logits = self.enc_score_head(output_memory)
        coords = self.enc_bbox_head(output_memory) + anchors
        topk = select_topk(selection_scores(logits), self.num_queries, valid)
        return {"topk_indices": topk, "content": gather_tokens(output_memory, topk),
                "reference_logits": gather_tokens(coords, topk), "enc_logits": gather_tokens(logits, topk),
                "anchors": gather_tokens(anchors, topk).sigmoid()}

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        """Content (B, N, d) = the selected ``enc_output`` rows, detached; reference (B, N, 4) = the selected
        proposals (sigmoid, normalised cxcywh of the un-padded image), detached; no positional query (the
        decoder derives it from the reference at every layer)."""
        ex = encoded.extras
        return QueryInit(ex["content"].detach(), None, ex["reference_logits"].sigmoid().detach())

    # ---- decode ------------------------------------------------------------------------------------------
    def run_decoder(self, encoded: EncoderOutput, content: Tensor, reference: Tensor,
                    attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The decoder with box refinement. content (B, Q, d), reference (B, Q, 4) normalised cxcywh
        (detached), attn_mask (Q, Q) bool True = blocked -> hidden, logits, boxes, references (L, B, Q, .)."""
        ratios = encoded.valid_ratios.to(reference.dtype).repeat(1, 1, 2)[:, None]   # (B, 1, L, 4)
        ref_grad = ref = reference
        tgt = content
        hidden, logits, boxes, refs = [], [], [], []
        for layer, class_head, box_head in zip(self.decoder.layers, self.class_embed, self.bbox_embed):
            pos = self.decoder.query_pos_head(ref)
            tgt = layer(tgt, pos, ref[:, :, None] * ratios, encoded.memory, encoded.spatial_shapes,
                        encoded.level_start_index, encoded.mask, attn_mask)
            box = (box_head(tgt) + inverse_sigmoid(ref_grad)).sigmoid()
            hidden.append(tgt)
            logits.append(class_head(tgt))
            boxes.append(box)
            refs.append(ref)
            ref_grad = box
            ref = box.detach() if self.training else box
        return torch.stack(hidden), torch.stack(logits), torch.stack(boxes), torch.stack(refs)

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode from ``queries.content`` (B, N, d) and ``queries.reference`` (B, N, 4). In training mode the
        encoder's top-N predictions come first as layer 0 (see the module docstring: the selection heads are
        trained by every per-layer loss); in evaluation mode only the decoder layers are returned."""
        if queries.reference.shape[-1] != 4:
            raise ValueError(f"RT-DETR decodes from (B, N, 4) reference boxes, got {tuple(queries.reference.shape)}")
        hidden, logits, boxes, refs = self.run_decoder(encoded, queries.content, queries.reference)
        if self.training:
            ex = encoded.extras
            hidden = torch.cat([ex["content"][None], hidden])
            logits = torch.cat([ex["enc_logits"][None], logits])
            boxes = torch.cat([ex["reference_logits"].sigmoid()[None], boxes])
            refs = torch.cat([ex["anchors"][None], refs])
        return DecoderOutput(hidden, logits, boxes, refs)

    # ---- fine-tuning with denoising ------------------------------------------------------------------------
    def forward_train(self, images: ImageList, targets: list[dict]) -> dict[str, Tensor]:
        """Losses of the encoder selection and every decoder layer; plus the denoising groups when
        ``num_denoising > 0`` (their queries go before the N matching queries, blocked from them by the
        attention mask)."""
        encoded = self.encode(images)
        queries = self.initial_queries(encoded)
        if self.num_denoising <= 0:
            decoded = self.decode(encoded, queries)
            return self.criterion({"pred_logits": decoded.logits, "pred_boxes": decoded.boxes}, targets)
        return self._forward_train_denoising(encoded, queries, targets)

    def _forward_train_denoising(self, encoded: EncoderOutput, queries: QueryInit, targets: list[dict]):
        max_gt = max(len(t["labels"]) for t in targets)
        groups = build_denoising_groups(targets, self.num_classes, self.num_queries,
                                        denoising_num_groups(self.num_denoising, max_gt),
                                        label_noise_ratio=self.label_noise_ratio, box_noise_scale=self.box_noise_scale)
        if groups is None:   # no target box in the batch: nothing to denoise
            decoded = self.decode(encoded, queries)
            return self.criterion({"pred_logits": decoded.logits, "pred_boxes": decoded.boxes}, targets)
        content = torch.cat([groups.embed_labels(self.denoising_class_embed).to(queries.content.dtype),
                             queries.content], 1)
        reference = torch.cat([groups.boxes.to(queries.reference.dtype), queries.reference], 1)
        _, logits, boxes, _ = self.run_decoder(encoded, content, reference, groups.attn_mask)
        dn_logits, logits = groups.split(logits, dim=2)
        dn_boxes, boxes = groups.split(boxes, dim=2)
        ex = encoded.extras
        outputs = {
            "pred_logits": torch.cat([ex["enc_logits"][None], logits]),
            "pred_boxes": torch.cat([ex["reference_logits"].sigmoid()[None], boxes]),
            "dn_logits": dn_logits, "dn_boxes": dn_boxes, "dn_indices": groups.matches(),
            "dn_groups": groups.num_groups,
        }
        return self.criterion(outputs, targets)
