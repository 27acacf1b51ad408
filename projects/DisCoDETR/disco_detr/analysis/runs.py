"""Reading a run folder of ``tools/lazyconfig_train_net.py`` for the figures that need the model.

A run folder holds ``config.yaml`` (saved by :func:`disco_detr.engine.launch.setup`), checkpoints and
``last_checkpoint``, ``metrics.json`` and the analysis records. :func:`load_run` rebuilds the
model from the saved config and loads the last checkpoint; :func:`sample_inputs` gives images
with their objects: for a fine-tuning run the evaluation set (else the training set) with its
ground truth, for a pre-training run (a wrapper around the detector) one view of the
pre-training mapper with that view's proposal boxes. Attention maps come from
:mod:`disco_detr.modeling.layers.recording`. Only the detector contract is used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from torch import Tensor, nn
from torch.nn import functional as F

from ..checkpoint import DisCoCheckpointer
from ..modeling.detectors.base import EncoderOutput, unwrap_detector
from ..modeling.layers import normalized_cxcywh
from ..modeling.layers.recording import record_attention
from .hooks import evaluation_targets, inference_mode
from .records import last_checkpoint

__all__ = ["LoadedRun", "load_run", "sample_inputs", "attention_heatmap", "decoder_attention", "encoder_attention"]


@dataclass
class LoadedRun:
    """cfg: the run's LazyConfig; model: the built model (eval mode); detector: the DETR
    detector inside it; pretraining: True when the model wraps the detector (pre-training);
    checkpoint: the loaded file."""

    run_dir: str
    cfg: object
    model: nn.Module
    detector: nn.Module
    pretraining: bool
    checkpoint: str


def load_run(run_dir: str, device: str = "cpu") -> LoadedRun:
    """Build the model of ``<run_dir>/config.yaml`` on ``device`` and load its last checkpoint."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (tools/lazyconfig_train_net.py saves it into every run folder)")
    cfg = LazyConfig.load(path)
    cfg.train.device = device
    model = instantiate(cfg.model).to(device)
    ckpt = last_checkpoint(run_dir)
    DisCoCheckpointer(model, allow_pickle=cfg.train.get("checkpoint_allow_pickle", False)).load(ckpt)
    model.eval()
    det = unwrap_detector(model)
    return LoadedRun(run_dir, cfg, model, det, det is not model, ckpt)


def sample_inputs(run: LoadedRun, indices: list[int], seed: int = 0) -> list[dict]:
    """Images of the run's data with their objects.

    Returns dicts with "image" (3, H, W) uint8 RGB (resized as the run's mapper does),
    "targets" {"labels" (T,), "boxes" (T, 4) normalised cxcywh}, "title" and "kind"
    ("ground truth", or "proposals of view 1" / "of view" for paired / single-view pre-training).
    Indices beyond the dataset raise IndexError.
    """
    cfg = run.cfg
    torch.manual_seed(seed)
    np.random.seed(seed)
    if run.pretraining:
        dicts = instantiate(cfg.dataloader.train.dataset)
        mapper = instantiate(cfg.dataloader.train.mapper)
    else:
        split = cfg.dataloader.test if "test" in cfg.dataloader else cfg.dataloader.train
        dicts = instantiate(split.dataset)
        mapper = instantiate(cfg.dataloader.test.mapper) if "test" in cfg.dataloader else None
        gt = evaluation_targets(dicts)
    out = []
    for i in indices:
        if not 0 <= i < len(dicts):
            raise IndexError(f"image index {i} is outside the dataset of {len(dicts)} images")
        d = dicts[i]
        name = os.path.basename(d["file_name"])
        if run.pretraining:
            sample = mapper(d)
            paired = "views" in sample  # DisCo / Siamese DETR: two views; DETReg: one
            image = sample["views"][0] if paired else sample["image"]
            h, w = image.shape[-2:]
            boxes = torch.as_tensor(sample["boxes"][0] if paired else sample["boxes"], dtype=torch.float32)
            targets = {"labels": torch.zeros(len(boxes), dtype=torch.int64),
                       "boxes": normalized_cxcywh(boxes[None], [(h, w)])[0]}
            view = "view 1" if paired else "view"
            out.append({"image": image, "targets": targets, "title": f"{name} ({view})", "kind": f"proposals of {view}"})
        else:
            if mapper is None:
                raise ValueError("This run's config has no dataloader.test; cannot make fine-tuning inputs")
            image = mapper(d)["image"]
            labels, boxes = gt[d["image_id"]]
            out.append({"image": image, "targets": {"labels": labels, "boxes": boxes}, "title": name,
                        "kind": "ground truth"})
    return out


def attention_heatmap(weights: Tensor, encoded: EncoderOutput, index: int, padded_hw) -> np.ndarray:
    """Dense attention over the flattened multi-level keys -> one (H, W) map on the un-padded image.

    weights: (S,) attention of one query over the S = sum h_l * w_l keys of image ``index``;
    each level is upsampled (bilinear) over the padded image ``padded_hw`` and the levels summed,
    then cropped to the image's un-padded size."""
    hp, wp = padded_hw
    h, w = encoded.image_sizes[index]
    total = torch.zeros(hp, wp)
    for (lh, lw), start in zip(encoded.spatial_shapes.tolist(), encoded.level_start_index.tolist()):
        level = weights[start:start + lh * lw].float().cpu().view(1, 1, lh, lw)
        total += F.interpolate(level, size=(hp, wp), mode="bilinear", align_corners=False)[0, 0]
    return total[:h, :w].numpy()


def deformable_heatmap(locations: Tensor, weights: Tensor, encoded: EncoderOutput, index: int,
                       padded_hw, cell: int = 4) -> np.ndarray:
    """Deformable sampling points -> (H, W) map: each point's attention weight added to the
    ``cell``-pixel grid cell it samples. locations (..., 2) normalised (x, y) over the padded
    map, weights (...) matching."""
    hp, wp = padded_hw
    h, w = encoded.image_sizes[index]
    gh, gw = max(1, hp // cell), max(1, wp // cell)
    loc = locations.reshape(-1, 2).float().cpu().numpy()
    wts = weights.reshape(-1).float().cpu().numpy()
    xs = np.clip((loc[:, 0] * gw).astype(int), 0, gw - 1)
    ys = np.clip((loc[:, 1] * gh).astype(int), 0, gh - 1)
    grid = np.zeros((gh, gw))
    np.add.at(grid, (ys, xs), wts)
    up = F.interpolate(torch.from_numpy(grid)[None, None].float(), size=(hp, wp), mode="nearest")[0, 0]
    return up[:h, :w].numpy()


def _layer_records(records, sites):
    return [r for r in records if r.site in sites]


def decoder_attention(run: LoadedRun, image: Tensor, top_k: int = 4, queries: list[int] | None = None,
                      score_threshold: float = 0.0) -> list[dict]:
    """Detections of one image and the last decoder layer's cross-attention of their queries.

    image: (3, H, W) uint8. Queries: ``queries`` if given, else the ``top_k`` queries by best
    class score (sigmoid; for a pre-training run p(object) of its softmax object/no-object head).
    Returns dicts with "query", "box" (4,) xyxy pixels of the resized
    image, "class_id", "score", "attention" (H, W) (mean over heads)."""
    det = run.detector
    with inference_mode(det):
        images = det.preprocess_images([image])
        encoded = det.encode(images)
        init = det.initial_queries(encoded)
        with record_attention(det) as records:
            decoded = det.decode(encoded, init)
    recs = _layer_records(records, ("cross_attn", "deformable"))
    if not recs:
        raise RuntimeError(f"{type(det).__name__}'s decoder emitted no cross-attention records "
                           "(see disco_detr/modeling/layers/recording.py)")
    last = recs[-1]
    logits = decoded.logits[-1, 0].float()
    if run.pretraining and logits.shape[-1] == 2:  # DisCo / Siamese heads: softmax over {object, no object}
        probs = logits.softmax(-1)[:, :1]
    else:  # fine-tuning and DETReg heads: sigmoid per class (focal loss), as DETRDetector.inference does
        probs = logits.sigmoid()
    scores, classes = probs.max(-1)
    if queries is None:
        order = scores.argsort(descending=True)
        queries = [int(q) for q in order[:top_k] if scores[q] >= score_threshold] or [int(order[0])]
    h, w = encoded.image_sizes[0]
    hw = tuple(images.tensor.shape[-2:])
    out = []
    for q in queries:
        if not 0 <= q < probs.shape[0]:
            raise IndexError(f"query {q} is outside 0..{probs.shape[0] - 1}")
        if last.site == "cross_attn":
            heat = attention_heatmap(last.tensors["weights"][0, :, q].mean(0), encoded, 0, hw)
        else:
            heat = deformable_heatmap(last.tensors["locations"][0, q], last.tensors["weights"][0, q], encoded, 0, hw)
        cx, cy, bw, bh = decoded.boxes[-1, 0, q].float().cpu().tolist()
        box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
        out.append({"query": q, "box": box, "class_id": int(classes[q]), "score": float(scores[q]), "attention": heat})
    return out


def encoder_attention(run: LoadedRun, image: Tensor) -> list[np.ndarray]:
    """Per encoder layer, the (H, W) map of attention each location receives, averaged over
    heads and over the valid (non-padding) query locations. image: (3, H, W) uint8."""
    det = run.detector
    with inference_mode(det):
        images = det.preprocess_images([image])
        with record_attention(det) as records:
            encoded = det.encode(images)
    hw = tuple(images.tensor.shape[-2:])
    valid = ~encoded.mask[0].cpu()
    maps = []
    for r in _layer_records(records, ("self_attn", "deformable")):
        if r.site == "self_attn":
            received = r.tensors["weights"][0].float().cpu().mean(0)[valid].mean(0)  # (S,)
            maps.append(attention_heatmap(received, encoded, 0, hw))
        else:
            loc, wts = r.tensors["locations"][0].cpu(), r.tensors["weights"][0].cpu()
            maps.append(deformable_heatmap(loc[valid], wts[valid], encoded, 0, hw))
    if not maps:
        raise RuntimeError(f"{type(det).__name__}'s encoder emitted no attention records "
                           "(see disco_detr/modeling/layers/recording.py)")
    return maps
