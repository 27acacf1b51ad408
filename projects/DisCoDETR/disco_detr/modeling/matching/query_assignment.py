"""DMOQF query-to-proposal assignment (DisCo DETR, AAAI 2026: the initial and full matching of its
distance-aware multi-view object query fusion) and the Siamese DETR grouping (Chen et al., CVPR 2023).

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
Stage 1 is scipy's Hungarian on the small n x N matrix (the same call as the reference, so both pick the
same stage-1 matching even under ties). Stage 2 is a transportation problem with n supply nodes (capacities
``c_k``) and m unit demands, solved by successive shortest paths on the n proposal nodes, vectorised over
the batch:

* Exact arithmetic: coordinates are rounded to a 2^-34 grid (relative to their largest magnitude; float32
  inputs with |x| >= 2^-10 are represented exactly), so every cost, potential and reduced cost is an integer
  below 2^53 held exactly in float64. Ties (duplicated points, and the many equal cost differences of the
  L1 metric) are therefore exact, and the result is exactly optimal for these costs; against the float64
  costs the total differs from the optimum by at most ~m * 2^-33 (~3e-8 for m = 290, far below float32
  resolution).
* Potentials ``pot`` (one price per proposal). Invariant: every query is owned by a proposal minimising
  ``C[k, q] - pot[k]`` (reduced-cost optimality), so the current, possibly over-/under-full, assignment is
  a minimum-cost one for the counts it realises. It holds at the start by construction for any prices;
  a few float32 subgradient steps on the dual give prices that leave little excess (heuristic only, it
  cannot affect the result).
* Moving one query from proposal k to k' costs ``C[k', q] - C[k, q]``; the cheapest such move
  ``G[k, k'] = min_{q owned by k} (C[k', q] - C[k, q])`` is kept up to date incrementally, packed together
  with its query index. Reduced weights ``G[k, k'] + pot[k] - pot[k']`` are >= 0 by the invariant.
* Each round, in every image that still has an over-full proposal: Bellman-Ford over the n nodes from all
  over-full proposals gives distances ``d``; ``pot += min(d, D)`` (D: distance to the nearest under-full
  proposal) keeps every reduced weight >= 0 and makes that shortest path tight; along each of its edges
  all tied cheapest queries (at least one) may move, as many as the path can carry. Moved queries stay at
  minimisers, so the invariant holds.
* Each round removes at least one unit of excess per image (at most m rounds, in practice ~10-20 for
  N = 300). When no proposal is over-full the capacities are met exactly, and reduced-cost optimality
  (no negative cycle in the residual graph) proves the assignment optimal.

A round costs O(n^2) per image plus O(m) per edge of its path, against O(m^3) for the replicated
Hungarian; the rounds run for the whole batch at once.

Compiled path (used when ``numba`` can be imported; the numpy solver above is the fallback): the same
successive shortest paths on the same quantised integer costs (int64), per image in a compiled loop
(:func:`_ssp_image`). It starts from the nearest-proposal assignment (all potentials 0, no warm start),
moves one unit per round along a Dijkstra shortest path (O(n^2)) from the over-full proposals to the
nearest under-full one, and then recomputes only the cheapest-move rows of the path's nodes, O(n * owned)
each from per-proposal member lists. Same invariant, same optimality proof; tens to a few hundred
microseconds per image for N = 300, n = 10. Both paths return optimal assignments with identical counts;
under ties they may pick different (equally cheap) queries.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

try:                                    # optional: compiled per-image stage-2 solver (pure-numpy fallback below)
    import numba
except ImportError:                     # pragma: no cover - exercised by forcing _USE_NUMBA = False
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
    """Reference implementation: two scipy Hungarian solves per image, looping over the batch.

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

_GRID_BITS = 34          # coordinates are rounded to 2^-34 of their range: costs are integers below 2^36
_WARM_STEPS = 30         # dual (price) warm-start iterations
_WARM_STEP = 0.1         # first warm-start step, in normalised-coordinate units
_WARM_DECAY = 0.9


def _grid_scale(centres: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Per-image power of two (B,) mapping coordinates to integers of at most 2^_GRID_BITS.

    Chosen per image (from its largest coordinate magnitude, at least 1), so an image's result does not
    depend on the rest of the batch.
    """
    largest = np.maximum(np.abs(centres).max(axis=(1, 2)), np.abs(refs).max(axis=(1, 2)))
    exponent = np.ceil(np.log2(np.maximum(largest, 1.0)))
    return np.exp2(_GRID_BITS - exponent)


def _warm_prices(cost_t: np.ndarray, capacity: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Heuristic proposal prices (B, n) from a few subgradient steps on the dual, in float32.

    Any prices are valid for the exact solver (it starts from the assignment that is optimal for them); good ones
    only shorten it. Returns integer-valued float64 prices in cost units.
    """
    n, batch, m = cost_t.shape
    c32 = (cost_t / unit[:, None]).astype(np.float32)
    price = np.zeros((n, batch, 1), np.float32)
    best = price.copy()
    best_excess = np.full(batch, np.inf, np.float32)
    reduced = np.empty_like(c32)
    low = np.empty((batch, m), np.float32)
    hit = np.empty(c32.shape, dtype=bool)
    wanted = capacity.astype(np.float32)[:, None]
    step = np.float32(_WARM_STEP * n / m)
    for _ in range(_WARM_STEPS):
        np.subtract(c32, price, out=reduced)
        np.min(reduced, axis=0, out=low)
        np.equal(reduced, low, out=hit)
        gap = wanted - hit.view(np.uint8).sum(axis=2, dtype=np.int32)          # (n, B): capacity - count
        excess = np.maximum(-gap, 0).sum(axis=0)
        better = excess < best_excess
        best_excess = np.where(better, excess, best_excess)
        best = np.where(better[None, :, None], price, best)
        price += (step * gap)[:, :, None]
        step = np.float32(step * _WARM_DECAY)
    return np.round(best[:, :, 0].T.astype(np.float64) * unit[:, None])


def _argmin_rows(cost_t: np.ndarray, pot: np.ndarray) -> np.ndarray:
    """First minimiser over proposals of cost - pot: (n, B, m), (B, n) -> (B, m) int64."""
    reduced = cost_t - pot.T[:, :, None]
    low = reduced.min(axis=0)
    own = np.full(low.shape, cost_t.shape[0] - 1, dtype=np.int64)
    for k in range(cost_t.shape[0] - 2, -1, -1):
        own[reduced[k] == low] = k
    return own


def _initial_moves(cost_t: np.ndarray, own: np.ndarray, base: float) -> tuple[np.ndarray, np.ndarray]:
    """Packed cheapest single moves and the proposal counts.

    moves[k, b, k'] = min over queries q owned by k of (C[k', q] - C[k, q]) * base + q, so that the minimum also
    carries its query (base = power of two > m; exact because costs are small integers). inf on the diagonal and
    for proposals that own nothing. Returns moves (n, B, n) and count (B, n) int64.
    """
    n, batch, m = cost_t.shape
    owned = np.take_along_axis(cost_t, own[None], axis=0)                        # (1, B, m): C[own_q, q]
    packed = (cost_t - owned) * base + np.arange(m)                             # (n, B, m)
    key = (own + np.arange(batch)[:, None] * n).ravel()
    key = key.astype(np.int16) if batch * n < 2**15 else key                     # radix sort for small keys
    order = np.argsort(key, kind="stable")
    count = np.bincount(key, minlength=batch * n)
    starts = np.minimum(np.cumsum(count) - count, batch * m - 1)
    best = np.minimum.reduceat(packed.reshape(n, batch * m)[:, order], starts, axis=1)   # (k', (b, k))
    best[:, count == 0] = np.inf
    moves = np.ascontiguousarray(best.reshape(n, batch, n).transpose(2, 1, 0))
    moves[np.arange(n), :, np.arange(n)] = np.inf
    return moves, count.reshape(batch, n)


def _transport(cost: np.ndarray, capacity: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Exact min-cost distribution of m unit demands over n supplies, batched (successive shortest paths).

    cost (B, n, m) integer-valued float64 (quantised, < 2^36), capacity (n,) int64 summing to m, unit (B,) = cost
    units per normalised coordinate unit (for the warm start). Returns (B, m) int64, the proposal of every demand. All
    arithmetic is exact (integers below 2^53), so ties are detected exactly and moved in bulk.

    Potentials are kept bounded: a proposal that owns queries has its potential within one centre-to-centre
    distance (<= 2 max C) of every other's, and one that owns nothing may be raised up to max(pot) - 3 * that
    without breaking the invariant (its only constraints are its incoming edges), hence the clamp below.
    """
    batch, n, m = cost.shape
    if m == 0 or n == 1:
        return np.zeros((batch, m), dtype=np.int64)
    base = float(1 << max(1, (m - 1).bit_length()))
    if base > 2.0 ** (52 - _GRID_BITS - 2):
        raise ValueError(f"Too many queries for exact packed arithmetic: {m} > {2 ** (52 - _GRID_BITS - 2)}")
    images, nodes = np.arange(batch), np.arange(n)
    offdiag = ~np.eye(n, dtype=bool)[:, None, :]
    cost_t = np.ascontiguousarray(cost.transpose(1, 0, 2))                      # (n, B, m)
    slack_bound = 6.0 * cost.max(axis=(1, 2))[:, None] + 1.0                     # bounds the potentials
    pot = _warm_prices(cost_t, capacity, unit)
    own = _argmin_rows(cost_t, pot)
    moves, count = _initial_moves(cost_t, own, base)
    scaled = cost * base
    packed_cost = scaled + np.arange(m)                                          # C * base + q
    held = np.full((batch, n, m), -np.inf)                                       # C * base where k owns q, else -inf
    np.put_along_axis(held, own[:, None, :], np.take_along_axis(scaled, own[:, None, :], axis=1), axis=1)
    while True:
        excess = count - capacity
        active = (excess > 0).any(axis=1)
        if not active.any():
            return own
        # Shortest paths from all over-full proposals (Bellman-Ford, reduced weights >= 0).
        gain = np.floor(moves / base)                                           # unpacked G, (n, B, n)
        weight = gain + pot.T[:, :, None] - pot[None]
        np.maximum(weight, 0.0, out=weight)
        dist = np.where(excess > 0, 0.0, np.inf)
        hop = np.zeros((batch, n), dtype=np.int64)                               # iteration of the last decrease
        for it in range(1, n + 1):
            cand = dist.T[:, :, None] + weight
            best = cand.min(axis=0)
            better = best < dist
            if not better.any():
                break
            dist = np.where(better, best, dist)
            hop = np.where(better, it, hop)
        # Predecessor: a tight in-edge from a node settled earlier (exact arithmetic; no cycles).
        tight = (dist.T[:, :, None] + weight) == dist[None]
        pred = np.where(tight, hop.T[:, :, None], n + 1).argmin(axis=0)
        pred[excess > 0] = -1
        # pot += d makes every shortest-path tree edge tight and keeps all reduced weights >= 0.
        pot += np.where(active[:, None], dist, 0.0)
        np.maximum(pot, pot.max(axis=1, keepdims=True) - slack_bound, out=pot)
        pot -= pot.max(axis=1, keepdims=True)
        # Root (over-full proposal) of every node's tree, by pointer jumping; one path per tree, to its nearest
        # under-full proposal. The trees are disjoint, so are the paths, and all of them can be used at once.
        root = np.where(pred < 0, nodes, pred)
        for _ in range(max(1, (n - 1).bit_length())):
            root = np.take_along_axis(root, root, axis=1)
        in_tree = (root[:, None, :] == nodes[None, :, None]) & (excess < 0)[:, None, :]        # (B, root, node)
        short = np.where(in_tree, dist[:, None, :], np.inf)
        slot_img, slot_root = np.nonzero(np.isfinite(short.min(axis=2)))
        img = slot_img
        target = short[slot_img, slot_root].argmin(axis=1)
        cur = target
        # Walk each path back from its target; every edge may carry all its tied cheapest queries.
        flow = -excess[img, cur]
        steps = []
        while True:
            src = pred[img, cur]
            go = src >= 0
            if not go.any():
                break
            gi, gt, gs = img[go], cur[go], src[go]
            tied = (scaled[gi, gt] - held[gi, gs]) == (gain[gs, gi, gt] * base)[:, None]
            steps.append((go, gi, gt, gs, tied))
            flow[go] = np.minimum(flow[go], tied.sum(axis=1))
            cur = np.where(go, src, cur)
        flow = np.minimum(flow, excess[img, cur])
        moved_img, moved_query, moved_to, moved_from = [], [], [], []
        for go, gi, gt, gs, tied in steps:
            take = tied & (np.cumsum(tied, axis=1) <= flow[go][:, None])
            row, query = np.nonzero(take)
            moved_img.append(gi[row])
            moved_query.append(query)
            moved_to.append(gt[row])
            moved_from.append(gs[row])
        mi, mq, mt, mf = (np.concatenate(x) for x in (moved_img, moved_query, moved_to, moved_from))
        own[mi, mq] = mt
        held[mi, mf, mq] = -np.inf
        held[mi, mt, mq] = scaled[mi, mt, mq]
        count[img, cur] -= flow
        count[img, target] += flow
        # Entries whose packed query left its row are recomputed over the row's current queries.
        finite = np.isfinite(moves)
        packed = np.where(finite, moves, 0.0)
        arg = (packed - np.floor(packed / base) * base).astype(np.int64)
        stale = own[images[None, :, None], arg] != nodes[:, None, None]
        stale &= finite & offdiag
        empty = count.T == 0
        moves[empty] = np.inf
        stale &= ~empty[:, :, None]
        sk, sb, sx = np.nonzero(stale)
        if len(sk):
            moves[sk, sb, sx] = (packed_cost[sb, sx] - held[sb, sk]).min(axis=1)
        # Rows that received queries: fold them in.
        vals = (cost[mi, :, mq] - cost[mi, mt, mq][:, None]) * base + mq[:, None]
        vals[np.arange(len(mi)), mt] = np.inf
        np.minimum.at(moves.reshape(-1), ((mt * batch + mi)[:, None] * n + nodes).ravel(), vals.ravel())


# Compiled stage-2 solver (numba) ------------------------------------------------------------------------------------

_INF = np.int64(1 << 62)


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
_USE_NUMBA = numba is not None


def _transport_compiled(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Compiled equivalent of :func:`_transport` (same contract, no warm start): (B, m) int64 owners."""
    batch, n, m = cost.shape
    own = np.zeros((batch, m), dtype=np.int64)
    if m == 0 or n == 1:
        return own
    _ssp_batch(np.ascontiguousarray(cost, dtype=np.int64), np.ascontiguousarray(capacity, dtype=np.int64), own)
    return own


@torch.no_grad()
def assign_queries_to_proposals(centres: Tensor, ref_points: Tensor) -> QueryAssignment:
    """Fast exact DMOQF assignment (same optimal costs as :func:`naive_assign_queries`).

    centres (B, n, 2) or (n, 2), ref_points (B, N, 2) or (N, 2): normalised (x, y). Returns
    :class:`QueryAssignment` (owner (B, N), first (B, n), int64 on ``centres.device``). Stage 1 is scipy's
    Hungarian on the n x N matrix (as in the reference, so both pick the same stage-1 matching); stage 2
    is the batched successive-shortest-path transportation solver described in the module docstring.
    """
    centres_np, refs_np, unbatched = _points(centres, ref_points)
    cost = _l1(centres_np, refs_np)
    batch, n, total = cost.shape
    first = _stage1(cost)
    rest = _leftover(first, total)
    scale = _grid_scale(centres_np, refs_np)
    grid = scale[:, None, None]
    cost_q = _l1(np.round(centres_np * grid), np.round(refs_np * grid))
    rest_cost = np.take_along_axis(cost_q, rest[:, None, :], axis=2)
    if _USE_NUMBA:
        rest_owner = _transport_compiled(rest_cost, _extra_counts(total, n))
    else:
        rest_owner = _transport(rest_cost, _extra_counts(total, n), scale)
    return _finish(first, rest, rest_owner, total, centres.device, unbatched)
