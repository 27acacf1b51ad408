#!/usr/bin/env python
"""Throughput of the paired-view pre-training mapper, per worker process.

Maps ``--num`` samples of an unlabelled dataset (default: the demo's, with its proposals)
in one process with the paper's settings (short side 320-480, long side <= 600, n = 10,
128 x 128 crops) and reports samples/s, then how many DataLoader workers one GPU needs to
keep up with the paper's batch of 32 images per GPU for a few GPU step times (we have no
measured DisCo GPU step time yet, so the table spans plausible ones). Ends with a JSON line.

    python tools/generate_proposals.py --images datasets/demo/images/unlabelled \\
        --out datasets/demo/proposals/unlabelled.sqlite
    python tools/benchmark_pretrain_mapper.py --num 200
"""
import argparse
import json
import math
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from tqdm import tqdm

import disco_detr  # noqa: F401  (registers the datasets)
from disco_detr.data.pretrain_mapper import PairedViewMapper


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="disco_demo_unlabelled")
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--batch-per-gpu", type=int, default=32)
    parser.add_argument("--step-times", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="GPU seconds per training step to size the worker count for")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker = one process with one thread
    records = DatasetCatalog.get(args.dataset)
    mapper = PairedViewMapper()
    np.random.seed(0)
    torch.manual_seed(0)
    for record in records[:5]:  # warm-up (opens the store, allocates)
        mapper(record)
    start = time.perf_counter()
    sizes = []
    for k in tqdm(range(args.num), desc="mapper"):
        sample = mapper(records[k % len(records)])
        sizes.append(tuple(sample["views"].shape[-2:]))
    elapsed = time.perf_counter() - start
    per_sample = elapsed / args.num
    workers = {str(t): math.ceil(args.batch_per_gpu * per_sample / t) for t in args.step_times}
    result = {
        "dataset": args.dataset,
        "samples": args.num,
        "samples_per_s_per_worker": round(1 / per_sample, 2),
        "ms_per_sample": round(1000 * per_sample, 2),
        "mean_view_size": [round(float(np.mean([s[0] for s in sizes]))), round(float(np.mean([s[1] for s in sizes])))],
        "batch_per_gpu": args.batch_per_gpu,
        "workers_per_gpu_for_step_time_s": workers,
    }
    print(f"{result['samples_per_s_per_worker']} samples/s per worker ({result['ms_per_sample']} ms/sample); "
          f"workers per GPU at batch {args.batch_per_gpu}: " + ", ".join(f"{t}s/step -> {w}" for t, w in workers.items()))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
