"""The analysis records a run writes into its output folder, and readers for run folders.

Format (``<output_dir>/analysis/``)::

    references/meta.json        {"format": "disco_detr.references/1", "detector": class name,
                                 "references_depend_on_image": bool, "num_queries": N,
                                 "reference_dim": 2 or 4, "probe_images": [file names, M of them],
                                 "probe_image_sizes": [[h, w], ...] (resized, un-padded)}
    references/iter_XXXXXXXX.npz  one file per record (XXXXXXXX = zero-padded iteration):
                                 "references" float32 (M, N, D): every query's initial reference,
                                   normalised (cx, cy) (D = 2) or (cx, cy, w, h) (D = 4) by each
                                   probe image's un-padded size; M = 1 when the references do not
                                   depend on the image (learned queries);
                                 "iteration" int64: optimizer steps completed when recorded
                                   (0 = the initial model, max_iter = the final one).
    distance.json               {"format": "disco_detr.query_distance/1", "records": [{"iteration",
                                 "distance" (mean L2, normalised image units), "num_matched",
                                 "num_images"}, ...]} sorted by iteration, one entry per iteration.

One file per record (and one entry per iteration) makes a record idempotent: recording an
iteration again overwrites it. A resumed run first deletes the records after the iteration
it resumes from (they belong to the killed run's abandoned future) and re-records them.
"""
from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

__all__ = ["ReferenceStore", "DistanceStore", "read_metrics_json", "analysis_dir", "last_checkpoint"]

REFERENCES_FORMAT = "disco_detr.references/1"
DISTANCE_FORMAT = "disco_detr.query_distance/1"
_RECORD = re.compile(r"iter_(\d+)\.npz$")


def analysis_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "analysis")


def _atomic_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class ReferenceStore:
    """``<run>/analysis/references``: reference points of every query at recorded iterations."""

    def __init__(self, run_dir: str):
        self.root = os.path.join(analysis_dir(run_dir), "references")

    def _path(self, iteration: int) -> str:
        return os.path.join(self.root, f"iter_{iteration:08d}.npz")

    def write_meta(self, meta: dict) -> None:
        os.makedirs(self.root, exist_ok=True)
        _atomic_json(os.path.join(self.root, "meta.json"), {"format": REFERENCES_FORMAT, **meta})

    def meta(self) -> dict:
        path = os.path.join(self.root, "meta.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: this run recorded no reference points "
                                    "(train with train.analysis.reference_period > 0)")
        with open(path) as f:
            meta = json.load(f)
        if meta.get("format") != REFERENCES_FORMAT:
            raise ValueError(f"{path}: unknown format {meta.get('format')!r} (expected {REFERENCES_FORMAT})")
        return meta

    def write(self, iteration: int, references: np.ndarray) -> None:
        """references (M, N, D) normalised; overwrites an earlier record of the same iteration."""
        os.makedirs(self.root, exist_ok=True)
        tmp = self._path(iteration) + ".tmp.npz"
        np.savez(tmp, references=np.asarray(references, dtype=np.float32), iteration=np.int64(iteration))
        os.replace(tmp, self._path(iteration))

    def iterations(self) -> list[int]:
        return sorted(int(_RECORD.search(p).group(1)) for p in glob.glob(os.path.join(self.root, "iter_*.npz"))
                      if _RECORD.search(p))

    def prune_after(self, iteration: int) -> list[int]:
        """Delete the records of iterations > ``iteration``; returns the deleted iterations."""
        gone = [i for i in self.iterations() if i > iteration]
        for i in gone:
            os.remove(self._path(i))
        return gone

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (iterations (T,) int64, references (T, M, N, D) float32), by iteration."""
        iters = self.iterations()
        if not iters:
            raise FileNotFoundError(f"No reference records (iter_*.npz) in {self.root}")
        arrays = []
        for i in iters:
            with np.load(self._path(i)) as data:
                arrays.append(data["references"])
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"{self.root}: records have different shapes {sorted(shapes)}")
        return np.asarray(iters, dtype=np.int64), np.stack(arrays)


class DistanceStore:
    """``<run>/analysis/distance.json``: query -> matched object distance at every evaluation."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(analysis_dir(run_dir), "distance.json")

    def records(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            data = json.load(f)
        if data.get("format") != DISTANCE_FORMAT:
            raise ValueError(f"{self.path}: unknown format {data.get('format')!r} (expected {DISTANCE_FORMAT})")
        return data["records"]

    def _save(self, records: list[dict]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        _atomic_json(self.path, {"format": DISTANCE_FORMAT, "records": sorted(records, key=lambda r: r["iteration"])})

    def write(self, iteration: int, distance: float, num_matched: int, num_images: int) -> None:
        records = [r for r in self.records() if r["iteration"] != iteration]
        records.append({"iteration": int(iteration), "distance": float(distance), "num_matched": int(num_matched),
                        "num_images": int(num_images)})
        self._save(records)

    def prune_after(self, iteration: int) -> None:
        records = self.records()
        kept = [r for r in records if r["iteration"] <= iteration]
        if len(kept) != len(records):
            self._save(kept)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(iterations (K,), mean distances (K,)); raises if the run has none."""
        records = self.records()
        if not records:
            raise FileNotFoundError(f"{self.path} does not exist or is empty: this run recorded no distances "
                                    "(train with train.analysis.query_distance=True and evaluations)")
        return (np.array([r["iteration"] for r in records], dtype=np.int64),
                np.array([r["distance"] for r in records], dtype=np.float64))


def read_metrics_json(run_dir: str) -> list[dict]:
    """The lines of detectron2's ``<run>/metrics.json`` (one JSON object per line)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (is {run_dir!r} a tools/lazyconfig_train_net.py run folder?)")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e})") from e
    return out


def last_checkpoint(run_dir: str) -> str:
    """The checkpoint named in ``<run>/last_checkpoint`` (detectron2's Checkpointer), else
    ``model_final.pth``, else the highest ``model_*.pth``."""
    pointer = os.path.join(run_dir, "last_checkpoint")
    if os.path.exists(pointer):
        with open(pointer) as f:
            name = f.read().strip()
        if os.path.exists(os.path.join(run_dir, name)):
            return os.path.join(run_dir, name)
    final = os.path.join(run_dir, "model_final.pth")
    if os.path.exists(final):
        return final
    found = sorted(glob.glob(os.path.join(run_dir, "model_*.pth")))
    if not found:
        raise FileNotFoundError(f"No checkpoint (last_checkpoint, model_final.pth, model_*.pth) in {run_dir}")
    return found[-1]
