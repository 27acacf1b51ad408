"""The skeleton every DETR variant shares, and the pre-training contract.

:class:`DETRDetector` owns what all DETR detectors do alike, like detectron2's
``DenseDetector`` does for RetinaNet and FCOS: image normalisation and padding, padding
masks per feature level, target preparation, the training forward (criterion over every
decoder layer) and inference (top-k over queries x classes, boxes mapped back to the
original image). A variant writes only what makes it that variant, in three steps:

* :meth:`DETRDetector.encode` (``ImageList`` -> :class:`EncoderOutput`): backbone, input
  projections, position embeddings and its encoder;
* :meth:`DETRDetector.initial_queries` (:class:`EncoderOutput` -> :class:`QueryInit`): the
  queries the decoder starts from, with their reference points;
* :meth:`DETRDetector.decode` (:class:`EncoderOutput`, :class:`QueryInit` ->
  :class:`DecoderOutput`): its decoder and prediction heads.

The pre-training contract
-------------------------
DisCo / Siamese DETR pre-training (``modeling/pretrain``) and the analysis tools talk to a
detector through these members only; no code outside ``detectors/`` asks which variant it has:

* ``initial_queries(encoded).reference[..., :2]``: the reference-point centres DMOQF matches
  proposals to, per image (B, N, 2), normalised by each image's un-padded size. Learned
  queries give the same references for every image; encoder-selected queries (DINO, RT-DETR: :mod:`.two_stage`)
  differ per image (``references_depend_on_image``).
* ``fusion_target`` ("position" or "content"): the :class:`QueryInit` field a fused object
  feature is added to. ``decode`` must honour the fields it is given: a variant whose
  reference points are a function of the positional query (Conditional, Deformable DETR)
  recomputes them from ``QueryInit.position`` inside ``decode``.
* ``decode(...)`` returns every layer's logits and boxes and, for a two-stage variant in
  training, the encoder's own prediction on the selected queries (``DecoderOutput.encoder``);
  ``DecoderOutput.supervised_layers()`` walks what a per-layer loss supervises;
* ``transfer_drop``: the state-dict prefixes that pre-training -> fine-tuning transfer
  drops (the class heads, and any label embedding).
* ``pretraining_losses(decoded, targets, matches)``: the variant's own losses on a pre-training
  method's boxes and per-layer matching (none by default; D-FINE: its distribution losses).
* ``num_queries``, ``num_classes``, ``d_model``, ``backbone``, and ``preprocess_images`` /
  ``preprocess_padded`` (the same ImageList from a list of images or from an already padded batch).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn
from torch.nn import functional as F

from ..backbone import set_backbone_checkpointing
from ..layers import CHECKPOINT_PARTS, box_cxcywh_to_xyxy, normalized_cxcywh, set_layer_checkpointing
from ..layers.denoising import DenoisingGroups

__all__ = [
    "DETRDetector",
    "DecoderOutput",
    "DenoisingOutput",
    "EncoderOutput",
    "EncoderPrediction",
    "QueryInit",
    "layer_suffixes",
    "unwrap_detector",
]


@dataclass
class EncoderOutput:
    """The encoder's view of a padded batch, multi-scale from the start (one level = single scale).

    memory: (B, S, d) encoder output, levels flattened row-major and concatenated
        (S = sum of h_l * w_l); pos: (B, S, d) the position embedding the variant adds to
        queries/keys (with level embeddings where it has them); mask: (B, S) bool, True on padding;
    spatial_shapes: (L, 2) long (h_l, w_l); level_start_index: (L,) long;
    valid_ratios: (B, L, 2) float, the un-padded fraction (w, h) of each level's map;
    image_sizes: un-padded (h, w) pixels of each image; features: the backbone's outputs.
    extras: whatever else the variant's decoder needs (e.g. encoder proposals).
    """

    memory: Tensor
    pos: Tensor | None
    mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    image_sizes: list[tuple[int, int]]
    features: dict[str, Tensor]
    extras: dict[str, Tensor] = field(default_factory=dict)

    def level_maps(self, x: Tensor) -> list[Tensor]:
        """Split a (B, S, C) token tensor into per-level (B, C, h_l, w_l) maps."""
        maps = []
        for (h, w), start in zip(self.spatial_shapes.tolist(), self.level_start_index.tolist()):
            maps.append(x[:, start:start + h * w].transpose(1, 2).reshape(x.shape[0], -1, h, w))
        return maps


@dataclass
class QueryInit:
    """The queries a decoder starts from.

    content: (B, N, d) content queries (zeros where the variant starts from zeros);
    position: (B, N, d) positional queries, or None where the decoder derives them from the
        reference boxes at every layer (DAB-DETR, DINO);
    reference: (B, N, 2) (cx, cy) or (B, N, 4) (cx, cy, w, h), normalised by each image's
        un-padded size.
    """

    content: Tensor
    position: Tensor | None
    reference: Tensor

    def replace(self, **changes) -> QueryInit:
        return dataclasses.replace(self, **changes)


def layer_suffixes(num_layers: int, aux: bool = True, tag: str = "") -> list[tuple[int, str]]:
    """(layer, loss-name suffix) of the supervised decoder layers: ``{tag}_{l}`` for layer l < L - 1 and ``{tag}``
    for the last one (DETR's auxiliary decoding losses, section 3.2); with ``aux`` False the last layer only."""
    layers = range(num_layers) if aux else [num_layers - 1]
    return [(layer, tag if layer == num_layers - 1 else f"{tag}_{layer}") for layer in layers]


@dataclass
class EncoderPrediction:
    """A two-stage detector's own prediction on the N encoder tokens it selects as queries (DINO section 3.4, RT-DETR
    section 4.3): logits (B, N, C) of the encoder's class head; boxes (B, N, 4) normalised cxcywh, with their
    gradient; hidden (B, N, d) the selected tokens' features the encoder heads read."""

    logits: Tensor
    boxes: Tensor
    hidden: Tensor


@dataclass
class DecoderOutput:
    """hidden (L, B, N, d) every layer's output; logits (L, B, N, C) before sigmoid/softmax;
    boxes (L, B, N, 4) normalised cxcywh; references (L, B, N, 2|4) the reference each layer used;
    encoder: the encoder's prediction on the selected queries (two-stage variants, in training), else None."""

    hidden: Tensor
    logits: Tensor
    boxes: Tensor
    references: Tensor
    encoder: EncoderPrediction | None = None

    def supervised_layers(self, aux: bool = True) -> Iterator[tuple[str, Tensor, Tensor, Tensor]]:
        """What a per-layer loss supervises: (suffix, logits (B, N, C), boxes (B, N, 4), hidden (B, N, d)) of the
        encoder prediction (``_enc``) when there is one, then of the decoder layers (:func:`layer_suffixes`)."""
        if self.encoder is not None:
            yield "_enc", self.encoder.logits, self.encoder.boxes, self.encoder.hidden
        for layer, suffix in layer_suffixes(self.logits.shape[0], aux):
            yield suffix, self.logits[layer], self.boxes[layer], self.hidden[layer]

    def split_denoising(self, groups: DenoisingGroups) -> tuple[DecoderOutput, DenoisingOutput]:
        """Split the output of a decoder run over Q_dn denoising + N matching queries (denoising first, as
        :mod:`..layers.denoising` lays them out) into the matching queries' output and the denoising one."""
        dn_logits, logits = groups.split(self.logits, dim=2)
        dn_boxes, boxes = groups.split(self.boxes, dim=2)
        hidden, references = (groups.split(x, dim=2)[1] for x in (self.hidden, self.references))
        return (DecoderOutput(hidden, logits, boxes, references, self.encoder),
                DenoisingOutput(dn_logits, dn_boxes, groups))


@dataclass
class DenoisingOutput:
    """Every decoder layer's prediction for the contrastive denoising queries (DINO section 3.3): logits
    (L, B, Q_dn, C), boxes (L, B, Q_dn, 4) normalised cxcywh, and the :class:`DenoisingGroups` they were
    decoded from (their fixed assignment to the targets and their number of groups)."""

    logits: Tensor
    boxes: Tensor
    groups: DenoisingGroups

    def supervised_layers(self, aux: bool = True) -> Iterator[tuple[str, Tensor, Tensor]]:
        """(suffix ``_dn``, ``_dn_{l}``, logits (B, Q_dn, C), boxes (B, Q_dn, 4)) per supervised layer."""
        for layer, suffix in layer_suffixes(self.logits.shape[0], aux, "_dn"):
            yield suffix, self.logits[layer], self.boxes[layer]


def unwrap_detector(model: nn.Module) -> DETRDetector:
    """The detector inside DDP and/or a pre-training wrapper (which holds it as ``.detector``)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    while not isinstance(model, DETRDetector) and hasattr(model, "detector"):
        model = model.detector
    if not isinstance(model, DETRDetector):
        raise TypeError(f"{type(model).__name__} is not a DETR detector and holds none")
    return model


class DETRDetector(nn.Module):
    """Base class of the DETR variants (a detectron2 meta-architecture).

    Inputs follow detectron2: a list of dicts with "image" (3, H, W) uint8 RGB (already
    resized by the mapper), "instances" with ``gt_boxes`` (xyxy pixels of the resized image)
    and ``gt_classes`` in training, and optional "height"/"width" (original size) that
    inference results are rescaled to. Training returns a dict of weighted losses; inference
    returns ``[{"instances": Instances}]`` with ``pred_boxes`` (xyxy pixels of the original
    image), ``scores`` and ``pred_classes``: the top-k (query, class) pairs by sigmoid score.

    Args:
        backbone: a detectron2 Backbone.
        num_classes, num_queries, d_model: the usual DETR sizes.
        criterion: the set loss (None for a detector that pre-training drives).
        pixel_mean, pixel_std: RGB normalisation of [0, 255] inputs.
        num_detections: top-k kept at inference.
        size_divisibility: images are padded to the batch maximum rounded up to this
            (0 = the batch maximum, as the Conditional/Deformable DETR releases do).
    """

    #: The QueryInit field a pre-training fused object feature is added to.
    fusion_target: ClassVar[str] = "position"
    #: Whether initial_queries() gives each image its own reference points.
    references_depend_on_image: ClassVar[bool] = False
    #: State-dict prefixes that pre-training -> fine-tuning transfer drops.
    transfer_drop: ClassVar[tuple[str, ...]] = ("class_embed.",)

    def __init__(self, *, backbone: Backbone, num_classes: int, num_queries: int, d_model: int,
                 criterion: nn.Module | None, pixel_mean: list[float], pixel_std: list[float],
                 num_detections: int = 100, size_divisibility: int = 0):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.d_model = d_model
        self.criterion = criterion
        self.num_detections = num_detections
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ---- the steps a variant fills in -------------------------------------------------------
    def encode(self, images: ImageList) -> EncoderOutput:
        raise NotImplementedError

    def initial_queries(self, encoded: EncoderOutput) -> QueryInit:
        raise NotImplementedError

    def decode(self, encoded: EncoderOutput, queries: QueryInit) -> DecoderOutput:
        raise NotImplementedError

    def pretraining_losses(self, decoded: DecoderOutput, targets: list[dict],
                           matches: dict[str, list[tuple[Tensor, Tensor]]]) -> dict[str, Tensor]:
        """Weighted losses the variant adds in pre-training, given a method's targets (dicts with "boxes" (T_b, 4)
        normalised cxcywh) and its matching of each supervised layer (keyed by the suffix of
        :meth:`DecoderOutput.supervised_layers`). None here."""
        return {}

    # ---- shared steps -------------------------------------------------------------------------
    def set_activation_checkpointing(self, parts: tuple[str, ...] | list[str] = ()) -> None:
        """Activation checkpointing (``train.activation_checkpointing``) of the named parts, off elsewhere:
        "backbone" (each residual / feature block), "encoder" (each encoder layer; RT-DETR: each AIFI layer and
        CSP fusion block), "decoder" (each decoder layer). Gradients are unchanged; see docs/gpu.md."""
        parts = (parts,) if isinstance(parts, str) else tuple(parts)
        unknown = sorted(set(parts) - set(CHECKPOINT_PARTS))
        if unknown:
            raise ValueError(f"activation checkpointing parts {unknown} unknown; choose from {CHECKPOINT_PARTS}")
        set_backbone_checkpointing(self.backbone, "backbone" in parts)
        for part in ("encoder", "decoder"):
            module = getattr(self, part, None)
            stacks = 0 if module is None else set_layer_checkpointing(module, part in parts)
            if part in parts and not stacks:
                raise TypeError(f"{type(self).__name__}.{part} runs no layers through LayerCheckpointing")

    def preprocess_images(self, images: list[Tensor]) -> ImageList:
        """Normalise (3, H_i, W_i) RGB images in [0, 255] (any dtype) and pad them into one batch."""
        images = [(x.to(self.device).float() - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def preprocess_padded(self, images: Tensor, image_sizes: list[tuple[int, int]]) -> ImageList:
        """The ImageList of :meth:`preprocess_images` from an already padded batch.

        images: (M, 3, H, W) RGB in [0, 255] (any dtype, any padding values), image i in the top-left
        ``image_sizes[i]`` = (h_i, w_i) corner. Returns the normalised batch padded (with zeros, after
        normalisation) to the largest (h, w) rounded up to ``size_divisibility``: bit-equal to
        ``preprocess_images([images[i, :, :h_i, :w_i] for i ...])``.
        """
        sizes = [(int(h), int(w)) for h, w in image_sizes]
        m, _, height, width = images.shape
        if len(sizes) != m or any(h > height or w > width for h, w in sizes):
            raise ValueError(f"image_sizes {sizes} do not fit a padded batch of shape {tuple(images.shape)}")
        h_pad, w_pad = max(h for h, _ in sizes), max(w for _, w in sizes)
        if self.size_divisibility > 1:
            d = self.size_divisibility
            h_pad, w_pad = (h_pad + d - 1) // d * d, (w_pad + d - 1) // d * d
        x = images[:, :, :h_pad, :w_pad].to(self.device).float()
        x = (x - self.pixel_mean) / self.pixel_std
        x = F.pad(x, (0, w_pad - x.shape[-1], 0, h_pad - x.shape[-2]))
        hw = torch.as_tensor(sizes, device=x.device)
        padding = ((torch.arange(h_pad, device=x.device)[None, :, None] >= hw[:, 0, None, None])
                   | (torch.arange(w_pad, device=x.device)[None, None, :] >= hw[:, 1, None, None]))
        return ImageList(x.masked_fill(padding[:, None], 0.0).contiguous(), sizes)

    @staticmethod
    def level_masks(images: ImageList, maps: list[Tensor]) -> list[Tensor]:
        """Padding masks of each (B, C, h, w) feature map: (B, h, w) bool, True on padding
        (the image-level mask resized with nearest neighbour, as DETR does)."""
        b, _, h_pad, w_pad = images.tensor.shape
        if all(h == h_pad and w == w_pad for h, w in images.image_sizes):   # no padding (e.g. an exported graph:
            return [torch.zeros_like(m[:, 0], dtype=torch.bool) for m in maps]   # batch and sizes stay free)
        mask = torch.ones((b, h_pad, w_pad), dtype=torch.bool, device=images.tensor.device)
        for i, (h, w) in enumerate(images.image_sizes):
            mask[i, :h, :w] = False
        return [F.interpolate(mask[None].float(), size=m.shape[-2:])[0].bool() for m in maps]

    @staticmethod
    def flatten_levels(maps: list[Tensor], masks: list[Tensor], pos: list[Tensor] | None = None):
        """Per-level maps (B, C, h, w), masks (B, h, w) and position embeddings (B, d, h, w) ->
        tokens (B, S, C), mask (B, S), pos (B, S, d) or None, spatial_shapes (L, 2),
        level_start_index (L,), valid_ratios (B, L, 2) as (w, h) fractions."""
        if torch.jit.is_tracing():   # an export: the level sizes are computed in the graph, not recorded constants
            shapes = torch.stack([torch._shape_as_tensor(m)[-2:] for m in maps]).to(maps[0].device)
        else:
            shapes = torch.as_tensor([m.shape[-2:] for m in maps], dtype=torch.long, device=maps[0].device)
        starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
        tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        mask = torch.cat([m.flatten(1) for m in masks], 1)
        pos_tokens = None if pos is None else torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1)
        ratios = []
        for m in masks:
            valid_h = (~m[:, :, 0]).sum(1).float() / m.shape[1]
            valid_w = (~m[:, 0, :]).sum(1).float() / m.shape[2]
            ratios.append(torch.stack([valid_w, valid_h], -1))
        return tokens, mask, pos_tokens, shapes, starts, torch.stack(ratios, 1)

    def run(self, images: ImageList) -> tuple[EncoderOutput, DecoderOutput]:
        """Encode a padded batch and decode it from the variant's own initial queries."""
        encoded = self.encode(images)
        return encoded, self.decode(encoded, self.initial_queries(encoded))

    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess_images([x["image"] for x in batched_inputs])
        if self.training:
            if self.criterion is None:
                raise RuntimeError("This detector was built without a criterion (pre-training builds it that way); "
                                   "it cannot compute fine-tuning losses.")
            return self.forward_train(images, self.prepare_targets(batched_inputs, images.image_sizes))
        _, decoded = self.run(images)
        results = self.inference(decoded.logits[-1], decoded.boxes[-1], images.image_sizes)
        processed = []
        for result, inp, size in zip(results, batched_inputs, images.image_sizes):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def forward_train(self, images: ImageList, targets: list[dict]) -> dict[str, Tensor]:
        """Weighted training losses of every decoder layer (variants with extra training
        queries, e.g. denoising, extend this)."""
        _, decoded = self.run(images)
        return self.criterion(decoded, targets)

    def prepare_targets(self, batched_inputs: list[dict], image_sizes: list[tuple[int, int]]) -> list[dict]:
        """gt Instances (xyxy pixels) -> dicts of labels (T,) and cxcywh boxes (T, 4) normalised
        by the un-padded image size."""
        targets = []
        for inp, size in zip(batched_inputs, image_sizes):
            inst = inp["instances"].to(self.device)
            boxes = normalized_cxcywh(inst.gt_boxes.tensor[None], [size])[0]
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    def topk_detections(self, logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The batched top-k of :meth:`inference`: logits (B, N, C), boxes (B, N, 4) cxcywh normalised ->
        scores (B, K) sigmoid, highest first, labels (B, K) long, boxes (B, K, 4) xyxy normalised (not clipped),
        K = min(num_detections, N * C)."""
        prob = logits.sigmoid().flatten(1)
        k = min(self.num_detections, prob.shape[1])
        scores, idx = prob.topk(k, dim=1)
        query_ids = torch.div(idx, self.num_classes, rounding_mode="floor")
        xyxy = box_cxcywh_to_xyxy(boxes.gather(1, query_ids[..., None].expand(-1, -1, boxes.shape[-1])))
        return scores, idx % self.num_classes, xyxy

    def inference(self, logits: Tensor, boxes: Tensor, image_sizes: list[tuple[int, int]]) -> list[Instances]:
        """Top-k (query, class) pairs. logits (B,N,C), boxes (B,N,4) cxcywh normalised ->
        Instances with xyxy pixel boxes of the (resized) input image."""
        scores, labels, boxes_xyxy = self.topk_detections(logits, boxes)
        results = []
        for b, (h, w) in enumerate(image_sizes):
            xyxy = boxes_xyxy[b] * torch.tensor([w, h, w, h], device=boxes.device)
            result = Instances((h, w))
            result.pred_boxes = Boxes(xyxy)
            result.pred_boxes.clip((h, w))
            result.scores = scores[b]
            result.pred_classes = labels[b]
            results.append(result)
        return results
