"""DMOQF query-to-proposal assignment (SPEC section 4, steps 2-3) and the Siamese DETR grouping.

Conventions
-----------
* ``centres``: proposal centres P, shape (B, n, 2) or (n, 2), normalised (x, y) by the un-padded
  view size. They may lie outside [0, 1] (a box cut by the crop keeps its true centre).
* ``ref_points``: query reference points R, shape (B, N, 2), or (N, 2) shared by the batch,
  normalised (x, y) in [0, 1].
* Cost: ``C[k, q] = |P_k - R_q|_1`` (L1 distance), computed in float64 whatever the input dtype.
* Needs ``1 <= n <= N``. Any device and float dtype; no gradient flows (inputs are detached). The
  solvers run on the CPU (the problem is tiny), results are int64 on the input's device.

Definition (two stages, per image)
----------------------------------
1. Initial matching: a minimum-cost one-to-one matching between the n proposals and the N queries
   (Hungarian); proposal k gets query ``first[k]``.
2. Full matching: the ``m = N - n`` queries left over are distributed over the proposals, proposal k
   receiving ``c_k`` of them, with minimum total cost. Remainder rule ("spread the remainder"):
   ``c_k = (N - n) // n + (1 if k < (N - n) % n else 0)``, i.e. the first ``(N - n) % n`` proposals in
   proposal order (the order of ``centres``, i.e. proposal score order) take one extra query. Proposal k
   therefore owns ``1 + c_k`` queries in all (see :func:`queries_per_proposal`).

The naive form of stage 2 (:func:`naive_assign_queries`) replicates proposal k's column ``c_k`` times and
solves an m x m Hungarian problem (290 x 290 for N = 300, n = 10).

Fast exact stage 2 (:func:`assign_queries_to_proposals`)
--------------------------------------------------------
Stage 2 is a transportation problem with n supply nodes (capacities ``c_k``) and m unit demands. It is
solved by successive shortest paths on the n proposal nodes, vectorised over the batch:

* Node potentials ``pot`` (one per proposal). Every query is owned by a proposal that minimises
  ``C[k, q] - pot[k]`` (reduced-cost optimality). This holds at the start (``pot = 0``, every query
  owned by its nearest proposal) and after every step below, so the current (possibly over-/under-full)
  assignment is always a minimum-cost one for the counts it realises.
* Moving one query from proposal k to k' costs ``C[k', q] - C[k, q]``; the cheapest such move is
  ``G[k, k'] = min_{q owned by k} (C[k', q] - C[k, q])`` (kept up to date incrementally, with its
  minimising query). Reduced edge weights ``G[k, k'] + pot[k] - pot[k']`` are >= 0 by the invariant.
* Each round, in every image that still has an over-full proposal: Bellman-Ford over the n nodes from
  all over-full proposals gives distances ``d``; ``pot += d`` keeps every reduced weight >= 0 and makes
  the shortest-path tree tight; one query is moved along each edge of the shortest path to the nearest
  under-full proposal (each moved query stays at a minimiser, so the invariant holds).
* Every round removes one unit of excess per image, so there are at most m rounds; when no proposal is
  over-full the capacities are met exactly and reduced-cost optimality (no negative cycle in the
  residual graph) proves the assignment optimal. Ties and duplicated points need no special care: they
  only create zero-weight edges. The only inexactness is float64 rounding of the potentials (reduced
  weights are clamped at 0), i.e. the total cost is optimal to ~1e-12.

A round costs O(n^2) per image plus O(m) per moved query, against O(m^3) for the replicated Hungarian.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

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


def _prepare(centres: Tensor, ref_points: Tensor) -> tuple[np.ndarray, bool]:
    """Validated float64 L1 cost (B, n, N) on the CPU and whether the input was unbatched."""
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
    cost = np.abs(p[:, :, None, 0] - r[:, None, :, 0]) + np.abs(p[:, :, None, 1] - r[:, None, :, 1])
    return cost, unbatched


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
    """Reference implementation: two scipy Hungarian solves per image, looping over the batch.

    Stage 2 replicates proposal k ``c_k`` times (rows) against the N - n leftover queries (columns) and
    solves the square problem. Shapes and conventions: see the module docstring.
    """
    cost, unbatched = _prepare(centres, ref_points)
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


def _cheapest_moves(cost: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G[b, k, k'] = min over queries q owned by k of cost[b, k', q] - cost[b, k, q], and the argmin q.

    cost (B, n, m), own (B, m). Returns G (B, n, n) float64 (inf on the diagonal and for empty k) and
    arg (B, n, n) int64. Done with one sort by owner and segmented reductions.
    """
    batch, n, m = cost.shape
    order = np.argsort(own, axis=1, kind="stable")
    delta = cost - np.take_along_axis(cost, own[:, None, :], axis=1)             # C[k', q] - C[own_q, q]
    delta = np.take_along_axis(delta, order[:, None, :], axis=2)                  # queries grouped by owner
    flat = delta.transpose(0, 2, 1).reshape(batch * m, n)                         # row = (image, query)
    counts = np.zeros((batch, n), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(batch), m), own.ravel()), 1)
    starts = (np.cumsum(counts, axis=1) - counts + np.arange(batch)[:, None] * m).ravel()
    empty = counts.ravel() == 0
    safe = np.minimum(starts, batch * m - 1)
    best = np.minimum.reduceat(flat, safe, axis=0)
    best[empty] = np.inf
    # First position in each segment reaching the minimum.
    segment = np.repeat(np.arange(batch * n), counts.ravel())
    hit = flat == best[segment]
    position = np.where(hit, np.arange(batch * m)[:, None], batch * m)
    first_hit = np.minimum.reduceat(position, safe, axis=0)
    first_hit = np.minimum(first_hit, batch * m - 1)
    arg = order.ravel()[first_hit].reshape(batch, n, n)
    best = best.reshape(batch, n, n)
    best[:, np.arange(n), np.arange(n)] = np.inf
    return best, arg


def _transport(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Exact min-cost distribution of m unit demands over n supplies, batched (successive shortest paths).

    cost (B, n, m) float64, capacity (n,) int64 with ``capacity.sum() == m``. Returns (B, m) int64, the
    proposal of every demand. See the module docstring for the method and why it is exact.
    """
    batch, n, m = cost.shape
    if m == 0 or n == 1:
        return np.zeros((batch, m), dtype=np.int64)
    images = np.arange(batch)
    nodes = np.arange(n)
    offdiag = ~np.eye(n, dtype=bool)
    pot = np.zeros((batch, n))
    own = cost.argmin(axis=1)
    count = np.zeros((batch, n), dtype=np.int64)
    np.add.at(count, (np.repeat(images, m), own.ravel()), 1)
    moves, arg = _cheapest_moves(cost, own)
    while True:
        excess = count - capacity
        active = (excess > 0).any(axis=1)
        if not active.any():
            return own
        # Shortest paths (reduced weights >= 0) from all over-full proposals, Bellman-Ford on n nodes.
        weight = moves + pot[:, :, None] - pot[:, None, :]
        np.maximum(weight, 0.0, out=weight)
        dist = np.where(excess > 0, 0.0, np.inf)
        pred = np.full((batch, n), -1, dtype=np.int64)
        for _ in range(n):
            cand = dist[:, :, None] + weight
            best = cand.min(axis=1)
            better = best < dist
            if not better.any():
                break
            dist = np.where(better, best, dist)
            pred = np.where(better, cand.argmin(axis=1), pred)
        pot += np.where(active[:, None], dist, 0.0)
        # Nearest under-full proposal; move one query along each edge of its path.
        target = np.where(excess < 0, dist, np.inf).argmin(axis=1)
        cur = target
        walking = active
        moved_img, moved_query, moved_to = [], [], []
        for _ in range(n):
            prev = pred[images, cur]
            walking = walking & (prev >= 0)
            if not walking.any():
                break
            img, to, src = images[walking], cur[walking], prev[walking]
            query = arg[img, src, to]
            moved_img.append(img)
            moved_query.append(query)
            moved_to.append(to)
            cur = np.where(walking, prev, cur)
        img, query, to = np.concatenate(moved_img), np.concatenate(moved_query), np.concatenate(moved_to)
        own[img, query] = to
        act = images[active]
        count[act, cur[active]] -= 1
        count[act, target[active]] += 1
        # Entries whose minimising query left its row: recompute over the row's current queries.
        stale = own[images[:, None, None], arg] != nodes[None, :, None]
        stale &= offdiag & (count > 0)[:, :, None]
        moves[count == 0] = np.inf
        sb, sk, sx = np.nonzero(stale)
        if len(sb):
            vals = cost[sb, sx] - cost[sb, sk]
            vals[own[sb] != sk[:, None]] = np.inf
            pick = vals.argmin(axis=1)
            moves[sb, sk, sx] = vals[np.arange(len(sb)), pick]
            arg[sb, sk, sx] = pick
        # Rows that received a query (at most one per row and round): fold it in.
        vals = cost[img, :, query] - cost[img, to, query][:, None]
        vals[np.arange(len(img)), to] = np.inf
        old = moves[img, to]
        better = vals < old
        moves[img, to] = np.where(better, vals, old)
        arg[img, to] = np.where(better, query[:, None], arg[img, to])


@torch.no_grad()
def assign_queries_to_proposals(centres: Tensor, ref_points: Tensor) -> QueryAssignment:
    """Fast exact DMOQF assignment (same optimal costs as :func:`naive_assign_queries`).

    centres (B, n, 2) or (n, 2), ref_points (B, N, 2) or (N, 2): normalised (x, y). Returns
    :class:`QueryAssignment` (owner (B, N), first (B, n), int64 on ``centres.device``). Stage 1 is scipy's
    Hungarian on the n x N matrix (as in the reference, so both pick the same stage-1 matching); stage 2
    is the batched successive-shortest-path transportation solver described in the module docstring.
    """
    cost, unbatched = _prepare(centres, ref_points)
    batch, n, total = cost.shape
    first = _stage1(cost)
    rest = _leftover(first, total)
    rest_cost = np.take_along_axis(cost, rest[:, None, :], axis=2)
    rest_owner = _transport(rest_cost, _extra_counts(total, n))
    return _finish(first, rest, rest_owner, total, centres.device, unbatched)
