"""DMOQF query-to-proposal assignment (DisCo DETR, AAAI 2026: the initial and full matching of its
distance-aware multi-view object query fusion) and the Siamese DETR grouping (Chen et al., CVPR 2023).

Conventions
-----------
* ``centres``: proposal centres P, shape (B, n, 2) or (n, 2), normalised (x, y) by the un-padded
  view size. They may lie outside [0, 1] (a box cut by the crop keeps its true centre).
* ``ref_points``: query reference points R, shape (B, N, 2), or (N, 2) shared by the batch,
  normalised (x, y) in [0, 1].
* Cost: ``C[k, q] = |P_k - R_q|_1`` (L1 distance).
* Needs ``1 <= n <= N``. Any device and float dtype; no gradient flows (inputs are detached). The
  solvers run on the CPU (the problem is tiny), results are int64 on the input's device.

Definition (two stages, per image)
----------------------------------
1. Initial matching: a minimum-cost one-to-one matching between the n proposals and the N queries
   (scipy's Hungarian on the n x N float64 costs); proposal k gets query ``first[k]``.
2. Full matching: the ``m = N - n`` queries left over are distributed over the proposals, proposal k
   receiving ``c_k`` of them, with minimum total cost. Remainder rule ("spread the remainder"):
   ``c_k = (N - n) // n + (1 if k < (N - n) % n else 0)``, i.e. the first ``(N - n) % n`` proposals in
   proposal order (the order of ``centres``, i.e. proposal score order) take one extra query. Proposal k
   therefore owns ``1 + c_k`` queries in all (see :func:`queries_per_proposal`).

:func:`naive_assign_queries` is the reference (tests, benchmark): stage 2 as one m x m Hungarian problem
on proposal k's cost row replicated ``c_k`` times. :func:`assign_queries_to_proposals` is the solver.

Stage 2 of the solver
---------------------
A transportation problem (n supplies of capacity ``c_k``, m unit demands) solved exactly by successive
shortest paths over the n proposal nodes (:func:`_ssp_image`, O(n^2) per unit of excess plus O(n * owned)
per changed row; compiled by numba when it is installed, else the same code runs as Python, slower):

* Integer costs: coordinates are rounded to a grid of 2^-34 of the image's largest coordinate magnitude
  (at least 1), so costs, potentials and reduced costs are exact int64 and ties are exact; the total
  differs from the float64 optimum by at most ~m * 2^-33.
* Start: every leftover query at its nearest proposal; potentials 0. Invariant: every query sits at a
  proposal minimising ``C[k, q] - pot[k]``. The cheapest move of one query from k to k',
  ``G[k, k'] = min_{q owned by k} (C[k', q] - C[k, q])``, has reduced weight ``G + pot[k] - pot[k'] >= 0``.
* A round: Dijkstra from all over-full proposals to the first under-full one settled; ``pot`` rises by
  the distances (capped at the target's) so the path is tight; one query moves along every path edge.
  When no proposal is over-full the capacities hold, and the invariant proves the result optimal.

Ties are broken by a fixed rule, the same compiled or not and on every machine (integer arithmetic):
the nearest proposal at the start is the lowest-indexed one; Dijkstra settles the lowest index among equal
distances and keeps the first predecessor found; the query moved along an edge k -> k' is the first
minimiser of ``C[k', q] - C[k, q]`` in k's member list, which starts in ascending query order, appends a
query that arrives and fills a departing query's slot with the list's last query.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

try:                                    # compiles the stage-2 solver; without it the same code runs as Python
    import numba
except ImportError:                     # pragma: no cover - tests run the interpreted code via .py_func
    numba = None

__all__ = [
    "QueryAssignment",
    "assign_queries_to_proposals",
    "fixed_group_assignment",
    "naive_assign_queries",
    "queries_per_proposal",
]


class QueryAssignment(NamedTuple):
    """Result of the DMOQF assignment.

    owner: (B, N) int64, the proposal index of every query (each query has exactly one owner, proposal k
        owns ``1 + c_k`` queries). ``first``: (B, n) int64, the query each proposal got in stage 1. Both
        lose the batch dimension when the centres were given as (n, 2).
    """

    owner: Tensor
    first: Tensor


def _extra_counts(num_queries: int, num_proposals: int) -> np.ndarray:
    """Stage-2 capacities c_k (n,) int64: (N - n) // n each, +1 for the first (N - n) % n proposals."""
    if num_proposals < 1 or num_queries < num_proposals:
        raise ValueError(f"Need 1 <= num_proposals <= num_queries, got n={num_proposals}, N={num_queries}")
    rest = num_queries - num_proposals
    counts = np.full(num_proposals, rest // num_proposals, dtype=np.int64)
    counts[: rest % num_proposals] += 1
    return counts


def queries_per_proposal(num_queries: int, num_proposals: int) -> Tensor:
    """Number of queries each proposal owns, ``1 + c_k``: (n,) int64, summing to N.

    Equals ``N // n`` plus one for the first ``N % n`` proposals (same as the remainder rule of stage 2,
    since ``(N - n) % n == N % n``).
    """
    return torch.from_numpy(_extra_counts(num_queries, num_proposals) + 1)


def fixed_group_assignment(num_queries: int, num_proposals: int) -> Tensor:
    """Siamese DETR's baseline grouping (DMOQF off): (N,) int64, query i -> proposal of its block.

    The queries are cut, in order, into n contiguous blocks whose sizes are :func:`queries_per_proposal`
    (``N // n``, the first ``N % n`` blocks one longer), the same remainder rule as the DMOQF assignment.
    When n divides N this is exactly ``i // (N / n)``: for N = 300, n = 10 query 29 -> 0, 30 -> 1,
    299 -> 9. For N = 23, n = 5 the blocks are 5, 5, 5, 4, 4 queries long.
    """
    sizes = queries_per_proposal(num_queries, num_proposals)
    return torch.repeat_interleave(torch.arange(num_proposals, dtype=torch.int64), sizes)


def _points(centres: Tensor, ref_points: Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated float64 CPU arrays P (B, n, 2), R (B, N, 2) and whether the input was unbatched."""
    if centres.dim() not in (2, 3) or centres.shape[-1] != 2:
        raise ValueError(f"centres must be (B, n, 2) or (n, 2), got {tuple(centres.shape)}")
    if ref_points.dim() not in (2, 3) or ref_points.shape[-1] != 2:
        raise ValueError(f"ref_points must be (B, N, 2) or (N, 2), got {tuple(ref_points.shape)}")
    unbatched = centres.dim() == 2
    if unbatched:
        if ref_points.dim() == 3:
            raise ValueError("Unbatched centres (n, 2) need unbatched ref_points (N, 2)")
        centres = centres[None]
    if ref_points.dim() == 2:
        ref_points = ref_points[None].expand(centres.shape[0], -1, -1)
    if ref_points.shape[0] != centres.shape[0]:
        raise ValueError(f"Batch sizes differ: centres {centres.shape[0]}, ref_points {ref_points.shape[0]}")
    n, total = centres.shape[1], ref_points.shape[1]
    if n < 1 or total < n:
        raise ValueError(f"Need 1 <= n <= N (one query per proposal in stage 1), got n={n}, N={total}")
    p = centres.detach().to(device="cpu", dtype=torch.float64).numpy()
    r = ref_points.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not (np.isfinite(p).all() and np.isfinite(r).all()):
        raise FloatingPointError("Proposal centres or reference points contain NaN/inf.")
    return p, r, unbatched


def _l1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """L1 cost (B, n, N) between centres (B, n, 2) and reference points (B, N, 2)."""
    px, py = np.ascontiguousarray(p[..., 0])[:, :, None], np.ascontiguousarray(p[..., 1])[:, :, None]
    rx, ry = np.ascontiguousarray(r[..., 0])[:, None, :], np.ascontiguousarray(r[..., 1])[:, None, :]
    cost = np.abs(px - rx)
    cost += np.abs(py - ry)
    return cost


def _stage1(cost: np.ndarray) -> np.ndarray:
    """Hungarian matching of the n proposals (rows) to N queries, per image: (B, n) int64 query ids."""
    first = np.empty(cost.shape[:2], dtype=np.int64)
    for b in range(cost.shape[0]):
        rows, cols = linear_sum_assignment(cost[b])
        first[b, rows] = cols
    return first


def _leftover(first: np.ndarray, total: int) -> np.ndarray:
    """Queries not matched in stage 1, ascending: (B, N - n) int64."""
    free = np.ones((first.shape[0], total), dtype=bool)
    np.put_along_axis(free, first, False, axis=1)
    return np.nonzero(free)[1].reshape(first.shape[0], -1)


def _finish(first: np.ndarray, rest: np.ndarray, rest_owner: np.ndarray, total: int, device: torch.device,
            unbatched: bool) -> QueryAssignment:
    batch, n = first.shape
    owner = np.empty((batch, total), dtype=np.int64)
    np.put_along_axis(owner, first, np.broadcast_to(np.arange(n), first.shape), axis=1)
    np.put_along_axis(owner, rest, rest_owner, axis=1)
    owner_t, first_t = torch.from_numpy(owner).to(device), torch.from_numpy(first).to(device)
    if unbatched:
        owner_t, first_t = owner_t[0], first_t[0]
    return QueryAssignment(owner_t, first_t)


@torch.no_grad()
def naive_assign_queries(centres: Tensor, ref_points: Tensor) -> QueryAssignment:
    """The reference (tests and tools/benchmarks/benchmark_matching.py, not training): two scipy Hungarian
    solves per image, looping over the batch.

    Stage 2 replicates proposal k ``c_k`` times (rows) against the N - n leftover queries (columns) and
    solves the square problem. Shapes and conventions: see the module docstring.
    """
    centres_np, refs_np, unbatched = _points(centres, ref_points)
    cost = _l1(centres_np, refs_np)
    batch, n, total = cost.shape
    first = _stage1(cost)
    rest = _leftover(first, total)
    rows_to_proposal = np.repeat(np.arange(n), _extra_counts(total, n))
    rest_owner = np.empty(rest.shape, dtype=np.int64)
    for b in range(batch):
        replicated = cost[b][rows_to_proposal][:, rest[b]]
        rows, cols = linear_sum_assignment(replicated)
        rest_owner[b, cols] = rows_to_proposal[rows]
    return _finish(first, rest, rest_owner, total, centres.device, unbatched)


# Stage-2 solver ------------------------------------------------------------------------------------------------------

_GRID_BITS = 34          # coordinates are rounded to 2^-34 of their range: costs are integers below 2^37
_INF = np.int64(1 << 62)


def _grid_scale(centres: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Per-image power of two (B,) mapping coordinates to integers of at most 2^_GRID_BITS.

    Chosen per image (from its largest coordinate magnitude, at least 1), so an image's result does not
    depend on the rest of the batch.
    """
    largest = np.maximum(np.abs(centres).max(axis=(1, 2)), np.abs(refs).max(axis=(1, 2)))
    exponent = np.ceil(np.log2(np.maximum(largest, 1.0)))
    return np.exp2(_GRID_BITS - exponent)


def _cheapest_moves_row(cost, members, size, k, gain, arg):
    """Recompute row k of the cheapest single moves: gain[k, k'] = min_{q owned by k} C[k', q] - C[k, q].

    The queries owned by k are members[k, :size[k]]; arg[k, k'] receives the minimising query (-1 and _INF when k
    owns nothing).
    """
    n = cost.shape[0]
    for j in range(n):
        gain[k, j] = _INF
        arg[k, j] = -1
    for i in range(size[k]):
        q = members[k, i]
        base = cost[k, q]
        for j in range(n):
            if j != k:
                value = cost[j, q] - base
                if value < gain[k, j]:
                    gain[k, j] = value
                    arg[k, j] = q


def _ssp_image(cost, capacity, own):
    """Exact transportation for one image (successive shortest paths, one unit per Dijkstra).

    cost (n, m) int64 (quantised, < 2^37), capacity (n,) int64 summing to m; writes own (m,) int64. Starts from
    the nearest-proposal assignment (potentials 0) and keeps every query at a minimiser of C[k, q] - pot[k]; each
    round moves one unit of excess along a shortest path (reduced weights G[k, k'] + pot[k] - pot[k'] >= 0) from
    an over-full to the nearest under-full proposal, after which pot += min(d, D) makes the path tight and keeps
    every reduced weight >= 0. Only the rows of the path's nodes change.
    """
    n, m = cost.shape
    members = np.empty((n, m), np.int64)                # queries owned by each proposal, in any order
    size = np.zeros(n, np.int64)
    pos = np.empty(m, np.int64)                         # index of each query in its owner's member list
    for q in range(m):
        best = 0
        for k in range(1, n):
            if cost[k, q] < cost[best, q]:
                best = k
        own[q] = best
        members[best, size[best]] = q
        pos[q] = size[best]
        size[best] += 1
    gain = np.empty((n, n), np.int64)
    arg = np.empty((n, n), np.int64)
    for k in range(n):
        _cheapest_moves_row(cost, members, size, k, gain, arg)
    pot = np.zeros(n, np.int64)
    dist = np.empty(n, np.int64)
    pred = np.empty(n, np.int64)
    done = np.empty(n, np.bool_)
    while True:
        active = False
        for k in range(n):
            over = size[k] > capacity[k]
            active = active or over
            dist[k] = 0 if over else _INF
            pred[k] = -1
            done[k] = False
        if not active:
            return
        target = -1
        reach = _INF
        while True:                                     # Dijkstra, stopped at the first under-full proposal
            v = -1
            for k in range(n):
                if not done[k] and (v < 0 or dist[k] < dist[v]):
                    v = k
            if v < 0 or dist[v] >= _INF:
                break
            done[v] = True
            if size[v] < capacity[v]:
                target = v
                reach = dist[v]
                break
            for u in range(n):
                if not done[u] and gain[v, u] < _INF:
                    cand = dist[v] + gain[v, u] + pot[v] - pot[u]
                    if cand < dist[u]:
                        dist[u] = cand
                        pred[u] = v
        if target < 0:                                  # unreachable for valid capacities
            raise RuntimeError("transportation problem without augmenting path")
        for k in range(n):
            pot[k] += dist[k] if done[k] else reach
        v = target
        while pred[v] >= 0:                             # move the cheapest query of every path edge
            u = pred[v]
            q = arg[u, v]
            last = members[u, size[u] - 1]
            members[u, pos[q]] = last
            pos[last] = pos[q]
            size[u] -= 1
            members[v, size[v]] = q
            pos[q] = size[v]
            size[v] += 1
            own[q] = v
            v = u
        v = target
        _cheapest_moves_row(cost, members, size, v, gain, arg)
        while pred[v] >= 0:
            v = pred[v]
            _cheapest_moves_row(cost, members, size, v, gain, arg)


def _ssp_batch(cost, capacity, own):
    """_ssp_image over the batch: cost (B, n, m) int64, capacity (n,) int64, own (B, m) int64 (output)."""
    for b in range(cost.shape[0]):
        _ssp_image(cost[b], capacity, own[b])


if numba is not None:
    _cheapest_moves_row = numba.njit(cache=True, nogil=True)(_cheapest_moves_row)
    _ssp_image = numba.njit(cache=True, nogil=True)(_ssp_image)
    _ssp_batch = numba.njit(cache=True, nogil=True)(_ssp_batch)


def _stage2(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Owners (B, m) int64 of the m leftover queries: cost (B, n, m) integer-valued, capacity (n,) summing to m."""
    batch, n, m = cost.shape
    own = np.zeros((batch, m), dtype=np.int64)
    if m == 0 or n == 1:
        return own
    _ssp_batch(np.ascontiguousarray(cost, dtype=np.int64), np.ascontiguousarray(capacity, dtype=np.int64), own)
    return own


@torch.no_grad()
def assign_queries_to_proposals(centres: Tensor, ref_points: Tensor) -> QueryAssignment:
    """DMOQF assignment, optimal in both stages (the same costs as :func:`naive_assign_queries`).

    centres (B, n, 2) or (n, 2), ref_points (B, N, 2) or (N, 2): normalised (x, y). Returns
    :class:`QueryAssignment` (owner (B, N), first (B, n), int64 on ``centres.device``). Stage 1 is the
    reference's scipy call; stage 2 the successive-shortest-path solver of the module docstring, whose
    choices under ties follow its fixed rule.
    """
    centres_np, refs_np, unbatched = _points(centres, ref_points)
    cost = _l1(centres_np, refs_np)
    total = cost.shape[2]
    first = _stage1(cost)
    rest = _leftover(first, total)
    grid = _grid_scale(centres_np, refs_np)[:, None, None]
    cost_q = _l1(np.round(centres_np * grid), np.round(refs_np * grid))
    rest_owner = _stage2(np.take_along_axis(cost_q, rest[:, None, :], axis=2), _extra_counts(total, cost.shape[1]))
    return _finish(first, rest, rest_owner, total, centres.device, unbatched)
