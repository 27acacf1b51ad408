"""The DisCo DETR paper's analysis metrics (Figures 4, 6 and 8), in float64 numpy.

* :func:`convergence_stability`: the paper's eq. 13. For query n with normalised reference point
  phi_n(t) recorded at times t = 0..I, d_n^i = ||phi_n(i+1) - phi_n(i)||_2 and
  S_n = ||phi_n(I) - phi_n(0)||_2; CS_n = S_n / sum_i d_n^i and CS = mean_n CS_n.
  A query whose total path is exactly 0 (it never moved) is perfectly stable: CS_n = 1.
  By the triangle inequality 0 <= CS_n <= 1; higher = straighter, more stable convergence.
* :func:`matched_centre_distances`: the L2 distance, in normalised image coordinates, between
  each matched query's initial reference point and its matched box's centre (Figure 6).
* :func:`cumulative_training_time`: wall-clock training seconds at each iteration, from
  detectron2's ``metrics.json`` (Figure 8).
"""
from __future__ import annotations

import numpy as np

__all__ = ["convergence_stability", "path_lengths", "matched_centre_distances", "cumulative_training_time"]


def path_lengths(trajectory) -> tuple[np.ndarray, np.ndarray]:
    """trajectory (T, ..., D): positions at T >= 2 recorded times (any leading query axes).

    Returns (net displacement S (...), total path length sum_i d^i (...)), float64.
    """
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim < 2:
        raise ValueError(f"trajectory must be (T, ..., D), got shape {traj.shape}")
    if traj.shape[0] < 2:
        raise ValueError(f"convergence stability needs at least 2 recorded times, got {traj.shape[0]}")
    steps = np.linalg.norm(np.diff(traj, axis=0), axis=-1)
    return np.linalg.norm(traj[-1] - traj[0], axis=-1), steps.sum(0)


def convergence_stability(trajectory) -> tuple[float, np.ndarray]:
    """Eq. 13. trajectory (T, ..., D): each query's reference point (normalised (x, y), or
    any D-dim point) at T >= 2 recorded times; the middle axes index queries (e.g. (T, N, 2),
    or (T, M, N, 2) for per-image references of M probe images).

    Returns (CS averaged over all queries, per-query CS_n with the middle axes' shape).
    A query with zero total path counts as CS_n = 1.
    """
    net, total = path_lengths(trajectory)
    moved = total > 0
    per_query = np.where(moved, net / np.where(moved, total, 1.0), 1.0)
    return float(per_query.mean()), per_query


def matched_centre_distances(reference, target_boxes, query_ids, target_ids) -> np.ndarray:
    """reference (N, 2|4) normalised (cx, cy[, w, h]) of the initial queries of one image;
    target_boxes (T, 4) normalised cxcywh; query_ids, target_ids (K,) the matching.

    Returns (K,) float64 L2 distances between reference centre and matched box centre.
    """
    ref = np.asarray(reference, dtype=np.float64)[:, :2]
    tgt = np.asarray(target_boxes, dtype=np.float64).reshape(-1, 4)[:, :2]
    q = np.asarray(query_ids, dtype=np.int64)
    t = np.asarray(target_ids, dtype=np.int64)
    if q.shape != t.shape:
        raise ValueError(f"query_ids {q.shape} and target_ids {t.shape} differ in length")
    return np.linalg.norm(ref[q] - tgt[t], axis=-1)


def cumulative_training_time(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Training seconds elapsed at each logged iteration of a ``metrics.json``.

    records: detectron2 ``JSONWriter`` lines (dicts with "iteration" and, on training lines,
    "time": the seconds per iteration, a median over the last log window). Duplicated
    iterations (a resumed run re-logs from its checkpoint) keep their last line.
    The time between logged iterations i_{k-1} < i_k is (i_k - i_{k-1}) * time_k (the
    first interval counts from iteration -1); evaluation time is not included.

    Returns (iterations (K,) int64, seconds (K,) float64), sorted by iteration.
    """
    by_iter: dict[int, float] = {}
    for r in records:
        if "time" in r and "iteration" in r:
            by_iter[int(r["iteration"])] = float(r["time"])
    iters = np.array(sorted(by_iter), dtype=np.int64)
    if len(iters) == 0:
        return iters, np.zeros(0)
    times = np.array([by_iter[i] for i in iters])
    gaps = np.diff(np.concatenate([[-1], iters]))
    return iters, np.cumsum(gaps * times)
