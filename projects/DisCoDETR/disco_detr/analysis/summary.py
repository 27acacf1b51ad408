"""Summaries of a run folder (``metrics.json`` and the analysis records) for the studies and
``tools/analyze.py``: the AP curve over training time, the last pre-training health log, and one row of
CS / distance / AP / health per run."""
from __future__ import annotations

import os

import numpy as np

from .metrics import convergence_stability, cumulative_training_time
from .records import DistanceStore, ReferenceStore, read_metrics_json

__all__ = ["HEALTH_PREFIX", "ap_curve", "pretrain_health", "summarize"]


def ap_curve(path):
    """(seconds (K,), AP (K,), iterations (K,)) at the evaluations of a run's metrics.json; ValueError when it
    has no evaluation or no training time."""
    records = read_metrics_json(path)
    iters, secs = cumulative_training_time(records)
    ap = {}
    for r in records:
        if "bbox/AP" in r:
            ap[int(r["iteration"])] = float(r["bbox/AP"])
    if not ap:
        raise ValueError(f"{path}/metrics.json has no bbox/AP (no evaluation ran)")
    if len(iters) == 0:
        raise ValueError(f"{path}/metrics.json has no training 'time' entries")
    ap_iters = np.array(sorted(ap))
    return np.interp(ap_iters, iters, secs), np.array([ap[i] for i in ap_iters]), ap_iters


HEALTH_PREFIX = "pretrain_health/"


def pretrain_health(path: str) -> dict:
    """{metric: value} of the last pre-training health log in a run's metrics.json, with the
    iteration it was logged at as "iteration" ({} for a run that logged none)."""
    if not os.path.exists(os.path.join(path, "metrics.json")):
        return {}
    last = {}
    for record in read_metrics_json(path):
        values = {k[len(HEALTH_PREFIX):]: v for k, v in record.items() if k.startswith(HEALTH_PREFIX)}
        if values:
            last = {**values, "iteration": int(record["iteration"])}
    return last


def summarize(path: str) -> dict:
    """{"run", "cs", "distance", "AP", "health"} of one run folder: CS (eq. 13) over its reference
    records, its last query -> object distance, its last bbox AP (None where the run has no such
    record) and its last pre-training health metrics ({} for a fine-tuning run)."""
    row = {"run": path, "cs": None, "distance": None, "AP": None, "health": pretrain_health(path)}
    store = ReferenceStore(path)
    if store.iterations():
        iters, refs = store.load()
        if len(iters) >= 2:
            row["cs"] = convergence_stability(refs[..., :2].reshape(len(iters), -1, 2))[0]
    records = DistanceStore(path).records()
    if records:
        row["distance"] = records[-1]["distance"]
    if os.path.exists(os.path.join(path, "metrics.json")):
        try:
            row["AP"] = float(ap_curve(path)[1][-1])
        except ValueError:
            pass
    return row
