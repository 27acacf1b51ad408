"""RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024) as a family member.

Architecture (the release's ``rtdetr_pytorch`` and transformers' ``RTDetr`` port; d = 256 for R50-vd):

* Backbone: any detectron2 ``Backbone`` (ResNet-50-vd for the paper's model) giving strides 8/16/32.
* Efficient hybrid encoder (:class:`~..layers.hybrid_encoder.HybridEncoder`, section 4.2): AIFI on the
  stride-32 map, then CCFM across the three levels.
* Query selection (section 4.3; :mod:`..layers.query_selection`): the decoder-input-projected memory (per level
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
* Losses (:class:`~..criterion.RTDETRCriterion`, eq. 2): varifocal loss (weight 1, alpha 0.75, gamma 2) + L1 5
  + GIoU 2 on every decoder layer and on the encoder's top-N proposals (``DecoderOutput.encoder``, ``*_enc``),
  each with its own Hungarian matching (focal class cost 2, L1 5, GIoU 2, alpha 0.25, gamma 2: the release's
  matcher); plus the same losses on the contrastive denoising queries in fine-tuning (``*_dn``, last paragraph).
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
:meth:`RTDETR.decode` returns the encoder's top-N predictions as ``DecoderOutput.encoder`` (hidden = the
selected ``enc_output`` rows, logits = ``enc_score_head``, boxes = the selected proposals). Every per-layer
loss (DisCo's matched localisation and reconstruction losses, DETReg's, the fine-tuning criterion) walks
``DecoderOutput.supervised_layers()`` and therefore trains the selection heads too (suffix ``_enc``).
Reason: the authors' code appends ``enc_topk_logits`` / ``enc_topk_bboxes`` to the auxiliary outputs its
pre-training head computes losses on (``out['aux_outputs'].extend(...)`` in ``rt_tr.py``), exactly as the
release does in fine-tuning; without a
loss the selection heads would stay at their random initialisation and pick arbitrary tokens, and DMOQF
would match proposals to arbitrary anchors. In evaluation mode ``decode`` leaves ``encoder`` None.

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

from ..layers import MLP, MultiheadAttention, MultiScaleDeformableAttention, inverse_sigmoid
from ..layers.denoising import build_denoising_groups, denoising_num_groups
from ..layers.hybrid_encoder import HybridEncoder
from ..layers.query_selection import encoder_proposals, gather_tokens, select_topk, selection_scores
from .base import DecoderOutput, DETRDetector, EncoderOutput, EncoderPrediction, QueryInit

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


# ---- the detector ----------------------------------------------------------------------------------------
@META_ARCH_REGISTRY.register()
class RTDETR(DETRDetector):
    """RT-DETR on a detectron2 backbone.

    Args (besides :class:`~.base.DETRDetector`'s):
        in_features: backbone outputs read, finest first (("res3", "res4", "res5")).
        encoder: :class:`~..layers.hybrid_encoder.HybridEncoder` (its ``in_channels`` must match the backbone's).
        decoder: :class:`RTDETRDecoder` with ``num_levels == len(in_features)``.
        criterion: :class:`~..criterion.RTDETRCriterion` (None in pre-training).
        num_denoising, label_noise_ratio, box_noise_scale: contrastive denoising in fine-tuning (release: 100,
            0.5, 1.0; 0 turns it off).
        pixel_mean / pixel_std: the release feeds RGB in [0, 1] (mean 0, std 255 on [0, 255] inputs).
    """

    fusion_target = "content"
    references_depend_on_image = True
    transfer_drop = ("class_embed.", "enc_score_head.", "denoising_class_embed.")

    def __init__(self, *, backbone: Backbone, in_features: tuple[str, ...] | list[str], encoder: HybridEncoder,
                 decoder: RTDETRDecoder, num_classes: int, num_queries: int, criterion: nn.Module | None,
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

    def encoder_prediction(self, encoded: EncoderOutput) -> EncoderPrediction:
        """The encoder's top-N prediction: ``enc_score_head`` logits (B, N, C), the selected proposals (B, N, 4)
        (sigmoid, with their gradient) and the selected ``enc_output`` rows (B, N, d)."""
        ex = encoded.extras
        return EncoderPrediction(ex["enc_logits"], ex["reference_logits"].sigmoid(), ex["content"])

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        """Decode from ``queries.content`` (B, N, d) and ``queries.reference`` (B, N, 4). In training mode the
        output carries the encoder's top-N prediction (``DecoderOutput.encoder``: every per-layer loss trains the
        selection heads, see the module docstring)."""
        if queries.reference.shape[-1] != 4:
            raise ValueError(f"RT-DETR decodes from (B, N, 4) reference boxes, got {tuple(queries.reference.shape)}")
        decoded = DecoderOutput(*self.run_decoder(encoded, queries.content, queries.reference))
        if self.training:
            decoded.encoder = self.encoder_prediction(encoded)
        return decoded

    # ---- fine-tuning with denoising ------------------------------------------------------------------------
    def forward_train(self, images: ImageList, targets: list[dict]) -> dict[str, Tensor]:
        """Losses of the encoder selection and every decoder layer; plus the denoising groups when
        ``num_denoising > 0`` and the batch has a box (their queries go before the N matching queries, blocked
        from them by the attention mask)."""
        encoded = self.encode(images)
        queries = self.initial_queries(encoded)
        groups = None
        if self.num_denoising > 0:
            max_gt = max(len(t["labels"]) for t in targets)
            groups = build_denoising_groups(targets, self.num_classes, self.num_queries,
                                            denoising_num_groups(self.num_denoising, max_gt),
                                            label_noise_ratio=self.label_noise_ratio,
                                            box_noise_scale=self.box_noise_scale)
        if groups is None:   # denoising off, or no target box in the batch: nothing to denoise
            return self.criterion(self.decode(encoded, queries), targets)
        content = torch.cat([groups.embed_labels(self.denoising_class_embed).to(queries.content.dtype),
                             queries.content], 1)
        reference = torch.cat([groups.boxes.to(queries.reference.dtype), queries.reference], 1)
        full = DecoderOutput(*self.run_decoder(encoded, content, reference, groups.attn_mask))
        decoded, denoising = full.split_denoising(groups)
        decoded.encoder = self.encoder_prediction(encoded)
        return self.criterion(decoded, targets, denoising)
