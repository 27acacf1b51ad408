"""Trainer hooks that record the paper's analysis while a run trains (``train.analysis``).

``train.analysis`` (configs/common/train.py; everything off by default)::

    reference_period  K > 0: record every query's initial reference point after every K
                      iterations, plus the initial (iteration 0) and the final model; 0 = off.
    probe_images      M: for detectors whose references come from the image
                      (``references_depend_on_image``: DINO, RT-DETR) the references of M
                      training images, taken evenly spaced from the training set's dicts
                      (deterministic); learned-query detectors record one image's (= all images').
    probe_size        (short side, max long side) the probe images are resized to.
    query_distance    True: at every evaluation (the same iterations as detectron2's EvalHook),
                      the mean distance between each matched query's initial reference point and
                      its matched ground-truth box centre on the evaluation set (matching of the
                      last decoder layer, the detector's own criterion matcher); written to
                      detectron2's EventStorage as ``analysis/query_distance`` (metrics.json,
                      TensorBoard) and to ``analysis/distance.json``.

The records' format is in :mod:`disco_detr.analysis.records`. Both hooks read the detector
only through the detector contract (``modeling/detectors/base.py``).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.engine import HookBase
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..modeling.detectors.base import unwrap_detector
from ..modeling.layers import normalized_cxcywh
from .metrics import matched_centre_distances
from .records import DistanceStore, ReferenceStore

__all__ = ["ReferenceRecorder", "QueryDistanceHook", "build_analysis_hooks", "load_probe_images",
           "evaluation_targets", "query_object_distances", "matcher_of", "inference_mode"]

logger = logging.getLogger(__name__)

ANALYSIS_KEYS = {"reference_period", "probe_images", "probe_size", "query_distance"}


@contextmanager
def inference_mode(module: torch.nn.Module):
    """Eval mode and no gradient inside the block; every sub-module's own mode restored after
    (a frozen backbone that a detector keeps in eval mode stays so)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, mode in modes.items():
            m.training = mode


def load_probe_images(dataset_dicts: list[dict], count: int, size) -> tuple[list[str], list[torch.Tensor]]:
    """``count`` images evenly spaced over ``dataset_dicts`` (first and last included),
    resized to short side ``size[0]`` (long side at most ``size[1]``).

    Returns (file names, (3, H, W) uint8 RGB tensors)."""
    if not dataset_dicts:
        raise ValueError("The training set is empty; no probe images for the reference record")
    count = max(1, min(int(count), len(dataset_dicts)))
    ids = np.unique(np.round(np.linspace(0, len(dataset_dicts) - 1, count)).astype(int))
    resize = T.ResizeShortestEdge(int(size[0]), int(size[1]))
    names, images = [], []
    for i in ids:
        name = dataset_dicts[i]["file_name"]
        try:
            image = read_image(name, format="RGB")
        except Exception as e:
            raise OSError(f"Probe image {name}: cannot be read ({e})") from e
        image = resize.get_transform(image).apply_image(image)
        names.append(name)
        images.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))))
    return names, images


class ReferenceRecorder(HookBase):
    """Records every query's initial reference point (main process only).

    At iteration s (optimizer steps completed) for s = 0, K, 2K, ... and s = max_iter, the
    detector encodes the probe images (eval mode, no gradient) and its ``initial_queries``
    give references (M, N, D), stored by :class:`~.records.ReferenceStore`. A resumed run
    deletes the records after its start iteration first, so the record has no gaps and no
    duplicates.
    """

    def __init__(self, output_dir: str, period: int, probe_dicts_fn, probe_images: int, probe_size):
        self.store = ReferenceStore(output_dir)
        self.period = int(period)
        self._probe_dicts_fn = probe_dicts_fn
        self.num_probe = int(probe_images)
        self.probe_size = tuple(probe_size)
        self._probe = None

    def _probe_images(self, det) -> list[torch.Tensor]:
        if self._probe is None:
            count = self.num_probe if det.references_depend_on_image else 1
            names, images = load_probe_images(self._probe_dicts_fn(), count, self.probe_size)
            self._probe = images
            self.store.write_meta({
                "detector": type(det).__name__, "references_depend_on_image": bool(det.references_depend_on_image),
                "num_queries": int(det.num_queries), "probe_images": names,
                "probe_image_sizes": [list(x.shape[-2:]) for x in images], "period": self.period,
            })
        return self._probe

    def record(self, iteration: int) -> None:
        det = unwrap_detector(self.trainer.model)
        images = self._probe_images(det)
        with inference_mode(det):
            refs = []
            for image in images:  # one at a time: no padding, and memory stays flat
                encoded = det.encode(det.preprocess_images([image]))
                refs.append(det.initial_queries(encoded).reference[0].float().cpu().numpy())
        self.store.write(iteration, np.stack(refs))

    def before_train(self):
        if not comm.is_main_process():
            return
        start = self.trainer.start_iter
        gone = self.store.prune_after(start)
        if gone:
            logger.info("Reference record: dropped %d record(s) after iteration %d (resumed run)", len(gone), start)
        if start == 0:  # a resumed run already holds the record of its start, or it is not a record point
            self.record(0)

    def after_step(self):
        if not comm.is_main_process():
            return
        done = self.trainer.iter + 1
        if done % self.period == 0 or done == self.trainer.max_iter:
            self.record(done)


def matcher_of(model: torch.nn.Module):
    """The matcher of the detector's criterion, else the pre-training wrapper's ``matcher``."""
    det = unwrap_detector(model)
    if getattr(det, "criterion", None) is not None and hasattr(det.criterion, "matcher"):
        return det.criterion.matcher
    outer = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if hasattr(outer, "matcher"):
        return outer.matcher
    raise ValueError(f"{type(det).__name__} has no criterion with a matcher (and no wrapper matcher)")


def evaluation_targets(dataset_dicts: list[dict]) -> dict:
    """image_id -> (labels (T,) int64, boxes (T, 4) normalised cxcywh) from dataset dicts with
    annotations (boxes in the original image's pixels, any BoxMode). Crowd boxes are left out."""
    out = {}
    for d in dataset_dicts:
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        xyxy = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        boxes = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
        out[d["image_id"]] = (torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                              normalized_cxcywh(boxes[None], [(d["height"], d["width"])])[0])
    return out


def query_object_distances(model: torch.nn.Module, batched_inputs: list[dict], targets: list[dict],
                           matcher=None) -> tuple[list[np.ndarray], list]:
    """For a batch of model inputs ("image" (3, H, W) uint8) and their targets ({"labels" (T,),
    "boxes" (T, 4) normalised cxcywh}), match the last decoder layer's predictions to the
    targets and measure each matched query's initial-reference -> box-centre distance.

    Returns (per image: (K,) float64 distances, per image: (query_ids, target_ids),
    (B, N, 2|4) float numpy initial references, normalised)."""
    det = unwrap_detector(model)
    matcher = matcher or matcher_of(model)
    with inference_mode(det):
        images = det.preprocess_images([x["image"] for x in batched_inputs])
        encoded = det.encode(images)
        queries = det.initial_queries(encoded)
        decoded = det.decode(encoded, queries)
        targets = [{k: v.to(decoded.logits.device) for k, v in t.items()} for t in targets]
        indices = matcher(decoded.logits[-1], decoded.boxes[-1], targets)
    distances = [matched_centre_distances(queries.reference[b].float().cpu(), t["boxes"].cpu(), q, ti)
                 for b, (t, (q, ti)) in enumerate(zip(targets, indices))]
    return distances, indices, queries.reference.float().cpu().numpy()


class QueryDistanceHook(HookBase):
    """At every evaluation (same schedule as detectron2's ``EvalHook``: every ``eval_period``
    iterations and after the last), the mean matched query -> object distance on the
    evaluation set, gathered over processes; to EventStorage and ``analysis/distance.json``."""

    def __init__(self, output_dir: str, eval_period: int, loader_fn, dicts_fn):
        self.store = DistanceStore(output_dir)
        self.period = int(eval_period)
        self._loader_fn = loader_fn
        self._dicts_fn = dicts_fn
        self._loader = None
        self._targets = None

    def compute(self) -> tuple[float, int, int]:
        if self._loader is None:
            self._targets = evaluation_targets(self._dicts_fn())
            self._loader = self._loader_fn()
        model = self.trainer.model
        matcher = matcher_of(model)
        total, count, images = 0.0, 0, 0
        for batch in self._loader:
            missing = [x.get("image_id") for x in batch if x.get("image_id") not in self._targets]
            if missing:
                raise KeyError(f"Evaluation images {missing[:3]} have no annotations in the test dataset dicts")
            targets = [{"labels": self._targets[x["image_id"]][0], "boxes": self._targets[x["image_id"]][1]}
                       for x in batch]
            distances, _, _ = query_object_distances(model, batch, targets, matcher)
            for d in distances:
                total += float(d.sum())
                count += len(d)
            images += len(batch)
        gathered = comm.all_gather((total, count, images))
        total, count, images = (sum(g[i] for g in gathered) for i in range(3))
        return (total / count if count else float("nan")), count, images

    def _run(self, iteration: int) -> None:
        distance, count, images = self.compute()
        self.trainer.storage.put_scalar("analysis/query_distance", distance, smoothing_hint=False)
        if comm.is_main_process():
            self.store.write(iteration, distance, count, images)
            logger.info("Query -> object distance at iteration %d: %.4f (%d matches, %d images)",
                        iteration, distance, count, images)

    def before_train(self):
        if comm.is_main_process():
            self.store.prune_after(self.trainer.start_iter)

    def after_step(self):
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done != self.trainer.max_iter:
            self._run(done)

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:  # as EvalHook: not after a failed run
            self._run(self.trainer.max_iter)


def build_analysis_hooks(cfg) -> list[HookBase]:
    """The hooks ``cfg.train.analysis`` asks for (none when it is absent or all off)."""
    analysis = cfg.train.get("analysis", None)
    if not analysis:
        return []
    unknown = sorted(set(analysis.keys()) - ANALYSIS_KEYS)
    if unknown:
        raise KeyError(f"Unknown key(s) in cfg.train.analysis: {', '.join(unknown)}. "
                       f"Known keys: {', '.join(sorted(ANALYSIS_KEYS))}")
    out = []
    period = int(analysis.get("reference_period", 0))
    if period < 0:
        raise ValueError(f"train.analysis.reference_period must be >= 0, got {period}")
    if period > 0:
        out.append(ReferenceRecorder(cfg.train.output_dir, period, lambda: instantiate(cfg.dataloader.train.dataset),
                                     analysis.get("probe_images", 8), analysis.get("probe_size", (800, 1333))))
    if analysis.get("query_distance", False):
        if "test" not in cfg.dataloader:
            raise ValueError("train.analysis.query_distance needs an evaluation set (cfg.dataloader.test); "
                             "pre-training configs have none")
        out.append(QueryDistanceHook(cfg.train.output_dir, cfg.train.eval_period,
                                     lambda: instantiate(cfg.dataloader.test),
                                     lambda: instantiate(cfg.dataloader.test.dataset)))
    return out
