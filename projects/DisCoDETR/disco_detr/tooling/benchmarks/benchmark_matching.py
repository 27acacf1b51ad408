"""Benchmarks the DMOQF query-to-proposal assignment: naive (two scipy Hungarians per image) vs fast.

Random inputs (centres in [-0.1, 1.1]^2, reference points in [0, 1]^2), the same for both; median
milliseconds per batch over --repeats runs, interleaved; asserts that both reach the same total cost
(stage 1 and stage 2) on every image. Runs the main setting (--queries, default N = 300) and, unless
--no-extra, N = 100. Ends with one JSON line.

    python tools/benchmarks/benchmark_matching.py [--queries 300] [--proposals 10] [--batch 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from disco_detr.modeling.matching.query_assignment import assign_queries_to_proposals, naive_assign_queries


def total_costs(centres: torch.Tensor, refs: torch.Tensor, result) -> tuple[np.ndarray, np.ndarray]:
    """Per-image stage-1 and stage-2 total L1 costs in float64."""
    p, r = centres.double().numpy(), refs.double().numpy()
    cost = np.abs(p[:, :, None, :] - r[:, None, :, :]).sum(-1)                      # (B, n, N)
    owner, first = result.owner.numpy(), result.first.numpy()
    stage1 = np.take_along_axis(cost, first[:, :, None], axis=2)[..., 0].sum(1)
    everything = np.take_along_axis(cost, owner[:, None, :], axis=1)[:, 0].sum(1)
    return stage1, everything - stage1


def bench(queries: int, proposals: int, batch: int, repeats: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, proposals, 2, generator=gen) * 1.2 - 0.1
    refs = torch.rand(batch, queries, 2, generator=gen)
    fast_result = assign_queries_to_proposals(centres, refs)                          # warm-up
    naive_result = naive_assign_queries(centres, refs)
    for got, want in zip(total_costs(centres, refs, fast_result), total_costs(centres, refs, naive_result)):
        worst = float(np.abs(got - want).max())
        assert worst < 1e-6, f"fast and naive total costs differ by {worst}"
    naive_ms, fast_ms = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        naive_assign_queries(centres, refs)
        naive_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        assign_queries_to_proposals(centres, refs)
        fast_ms.append(1e3 * (time.perf_counter() - start))
    naive, fast = float(np.median(naive_ms)), float(np.median(fast_ms))
    return {"N": queries, "n": proposals, "batch": batch, "naive_ms": round(naive, 2), "fast_ms": round(fast, 2),
            "speedup": round(naive / fast, 1), "naive_ms_per_image": round(naive / batch, 3),
            "fast_ms_per_image": round(fast / batch, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300, help="N, object queries")
    parser.add_argument("--proposals", type=int, default=10, help="n, proposals per image")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-extra", action="store_true", help="skip the additional N = 100 run")
    args = parser.parse_args()
    settings = [args.queries] + ([] if args.no_extra or args.queries == 100 else [100])
    results = []
    for queries in settings:
        row = bench(queries, args.proposals, args.batch, args.repeats, args.seed)
        results.append(row)
        print(f"N={row['N']:4d} n={row['n']} batch={row['batch']}: naive {row['naive_ms']:8.2f} ms/batch  "
              f"fast {row['fast_ms']:7.2f} ms/batch  speed-up {row['speedup']:5.1f}x  (equal total costs)")
    print(json.dumps({"benchmark": "dmoqf_query_assignment", "cpu": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count(), "results": results}))
