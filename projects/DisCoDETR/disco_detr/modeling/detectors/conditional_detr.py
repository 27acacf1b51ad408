"""Conditional DETR (Meng et al., ICCV 2021) as a detectron2 meta-architecture.

The same class is fine-tuned on labelled data and pre-trained by DisCo DETR. For the
latter it exposes, as a small documented interface, what DMOQF needs:

* :meth:`ConditionalDETR.bare_query_pos` -- the learned positional queries (N, d);
* :meth:`ConditionalDETR.reference_points` -- the 2-d reference points the decoder derives
  from positional queries, ``sigmoid(MLP(query_pos))``, normalised (x, y) in [0, 1];
* the single explicit decoder input ``query_pos`` of :meth:`ConditionalDETR.decode`: the
  positional queries to decode with, (B, N, d). Fine-tuning passes the bare queries;
  DisCo passes queries with object features fused in, and the reference points are then
  recomputed from them inside the decoder.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn
from torch.nn import functional as F

from ..criterion import SetCriterion
from ..layers import (
    FFN,
    MLP,
    DETREncoder,
    PositionEmbeddingSine,
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    inverse_sigmoid,
    multi_head_attention,
    sine_embed_points,
)

__all__ = ["ConditionalDETR", "ConditionalDecoder", "ConditionalDecoderLayer", "EncodedImages"]

logger = logging.getLogger(__name__)


class ConditionalDecoderLayer(nn.Module):
    """Decoder layer with conditional spatial cross-attention.

    Self-attention adds the positional query to queries and keys. Cross-attention
    concatenates, per head, the content query with the spatial query (the sine embedding of
    the reference point, scaled by the decoder's transformation) and the content key with
    the key's position embedding; the first layer also adds the positional query to the
    content query, as in the paper (only that layer has the ``ca_qpos`` projection).
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float, is_first: bool):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.is_first = is_first
        proj = ["sa_qcontent", "sa_qpos", "sa_kcontent", "sa_kpos", "sa_v", "sa_out",
                "ca_qcontent", "ca_kcontent", "ca_kpos", "ca_v", "ca_qpos_sine", "ca_out"]
        if is_first:
            proj.append("ca_qpos")
        self.proj = nn.ModuleDict({name: nn.Linear(d_model, d_model) for name in proj})
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, memory_mask: Tensor | None,
                query_pos: Tensor, query_sine_embed: Tensor) -> Tensor:
        """tgt, query_pos, query_sine_embed: (B, N, d); memory, pos: (B, HW, d); mask (B, HW)."""
        p = self.proj
        drop = self.dropout if self.training else 0.0
        q = p["sa_qcontent"](tgt) + p["sa_qpos"](query_pos)
        k = p["sa_kcontent"](tgt) + p["sa_kpos"](query_pos)
        out = multi_head_attention(q, k, p["sa_v"](tgt), self.num_heads, dropout=drop)
        tgt = self.norm1(tgt + self.drop(p["sa_out"](out)))

        q = p["ca_qcontent"](tgt)
        k = p["ca_kcontent"](memory)
        k_pos = p["ca_kpos"](pos)
        if self.is_first:
            q = q + p["ca_qpos"](query_pos)
            k = k + k_pos
        b, n, d = q.shape
        h = self.num_heads
        q = torch.cat([q.view(b, n, h, d // h), p["ca_qpos_sine"](query_sine_embed).view(b, n, h, d // h)], -1)
        k = torch.cat([k.view(b, -1, h, d // h), k_pos.view(b, -1, h, d // h)], -1)
        out = multi_head_attention(q.flatten(2), k.flatten(2), p["ca_v"](memory), h, memory_mask, drop)
        tgt = self.norm2(tgt + self.drop(p["ca_out"](out)))
        return self.ffn(tgt)


class ConditionalDecoder(nn.Module):
    """Conditional DETR decoder.

    forward(memory (B,HW,d), pos (B,HW,d), memory_mask (B,HW), query_pos (B,N,d))
    -> hs (L, B, N, d) normalised outputs of every layer, reference (B, N, 2) normalised
    (x, y) reference points derived from ``query_pos``.
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(d_model, num_heads, dim_feedforward, dropout, is_first=i == 0)
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, 2, 2)

    def reference_points(self, query_pos: Tensor) -> Tensor:
        """(..., N, d) positional queries -> (..., N, 2) normalised (x, y) reference points."""
        return self.ref_point_head(query_pos).sigmoid()

    def forward(self, memory: Tensor, pos: Tensor, memory_mask: Tensor | None,
                query_pos: Tensor) -> tuple[Tensor, Tensor]:
        reference = self.reference_points(query_pos)
        base_sine = sine_embed_points(reference, self.d_model)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for i, layer in enumerate(self.layers):
            scale = 1.0 if i == 0 else self.query_scale(tgt)
            tgt = layer(tgt, memory, pos, memory_mask, query_pos, base_sine * scale)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs), reference


@dataclass
class EncodedImages:
    """Encoder output of a padded batch.

    memory: (B, HW, d) encoder output; pos: (B, HW, d) sine position embedding;
    mask: (B, HW) bool, True on padding; shape: (h, w) of the feature map;
    features: the backbone's output dict (B, C, h_s, w_s) per stage, for heads that pool it.
    """

    memory: Tensor
    pos: Tensor
    mask: Tensor
    shape: tuple[int, int]
    features: dict[str, Tensor]


@META_ARCH_REGISTRY.register()
class ConditionalDETR(nn.Module):
    """Conditional DETR detector on a detectron2 backbone.

    Inputs follow detectron2: a list of dicts with "image" (3, H, W) uint8 RGB tensor
    (already resized by the mapper), "instances" with ``gt_boxes`` (xyxy pixels of the
    resized image) and ``gt_classes`` in training, and optional "height"/"width" (original
    size) that inference results are rescaled to. Training returns a dict of weighted
    losses; inference returns ``[{"instances": Instances}]`` with ``pred_boxes`` (xyxy
    pixels of the original image), ``scores`` and ``pred_classes``: the top-k (query, class)
    pairs by sigmoid score.
    """

    def __init__(self, *, backbone: Backbone, in_feature: str, encoder: DETREncoder,
                 decoder: ConditionalDecoder, num_classes: int, num_queries: int,
                 criterion: SetCriterion | None, pixel_mean: list[float], pixel_std: list[float],
                 num_detections: int = 100, size_divisibility: int = 32):
        super().__init__()
        self.backbone = backbone
        self.in_feature = in_feature
        d_model = decoder.d_model
        in_channels = backbone.output_shape()[in_feature].channels
        self.input_proj = nn.Conv2d(in_channels, d_model, kernel_size=1)
        self.position_embedding = PositionEmbeddingSine(d_model // 2)
        self.encoder = encoder
        self.decoder = decoder
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.criterion = criterion
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.num_detections = num_detections
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self._reset_parameters()

    def _reset_parameters(self):
        for module in (self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        prior_prob = 0.01
        nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    @property
    def device(self) -> torch.device:
        return self.query_embed.weight.device

    # ---- the interface used by DisCo pre-training -------------------------------------
    def bare_query_pos(self) -> Tensor:
        """The learned positional queries, (N, d)."""
        return self.query_embed.weight

    def reference_points(self, query_pos: Tensor) -> Tensor:
        """Reference points of positional queries: (..., N, d) -> (..., N, 2) normalised (x, y)."""
        return self.decoder.reference_points(query_pos)

    def preprocess_images(self, images: list[Tensor]) -> ImageList:
        """Normalise (3, H_i, W_i) RGB images and pad them into one batch (B, 3, H, W)."""
        images = [(x.to(self.device) - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def encode(self, images: ImageList) -> EncodedImages:
        """Backbone, input projection and encoder on a padded batch."""
        features = self.backbone(images.tensor)
        feat = features[self.in_feature]
        b, _, h_pad, w_pad = images.tensor.shape
        mask = torch.ones((b, h_pad, w_pad), dtype=torch.bool, device=feat.device)
        for i, (h, w) in enumerate(images.image_sizes):
            mask[i, :h, :w] = False
        mask = F.interpolate(mask[None].float(), size=feat.shape[-2:])[0].bool()
        pos = self.position_embedding(mask).to(feat.dtype).flatten(2).transpose(1, 2)
        src = self.input_proj(feat).flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        memory = self.encoder(src, pos, mask)
        return EncodedImages(memory, pos, mask, tuple(feat.shape[-2:]), features)

    def decode(self, encoded: EncodedImages, query_pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Decode with positional queries ``query_pos`` (B, N, d); ``None`` = the bare queries.

        Returns hs (L, B, N, d) and the reference points (B, N, 2) derived from query_pos.
        """
        if query_pos is None:
            query_pos = self.bare_query_pos()[None].expand(encoded.memory.shape[0], -1, -1)
        return self.decoder(encoded.memory, encoded.pos, encoded.mask, query_pos)

    def predict_boxes(self, hs: Tensor, reference: Tensor) -> Tensor:
        """hs (L, B, N, d), reference (B, N, 2) -> boxes (L, B, N, 4) normalised cxcywh."""
        delta = self.bbox_embed(hs)
        offset = torch.cat([inverse_sigmoid(reference), torch.zeros_like(reference)], -1)
        return (delta + offset).sigmoid()

    # ---- detectron2 API -----------------------------------------------------------------
    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess_images([x["image"] for x in batched_inputs])
        hs, reference = self.decode(self.encode(images))
        outputs = {"pred_logits": self.class_embed(hs), "pred_boxes": self.predict_boxes(hs, reference)}
        if self.training:
            if self.criterion is None:
                raise RuntimeError("This detector was built without a criterion (pre-training builds it that way); "
                                   "it cannot compute fine-tuning losses.")
            targets = self.prepare_targets(batched_inputs, images.image_sizes)
            return self.criterion(outputs, targets)
        results = self.inference(outputs["pred_logits"][-1], outputs["pred_boxes"][-1], images.image_sizes)
        processed = []
        for result, inp, size in zip(results, batched_inputs, images.image_sizes):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def prepare_targets(self, batched_inputs: list[dict], image_sizes: list[tuple[int, int]]) -> list[dict]:
        """gt Instances (xyxy pixels) -> dicts of labels (T,) and normalised cxcywh boxes (T, 4)."""
        targets = []
        for inp, (h, w) in zip(batched_inputs, image_sizes):
            inst = inp["instances"].to(self.device)
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = box_xyxy_to_cxcywh(inst.gt_boxes.tensor / scale)
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    def inference(self, logits: Tensor, boxes: Tensor, image_sizes: list[tuple[int, int]]) -> list[Instances]:
        """Top-k (query, class) pairs. logits (B,N,C), boxes (B,N,4) cxcywh normalised ->
        Instances with xyxy pixel boxes of the (resized) input image."""
        prob = logits.sigmoid().flatten(1)
        k = min(self.num_detections, prob.shape[1])
        scores, idx = prob.topk(k, dim=1)
        query_ids = torch.div(idx, self.num_classes, rounding_mode="floor")
        labels = idx % self.num_classes
        results = []
        for b, (h, w) in enumerate(image_sizes):
            xyxy = box_cxcywh_to_xyxy(boxes[b, query_ids[b]]) * torch.tensor([w, h, w, h], device=boxes.device)
            result = Instances((h, w))
            result.pred_boxes = Boxes(xyxy)
            result.pred_boxes.clip((h, w))
            result.scores = scores[b]
            result.pred_classes = labels[b]
            results.append(result)
        return results
