"""DisCo DETR / Siamese DETR pre-training meta-architecture (SPEC sections 3-6).

``DisCoDETR`` owns an unchanged detector (the class used for fine-tuning) and adds the
pre-training heads. It talks to the detector only through the pre-training contract of
:mod:`disco_detr.modeling.detectors.base`: ``preprocess_images``, ``encode``,
``initial_queries`` (whose references DMOQF matches proposals to, per image),
``fusion_target`` (the query field a fused object feature enters), ``decode`` (every
layer's logits and boxes), ``num_queries``, ``num_classes``, ``d_model``, ``backbone``.

Inputs: the batch of :func:`disco_detr.data.pretrain_mapper.collate_paired_views`
(views (B,2,3,H,W) uint8 RGB, boxes (B,2,n,4) xyxy view pixels, crops
(B,2,n,3,s,s) uint8 or the parameters to cut them, image_sizes). Where the mapper left
them to the device, :func:`disco_detr.data.photometric.augment_paired_views` cuts the crops
and applies the colour augmentation at the start of the step. Views are processed as one batch of 2B images,
view 1 first: index ``v * B + b``.
"""
from __future__ import annotations

import logging
from collections import deque

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from ...data.photometric import augment_paired_views
from ..criterion import box_losses, flatten_indices
from ..detectors.base import DETRDetector, QueryInit
from ..layers import MLP, box_xyxy_to_cxcywh
from ..matching import HungarianMatcher, assign_queries_to_proposals, fixed_group_assignment
from ..precision import at_least_float32, float32_policy
from .cld import CLDHeads
from .common import check_pretraining_detector, pooled_backbone_features
from .health import due_storage, put_health, reference_health
from .sync_bn import SyncBatchNorm1d

__all__ = ["DisCoDETR", "EncoderConsistencyHead"]

logger = logging.getLogger(__name__)

FUSIONS = ("add", "add_first_proposal")
#: The query assignment's health is checked from this iteration on (before it, DMOQF's groups and the
#: loss matching are both still at their random start).
HEALTH_WARMUP_ITERS = 20


class EncoderConsistencyHead(nn.Module):
    """L_enc: pooled encoder memory -> projector FC-BN-ReLU-FC-BN-ReLU-FC-BN -> predictor
    FC-BN-ReLU-FC; symmetric 2 - 2 cos with stop-gradient on the target view.

    As in the released code: hidden width 256, BatchNorm synchronised across processes, and
    each view through the projector on its own (BN statistics per view).

    forward(m1, m2): (B, d) pooled memories of the two views -> scalar.
    """

    def __init__(self, d_model: int = 256, hidden: int = 256):
        super().__init__()
        d = d_model
        self.projector = nn.Sequential(
            nn.Linear(d, hidden), SyncBatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), SyncBatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, d), SyncBatchNorm1d(d),
        )
        self.predictor = nn.Sequential(nn.Linear(d, hidden), SyncBatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, d))

    @staticmethod
    @float32_policy
    def _two_minus_two_cos(p: Tensor, z: Tensor) -> Tensor:
        return (2 - 2 * F.cosine_similarity(at_least_float32(p), at_least_float32(z.detach()), dim=-1)).mean()

    def forward(self, m1: Tensor, m2: Tensor) -> Tensor:
        z1, z2 = self.projector(m1), self.projector(m2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * self._two_minus_two_cos(p1, z2) + 0.5 * self._two_minus_two_cos(p2, z1)


@META_ARCH_REGISTRY.register()
class DisCoDETR(nn.Module):
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
            sum and the detector's layers. (An earlier default, "mlp", put a fresh 2-layer MLP
            there: transfer dropped it, the fused references collapsed to the image centre and
            the loss-matched query of box k fell in k's DMOQF group at chance level; removed.)
        loss weights: ``weight_loc`` (lambda_2), ``weight_rec`` (lambda_0), ``weight_enc``
            (lambda_1), ``weight_contrast`` (lambda_3). A weight of 0 removes the loss and
            its head.
        cld_projector / cld_predictor: the Table 4 ablations of CLD.
        enc_hidden: hidden width of the L_enc projector/predictor (256 in the release).
        health_period: every K iterations (and at the first) log the pre-training health
            metrics (:meth:`health_metrics`) to the event storage (metrics.json / TensorBoard);
            0 turns them off. They reuse tensors of the step: no extra forward pass.
        require_backbone_weights: the trainer refuses to start when ``train.init_checkpoint``
            does not provide the frozen backbone's weights (False only to pre-train against a
            random backbone on purpose, e.g. in tests).
    """

    def __init__(self, *, detector: DETRDetector, feature_levels: tuple[str, ...] = ("res5",), use_dmoqf: bool = True,
                 fusion: str = "add", weight_loc: float = 1.0, weight_rec: float = 5.0, weight_enc: float = 10.0,
                 weight_contrast: float = 2.0, cld_projector: bool = True, cld_predictor: bool = True,
                 box_jitter: float = 0.1, no_object_weight: float = 0.1, cost_class: float = 1.0,
                 cost_bbox: float = 5.0, cost_giou: float = 2.0, loss_bbox: float = 5.0, loss_giou: float = 2.0,
                 loss_class: float = 1.0, enc_hidden: int = 256, health_period: int = 10,
                 require_backbone_weights: bool = True):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        shapes = check_pretraining_detector(detector, 2, feature_levels, "feature_levels", "DisCoDETR")
        self.detector = detector
        d = detector.d_model
        self.feature_levels = tuple(feature_levels)
        self.feature_dim = sum(shapes[f].channels for f in feature_levels)
        self.strides = {f: shapes[f].stride for f in feature_levels}
        self.use_dmoqf = use_dmoqf
        self.fusion = fusion
        self.box_jitter = box_jitter
        self.require_backbone_weights = require_backbone_weights
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
        if health_period < 0:
            raise ValueError(f"health_period must be >= 0, got {health_period}")
        self.health_period = health_period
        # the bare reference centres at the run's first step (NaN until then; kept in checkpoints so a
        # resumed run measures displacement from the same start); learned-query variants only
        self.register_buffer("health_start_reference", torch.full((detector.num_queries, 2), float("nan")))
        self._agreement_history: deque[tuple[float, float]] = deque(maxlen=3)  # the warning's window
        self._warned_agreement = False

    @property
    def device(self) -> torch.device:
        return self.detector.device

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
        """(B, 2, n, 3, s, s) crops in [0, 255] -> (B, 2, n, C) pooled backbone features (no grad)."""
        pooled = pooled_backbone_features(self.detector, crops.flatten(0, 2), self.feature_levels)
        return pooled.view(*crops.shape[:3], -1)

    def jitter_boxes(self, boxes: Tensor, image_sizes: Tensor) -> Tensor:
        """Each coordinate moved by up to +-box_jitter of the box size, clipped to the image."""
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
        start = None if self.detector.references_depend_on_image else self.health_start_reference
        return {"group_agreement": hits / max(matched, 1), "group_agreement_chance": chance / max(matched, 1),
                **reference_health(bare.reference, used_references, start)}

    def log_health(self, bare: QueryInit, used_references: Tensor, owner: Tensor, indices) -> None:
        """Every ``health_period`` iterations (and at the first) inside a trainer: put the
        :meth:`health_metrics` into detectron2's event storage as ``pretrain_health/<name>``, and warn
        once when the group agreement sits at chance with DMOQF on (mean of the last three values
        from iteration :data:`HEALTH_WARMUP_ITERS` on, at most 1.25 x chance)."""
        storage = due_storage(self.health_period)
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

    # ---- losses -----------------------------------------------------------------------------
    @float32_policy
    def loc_losses(self, logits: Tensor, boxes: Tensor, targets: Tensor, indices) -> dict[str, Tensor]:
        """Object/no-object CE over all queries + L1 and GIoU on matched ones, for one layer.

        logits (M, N, 2), boxes (M, N, 4) cxcywh, targets (M, n, 4) cxcywh normalised."""
        m, n = targets.shape[:2]
        batch_ids, query_ids, target_ids = flatten_indices(indices, logits.device)
        labels = torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)  # 1 = no object
        labels[batch_ids, query_ids] = 0
        class_weight = torch.tensor([1.0, self.no_object_weight], device=logits.device)
        loss_class = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), weight=class_weight)
        src = boxes[batch_ids, query_ids].float()
        tgt = targets[batch_ids, target_ids].float()
        loss_bbox, loss_giou = box_losses(src, tgt, float(m * n))
        return {"class": loss_class, "bbox": loss_bbox, "giou": loss_giou}

    @staticmethod
    @float32_policy
    def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
        """L_rec for (..., C) predictions and targets: per box the squared distance between the
        L2-normalised vectors, **summed over the C channels** (= 2 - 2 cos), averaged over
        boxes (UP-DETR and both released codes; a mean over channels would divide it by C)."""
        p = F.normalize(prediction.float(), dim=-1)
        t = F.normalize(target.float(), dim=-1)
        return (p - t).pow(2).sum(-1).mean()

    @staticmethod
    def matched_outputs(hs: Tensor, indices, n: int) -> Tensor:
        """hs (M, N, d) -> (M, n, d): the output of the query matched to each box k."""
        out = hs.new_zeros(hs.shape[0], n, hs.shape[-1])
        for i, (q, t) in enumerate(indices):
            out[i, t.to(hs.device)] = hs[i, q.to(hs.device)]
        return out

    def forward(self, batch: dict) -> dict[str, Tensor]:
        if not self.training:
            raise RuntimeError("DisCoDETR is a pre-training model; evaluate the fine-tuned detector instead.")
        # crops cut and colour augmentation applied here, batched on the training device, when the
        # mapper left them to it (a no-op for batches the data workers augmented)
        batch = augment_paired_views(batch, self.device)
        views = batch["views"]
        b = views.shape[0]
        n = batch["boxes"].shape[2]
        sizes = [tuple(s) for s in batch["image_sizes"]] * 2
        det = self.detector
        # view 1 of every image first, then view 2: index v * B + b
        images = det.preprocess_images([views[i % b, i // b, :, :h, :w] for i, (h, w) in enumerate(sizes)])
        encoded = det.encode(images)
        image_hw = torch.tensor(sizes, device=self.device, dtype=torch.float32)  # (2B, 2) h, w
        boxes = batch["boxes"].to(self.device).float().transpose(0, 1).flatten(0, 1)  # (2B, n, 4) view pixels
        scale = torch.stack([image_hw[:, 1], image_hw[:, 0]] * 2, 1)[:, None]
        targets = box_xyxy_to_cxcywh(boxes / scale)  # normalised cxcywh

        with torch.no_grad():
            pooled = self.pooled_box_features(encoded.features, self.jitter_boxes(boxes, image_hw))
        z = self.object_proj(pooled)  # (2B, n, d)
        z_other = torch.cat([z[b:], z[:b]])  # view 1 decodes with view 2's features and vice versa
        queries = det.initial_queries(encoded)
        owner = self.assign(targets[..., :2], queries)
        decoded = det.decode(encoded, self.fuse(queries, z_other, owner))

        losses: dict[str, Tensor] = {}
        crop_targets = None
        if self.rec_head is not None:
            crops = self.crop_features(batch["crops"])  # (B, 2, n, C)
            crop_targets = torch.cat([crops[:, 1], crops[:, 0]])  # target of view v = the other view's crop
        last_matched = None
        labels = torch.zeros(n, dtype=torch.long, device=self.device)  # every box is "object"
        target_list = [{"labels": labels, "boxes": t} for t in targets]
        # the encoder's prediction on its selected queries (``_enc``, two-stage variants), then every decoder layer
        for suffix, logits, pred_boxes, hidden in decoded.supervised_layers():
            last = suffix == ""
            indices = self.matcher(logits, pred_boxes, target_list)
            if last:
                self.log_health(queries, decoded.references, owner, indices)
            if self.weights["loc"] > 0:
                for name, value in self.loc_losses(logits, pred_boxes, targets, indices).items():
                    losses[f"loss_loc_{name}{suffix}"] = self.weights["loc"] * self.loc_weights[name] * value
            if self.rec_head is not None or (self.cld is not None and last):
                matched = self.matched_outputs(hidden, indices, n)
                if self.rec_head is not None:
                    rec = self.reconstruction_loss(self.rec_head(matched), crop_targets)
                    losses[f"loss_rec{suffix}"] = self.weights["rec"] * rec
                last_matched = matched
        if self.enc_head is not None:
            valid = (~encoded.mask).float()[..., None]
            pooled_memory = (encoded.memory * valid).sum(1) / valid.sum(1).clamp(min=1)
            losses["loss_enc"] = self.weights["enc"] * self.enc_head(pooled_memory[:b], pooled_memory[b:])
        if self.cld is not None:
            q1, q2 = last_matched[:b].flatten(0, 1), last_matched[b:].flatten(0, 1)
            losses["loss_contrast"] = self.weights["contrast"] * self.cld(q1, q2)
        return losses
