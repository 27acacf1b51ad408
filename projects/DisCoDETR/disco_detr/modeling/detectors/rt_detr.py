"""RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024) on the two-stage base
(:mod:`.two_stage`: query selection and contrastive denoising).

Architecture (the release's ``rtdetr_pytorch`` and transformers' ``RTDetr``; d = 256 for R50-vd):

* Backbone: any detectron2 ``Backbone`` giving strides 8/16/32 (ResNet-50-vd in the paper).
* Efficient hybrid encoder (:class:`~..layers.hybrid_encoder.HybridEncoder`): AIFI on the stride-32 map, CCFM
  across the three levels; then the decoder input projections (per level conv1x1 + BN), flattened: the memory.
  Every BN is ``layers.sync_batch_norm.SyncBatchNorm2d`` (global-batch statistics under DDP, as the release's sync_bn).
* IoU-aware query selection: proposal heads ``enc_output`` (Linear + LayerNorm), ``enc_score_head`` (d -> C,
  trained with the varifocal loss, whose target is the IoU) and ``enc_bbox_head`` (3-layer MLP, logit deltas);
  the content queries are the selected ``enc_output`` rows, detached, the references the selected boxes.
* Decoder (:class:`RTDETRDecoder`): per layer self-attention (query position = MLP(4 -> 2d -> d) of the
  reference box), multi-scale deformable cross-attention around the box, ReLU FFN; post-norm. Iterative
  refinement ``box_l = sigmoid(bbox_embed[l](h_l) + logit(ref_l))``; the next reference is ``box_l``, detached
  in training (layer l's loss reaches layer l - 1's box, as in the release).
* Denoising: label embedding ``denoising_class_embed`` (C + 1, d; the last row for padding slots).
* Losses (:class:`~..criterion.RTDETRCriterion`): varifocal 1 (alpha 0.75, gamma 2), L1 5, GIoU 2 on every
  decoder layer, the encoder's top-N (``*_enc``) and the denoising queries (``*_dn``); matcher focal class 2,
  L1 5, GIoU 2.

Coordinates: boxes and references are normalised (cx, cy, w, h) of each image's un-padded size; the deformable
attention gets them multiplied by each level's valid ratios. Without padding the model computes what the
release computes.

Pre-training (DisCo / Siamese DETR, DETReg): ``fusion_target = "content"`` (the other view's object feature
is added to the selected content queries), the references DMOQF matches are the selected boxes, the selection
heads are supervised like a layer (``*_enc``), denoising is off. Transfer drops ``class_embed.*``,
``enc_score_head.*``, ``denoising_class_embed.*``.

Deviations from the release (reasons in docs/experiments.md, "Design notes: DINO and RT-DETR"):

* padding is masked (AIFI keys, deformable values, proposals); the release never pads;
* ``aifi_position="hf"`` (default) gives AIFI each token's row/column; ``"release"`` reproduces the
  release's row/column swap on non-square maps, for its checkpoints;
* invalid proposals (padding, a coordinate outside (0.01, 0.99)) are never selected;
* denoising is off in pre-training, and the selection heads are trained there.
"""
from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers import MLP, LayerCheckpointing, MultiheadAttention, MultiScaleDeformableAttention, inverse_sigmoid
from ..layers.hybrid_encoder import HybridEncoder
from ..layers.sync_batch_norm import SyncBatchNorm2d
from .base import DecoderOutput, EncoderOutput
from .two_stage import TwoStageDETR, init_prediction_heads

__all__ = ["RTDETR", "RTDETRDecoder", "RTDETRDecoderLayer"]


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


class RTDETRDecoder(LayerCheckpointing, nn.Module):
    """The stack of :class:`RTDETRDecoderLayer` and the query position head MLP(4 -> 2d -> d).

    The box heads live on the detector (they refine the references between layers, see :meth:`RTDETR._decode`).
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


# ---- the detector ----------------------------------------------------------------------------------------
@META_ARCH_REGISTRY.register()
class RTDETR(TwoStageDETR):
    """RT-DETR on a detectron2 backbone.

    Args (besides :class:`~.base.DETRDetector`'s and :class:`~.two_stage.TwoStageDETR`'s):
        in_features: backbone outputs read, finest first (("res3", "res4", "res5")).
        encoder: :class:`~..layers.hybrid_encoder.HybridEncoder` (its ``in_channels`` must match the backbone's).
        decoder: :class:`RTDETRDecoder` with ``num_levels == len(in_features)``.
        criterion: :class:`~..criterion.RTDETRCriterion` (None in pre-training).
        pixel_mean / pixel_std: the release feeds RGB in [0, 1] (mean 0, std 255 on [0, 255] inputs).
    """

    transfer_drop = ("class_embed.", "enc_score_head.", "denoising_class_embed.")
    label_embedding_name = "denoising_class_embed"

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], encoder: HybridEncoder,
                 decoder: RTDETRDecoder, num_classes: int, num_queries: int, criterion: nn.Module | None,
                 pixel_mean: list[float] = (0.0, 0.0, 0.0), pixel_std: list[float] = (255.0, 255.0, 255.0),
                 num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 num_detections: int = 300, size_divisibility: int = 0):
        d_model = decoder.d_model
        super().__init__(backbone=backbone, num_classes=num_classes, num_queries=num_queries, d_model=d_model,
                         criterion=criterion, pixel_mean=list(pixel_mean), pixel_std=list(pixel_std),
                         num_denoising=num_denoising, label_noise_ratio=label_noise_ratio,
                         box_noise_scale=box_noise_scale, num_detections=num_detections,
                         size_divisibility=size_divisibility)
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
            nn.Sequential(nn.Conv2d(d_model, d_model, 1, bias=False), SyncBatchNorm2d(d_model))
            for _ in self.in_features)
        self.enc_output = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model))
        self.enc_score_head = nn.Linear(d_model, num_classes)
        self.enc_bbox_head = MLP(d_model, d_model, 4, 3)
        self.class_embed = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(decoder.num_layers))
        self.bbox_embed = nn.ModuleList(MLP(d_model, d_model, 4, 3) for _ in range(decoder.num_layers))
        self.denoising_class_embed = self.build_label_embedding(num_classes + 1, padding_idx=num_classes)
        self._reset_parameters()

    def _reset_parameters(self):
        """The release's initialisation: focal prior 0.01 on the class biases, zero last box layers,
        xavier ``enc_output`` / query-position head, deformable attention's own init."""
        init_prediction_heads([self.enc_score_head, *self.class_embed], [self.enc_bbox_head, *self.bbox_embed])
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.decoder.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for m in self.decoder.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()

    # ---- the two-stage hooks -------------------------------------------------------------------------------
    def encode_memory(self, images: ImageList) -> EncoderOutput:
        """Backbone + hybrid encoder + decoder input projections, flattened (no position embedding)."""
        features = self.backbone(images.tensor)
        maps = [features[f] for f in self.in_features]
        masks = self.level_masks(images, maps)
        outs = self.encoder(maps, masks)
        outs = [proj(x) for proj, x in zip(self.decoder_input_proj, outs)]
        memory, mask, _, shapes, starts, ratios = self.flatten_levels(outs, masks)
        return EncoderOutput(memory, None, mask, shapes, starts, ratios, list(images.image_sizes), features)

    def proposal_heads(self, memory: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hidden = self.enc_output(memory)
        return hidden, self.enc_score_head(hidden), self.enc_bbox_head(hidden)

    def initial_content(self, encoded: EncoderOutput) -> Tensor:
        """The selected ``enc_output`` rows (B, N, d), detached."""
        return encoded.extras["enc_hidden"].detach()

    def _decode(self, encoded: EncoderOutput, content: Tensor, reference: Tensor,
                self_attn_mask: Tensor | None) -> DecoderOutput:
        ratios = encoded.valid_ratios.to(reference.dtype).repeat(1, 1, 2)[:, None]   # (B, 1, L, 4)
        ref_grad = ref = reference
        tgt = content
        hidden, logits, boxes, refs = [], [], [], []
        for layer, class_head, box_head in zip(self.decoder.layers, self.class_embed, self.bbox_embed):
            pos = self.decoder.query_pos_head(ref)
            tgt = self.decoder.run_layer(layer, tgt, pos, ref[:, :, None] * ratios, encoded.memory,
                                         encoded.spatial_shapes, encoded.level_start_index, encoded.mask,
                                         self_attn_mask)
            box = (box_head(tgt) + inverse_sigmoid(ref_grad)).sigmoid()
            hidden.append(tgt)
            logits.append(class_head(tgt))
            boxes.append(box)
            refs.append(ref)
            ref_grad = box
            ref = box.detach() if self.training else box
        return DecoderOutput(torch.stack(hidden), torch.stack(logits), torch.stack(boxes), torch.stack(refs))
