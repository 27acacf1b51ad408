"""DisCo DETR / Siamese DETR pre-training meta-architecture.

``DisCoDETR`` is a :class:`~.base.PretrainingModel`: it owns an unchanged detector (the class used for
fine-tuning) and adds the pre-training heads (:mod:`.heads`) and losses (:mod:`.losses`). It talks to
the detector only through the pre-training contract of :mod:`disco_detr.modeling.detectors.base`:
``preprocess_padded``, ``encode``,
``initial_queries`` (whose references DMOQF matches proposals to, per image), ``fusion_target`` (the
query field a fused object feature enters), ``decode`` (every layer's logits and boxes),
``num_queries``, ``num_classes``, ``d_model``, ``backbone``.

Input: a :class:`~disco_detr.structures.PairedViewBatch`, view-major (image ``v * B + b`` is view v of
sample b), colour-augmented, with its crops (the training loop's batch transform
:class:`~disco_detr.data.photometric.PairedViewPhotometric` finishes batches whose mapper left that to
the device). Both views go through the detector as one batch of 2B images; view v decodes with the
object features of the other view. The loss is lambda_2 L_loc + lambda_0 L_rec (every decoder layer)
+ lambda_1 L_enc + lambda_3 L_contrast (CLD, last layer); Siamese DETR is the same model with fixed
query groups instead of DMOQF and without CLD.
"""
from __future__ import annotations

import logging
from collections import deque

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor, nn
from torchvision.ops import roi_align

from ...structures import PairedViewBatch
from ..detectors.base import DETRDetector, QueryInit
from ..layers import MLP, normalized_cxcywh
from ..matching import HungarianMatcher, assign_queries_to_proposals, fixed_group_assignment
from ..precision import float32_policy
from .base import PretrainingModel
from .heads import CLDHeads, EncoderConsistencyHead
from .health import put_health
from .losses import localisation_losses, reconstruction_loss

__all__ = ["DisCoDETR"]

logger = logging.getLogger(__name__)

FUSIONS = ("add", "add_first_proposal")
#: The query assignment's health is checked from this iteration on (before it, DMOQF's groups and the
#: loss matching are both still at their random start).
HEALTH_WARMUP_ITERS = 20


@META_ARCH_REGISTRY.register()
class DisCoDETR(PretrainingModel):
    """DisCo DETR pre-training around a DETR detector.

    Args:
        detector: a :class:`~disco_detr.modeling.detectors.base.DETRDetector`, the class used
            for fine-tuning, built with ``num_classes=2`` (object, no-object) and a frozen
            backbone; its own criterion is not used here.
        feature_levels: backbone outputs pooled for object features (RoIAlign 7x7) and crop
            features (global average pool), concatenated over levels.
        use_dmoqf: distance-aware matching (True) or Siamese DETR's fixed groups (False).
        fusion: how the other view's object feature z enters the query field the detector
            names (``fusion_target``): "add" (q + z, then the detector's own layers: eq. 3
            ``f_q(MLP(z + phi_q))`` with the detector's own reference head as MLP and its query
            projection as f_q; Siamese DETR and the DisCo release do the same), or
            "add_first_proposal" (the DisCo release's indexing bug: every query gets proposal
            0's feature; only for studying it). Nothing outside the detector sits between the
            sum and the detector's layers (a fresh MLP there would not transfer to fine-tuning).
        loss weights: ``weight_loc`` (lambda_2), ``weight_rec`` (lambda_0), ``weight_enc``
            (lambda_1), ``weight_contrast`` (lambda_3). A weight of 0 removes the loss and
            its head.
        cld_projector / cld_predictor: the Table 4 ablations of CLD.
        enc_hidden: hidden width of the L_enc projector/predictor (256 in the release).
        health_period: every K iterations (and at the first) log the pre-training health
            metrics (:meth:`health_metrics`) to the event storage (metrics.json / TensorBoard);
            0 turns them off. They reuse tensors of the step: no extra forward pass.
    """

    batch_type = PairedViewBatch

    def __init__(self, *, detector: DETRDetector, feature_levels: tuple[str, ...] = ("res5",), use_dmoqf: bool = True,
                 fusion: str = "add", weight_loc: float = 1.0, weight_rec: float = 5.0, weight_enc: float = 10.0,
                 weight_contrast: float = 2.0, cld_projector: bool = True, cld_predictor: bool = True,
                 box_jitter: float = 0.1, no_object_weight: float = 0.1, cost_class: float = 1.0,
                 cost_bbox: float = 5.0, cost_giou: float = 2.0, loss_bbox: float = 5.0, loss_giou: float = 2.0,
                 loss_class: float = 1.0, enc_hidden: int = 256, health_period: int = 10):
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        super().__init__(detector=detector, num_classes=2, levels=feature_levels, levels_name="feature_levels",
                         health_period=health_period)
        shapes = self.backbone_shapes
        d = detector.d_model
        self.feature_levels = tuple(feature_levels)
        self.feature_dim = sum(shapes[f].channels for f in feature_levels)
        self.strides = {f: shapes[f].stride for f in feature_levels}
        self.use_dmoqf = use_dmoqf
        self.fusion = fusion
        self.box_jitter = box_jitter
        self.weights = {"loc": weight_loc, "rec": weight_rec, "enc": weight_enc, "contrast": weight_contrast}
        self.loc_weights = {"bbox": loss_bbox, "giou": loss_giou, "class": loss_class}
        self.no_object_weight = no_object_weight
        self.matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou, class_cost="objectness")

        self.object_proj = nn.Linear(self.feature_dim, d)
        self.rec_head = MLP(d, d, self.feature_dim, 2) if weight_rec > 0 else None
        self.enc_head = EncoderConsistencyHead(d, enc_hidden) if weight_enc > 0 else None
        self.cld = CLDHeads(d, cld_projector, cld_predictor) if weight_contrast > 0 else None
        if self.cld is not None:
            logger.info("CLD heads (f_proj=%s, f_pred=%s): %s parameters", cld_projector, cld_predictor,
                        f"{sum(p.numel() for p in self.cld.parameters()):,}")
        self._agreement_history: deque[tuple[float, float]] = deque(maxlen=3)  # the warning's window
        self._warned_agreement = False

    # ---- features of the frozen backbone --------------------------------------------------
    def pooled_box_features(self, features: dict[str, Tensor], boxes: Tensor) -> Tensor:
        """RoIAlign 7x7 + average pool per level, concatenated: boxes (M, n, 4) xyxy pixels of
        the M images -> (M, n, C)."""
        m, n = boxes.shape[:2]
        ids = torch.arange(m, device=boxes.device, dtype=boxes.dtype).repeat_interleave(n)[:, None]
        rois = torch.cat([ids, boxes.reshape(-1, 4)], 1)
        pooled = [roi_align(features[f], rois, (7, 7), 1.0 / self.strides[f], 0, True).mean((2, 3))
                  for f in self.feature_levels]
        return torch.cat(pooled, 1).view(m, n, -1)

    def crop_features(self, crops: Tensor) -> Tensor:
        """(M, n, 3, s, s) crops in [0, 255] -> (M, n, C) pooled backbone features (no grad)."""
        pooled = self.pooled_backbone_features(crops.flatten(0, 1), self.feature_levels)
        return pooled.view(*crops.shape[:2], -1)

    def jitter_boxes(self, boxes: Tensor, image_sizes: Tensor) -> Tensor:
        """boxes (M, n, 4) xyxy pixels, image_sizes (M, 2) (h, w) -> (M, n, 4): each coordinate moved by
        up to +-box_jitter of the box size (torch's RNG), clipped to the image."""
        size = (boxes[..., 2:] - boxes[..., :2]).repeat(1, 1, 2)
        out = boxes + (torch.rand_like(boxes) * 2 - 1) * self.box_jitter * size
        hw = image_sizes.to(boxes)
        limit = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], 1)[:, None]
        return torch.minimum(out.clamp(min=0), limit)

    # ---- DMOQF ------------------------------------------------------------------------------
    @torch.no_grad()
    @float32_policy  # DMOQF's distances in float32 under AMP (modeling/precision.py)
    def assign(self, centres: Tensor, queries: QueryInit) -> Tensor:
        """centres (M, n, 2) normalised proposal centres, the initial queries of the M images ->
        owner (M, N): the proposal each query belongs to."""
        num_queries = queries.reference.shape[1]
        if not self.use_dmoqf:
            owner = fixed_group_assignment(num_queries, centres.shape[1]).to(centres.device)
            return owner[None].expand(centres.shape[0], -1)
        return assign_queries_to_proposals(centres, queries.reference[..., :2].float()).owner

    def fuse(self, queries: QueryInit, object_features: Tensor, owner: Tensor) -> QueryInit:
        """Add the *other* view's object features (M, n, d) to the field the detector names
        (``fusion_target``): query i gets the feature of proposal ``owner[:, i]`` (M, N)."""
        if self.fusion == "add_first_proposal":
            owner = torch.zeros_like(owner)
        fused = torch.gather(object_features, 1, owner[..., None].expand(-1, -1, object_features.shape[-1]))
        target = self.detector.fusion_target
        return queries.replace(**{target: getattr(queries, target) + fused})

    # ---- health of the pre-training ----------------------------------------------------------
    @torch.no_grad()
    def health_metrics(self, bare: QueryInit, used_references: Tensor, owner: Tensor, indices) -> dict[str, float]:
        """What shows that DMOQF's groups reach the decoder, for one step (all distances in normalised
        image units).

        Args:
            bare: the detector's initial queries before fusion; ``bare.reference[..., :2]`` (M, N, 2)
                are the centres DMOQF matched proposals to.
            used_references: (L, M, N, 2|4) the references each decoder layer used (``DecoderOutput``).
            owner: (M, N) the proposal each query belongs to (DMOQF's groups, or Siamese DETR's fixed ones).
            indices: the last layer's loss matching, per image ``(query_ids, box_ids)``.

        Returns ``group_agreement``: the share of last-layer loss-matched queries that belong to
        their box's group; ``group_agreement_chance``: what random queries would give (each box's
        group size / N, averaged over the matched boxes: 1/n for equal groups);
        ``reference_offset``: mean L2 distance between the references the decoder used (every
        layer) and the bare references; ``reference_spread``: the bare reference centres'
        standard deviation over queries (mean of x and y, averaged over images); and, for
        learned queries (the same references for every image), ``reference_displacement``: mean
        L2 distance of the bare centres from where they were at the run's first step.
        """
        num_queries = owner.shape[1]
        hits, chance, matched = 0.0, 0.0, 0
        for i, (q, t) in enumerate(indices):
            q, t = q.to(owner.device), t.to(owner.device)
            hits += (owner[i, q] == t).sum().item()
            group_size = (owner[i][None] == t[:, None]).sum(1).float()
            chance += (group_size / num_queries).sum().item()
            matched += len(q)
        return {"group_agreement": hits / max(matched, 1), "group_agreement_chance": chance / max(matched, 1),
                **self.reference_health(bare.reference, used_references)}

    def log_health(self, bare: QueryInit, used_references: Tensor, owner: Tensor, indices) -> None:
        """Every ``health_period`` iterations (and at the first) inside a trainer: put the
        :meth:`health_metrics` into detectron2's event storage as ``pretrain_health/<name>``, and warn
        once when the group agreement sits at chance with DMOQF on (mean of the last three values
        from iteration :data:`HEALTH_WARMUP_ITERS` on, at most 1.25 x chance)."""
        storage = self.health_storage()
        if storage is None:
            return
        it = storage.iter
        metrics = self.health_metrics(bare, used_references, owner, indices)
        put_health(storage, metrics)
        if not self.use_dmoqf or it < HEALTH_WARMUP_ITERS or self._warned_agreement:
            return
        self._agreement_history.append((metrics["group_agreement"], metrics["group_agreement_chance"]))
        recent = self._agreement_history
        agreement, chance = (sum(v) / len(recent) for v in zip(*recent))
        if len(recent) == 3 and agreement <= 1.25 * chance:
            self._warned_agreement = True
            logger.warning(
                "DMOQF looks inert: at iteration %d the decoder's loss-matched queries fall in their box's DMOQF "
                "group %.3f of the time, chance %.3f (mean of the last three health logs). The groups DMOQF forms "
                "do not reach the decoder; check that nothing sits between the fused queries and the detector's "
                "own layers (README: pre-training health).", it, agreement, chance)

    @staticmethod
    def matched_outputs(hs: Tensor, indices, n: int) -> Tensor:
        """hs (M, N, d) -> (M, n, d): the output of the query matched to each box k."""
        out = hs.new_zeros(hs.shape[0], n, hs.shape[-1])
        for i, (q, t) in enumerate(indices):
            out[i, t.to(hs.device)] = hs[i, q.to(hs.device)]
        return out

    def losses(self, batch: PairedViewBatch) -> dict[str, Tensor]:
        """The weighted losses on a colour-augmented :class:`PairedViewBatch` with crops, on the device."""
        det = self.detector
        b, n = batch.num_samples, batch.boxes.shape[1]

        # both views through the backbone and encoder as one batch (image v * B + b)
        encoded = det.encode(det.preprocess_padded(batch.images, batch.image_sizes))
        image_hw = torch.tensor(batch.image_sizes, device=self.device, dtype=torch.float32)  # (2B, 2) h, w
        boxes = batch.boxes.float()  # (2B, n, 4) xyxy view pixels
        targets = normalized_cxcywh(boxes, image_hw)  # (2B, n, 4) cxcywh, the boxes of L_loc

        # the object feature of each box (RoIAlign of jittered boxes on the frozen backbone); view v's
        # queries are fused with the other view's (eq. 3), in the DMOQF group of their box
        with torch.no_grad():
            pooled = self.pooled_box_features(encoded.features, self.jitter_boxes(boxes, image_hw))
        z = self.object_proj(pooled)  # (2B, n, d)
        z_other = torch.cat([z[b:], z[:b]])
        queries = det.initial_queries(encoded)
        owner = self.assign(targets[..., :2], queries)
        decoded = det.decode(encoded, self.fuse(queries, z_other, owner))

        # L_rec's target for view v: the frozen feature of the other view's crop of the same box
        crop_targets = None
        if self.rec_head is not None:
            crop_features = self.crop_features(batch.crops)  # (2B, n, C)
            crop_targets = torch.cat([crop_features[b:], crop_features[:b]])

        # every supervised layer: Hungarian matching of the queries to the boxes, L_loc and L_rec
        losses: dict[str, Tensor] = {}
        labels = torch.zeros(n, dtype=torch.long, device=self.device)  # every box is "object"
        target_list = [{"labels": labels, "boxes": t} for t in targets]
        matched = None  # the encoder's prediction (``_enc``, two-stage variants) first, then every decoder layer
        matches = {}
        for suffix, logits, pred_boxes, hidden in decoded.supervised_layers():
            last = suffix == ""
            indices = matches[suffix] = self.matcher(logits, pred_boxes, target_list)
            if last:
                self.log_health(queries, decoded.references, owner, indices)
            if self.weights["loc"] > 0:
                loc = localisation_losses(logits, pred_boxes, targets, indices, self.no_object_weight)
                for name, value in loc.items():
                    losses[f"loss_loc_{name}{suffix}"] = self.weights["loc"] * self.loc_weights[name] * value
            if self.rec_head is not None or (self.cld is not None and last):
                matched = self.matched_outputs(hidden, indices, n)  # (2B, n, d)
                if self.rec_head is not None:
                    rec = reconstruction_loss(self.rec_head(matched), crop_targets)
                    losses[f"loss_rec{suffix}"] = self.weights["rec"] * rec

        losses.update(det.pretraining_losses(decoded, target_list, matches))   # the variant's own (D-FINE's FGL, DDF)

        # L_enc on the two views' pooled encoder memories, CLD on the last layer's matched outputs
        if self.enc_head is not None:
            valid = (~encoded.mask).float()[..., None]
            pooled_memory = (encoded.memory * valid).sum(1) / valid.sum(1).clamp(min=1)
            losses["loss_enc"] = self.weights["enc"] * self.enc_head(pooled_memory[:b], pooled_memory[b:])
        if self.cld is not None:
            losses["loss_contrast"] = self.weights["contrast"] * self.cld(matched[:b].flatten(0, 1),
                                                                          matched[b:].flatten(0, 1))
        return losses
