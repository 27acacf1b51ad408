"""The pre-training data path at ImageNet scale, on synthetic data (no real image is read).

    python tools/benchmarks/benchmark_data_scale.py [--entries 1281167] [--boxes 512] [--readers 8] [--workers 4]

Measures, for ``--entries`` images of ``--boxes`` proposals each (ImageNet-1k: 1,281,167):

1. the proposal store: build time and size on disk (``ProposalStore.put_many`` in batches, as
   ``tools/generate_proposals.py`` writes);
2. random-access read latency per sample with ``--readers`` processes reading at once (each
   opens the store read-only, as data-loader workers do); the page cache is warm after the
   build unless ``--drop-caches`` (root) empties it first;
3. dataset registration: ``load_unlabelled_images`` over a folder of ``--entries`` empty image
   files in 1000 class folders (made once, kept under --work-dir);
4. the memory each data-loader worker holds for the dataset list: ``--workers`` workers of the
   training loader (detectron2 serialises the list once into one buffer that forked workers share)
   each read records and proposals for a while; their private memory (USS, from
   /proc/<pid>/smaps_rollup) is reported against the main process's list size.

Goals: registration under 60 s, under 1 GB of extra memory per worker, a proposal
read under 1 ms per sample with 8 readers. Writes ``<work-dir>/data_scale.json``. Linux only
(/proc). Needs about 11 KB of disk per entry for the store (13 GB at ImageNet scale).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from disco_detr.data.proposal_store import Proposals, ProposalStore

NUM_CLASSES = 1000


def image_keys(entries: int) -> list[str]:
    """ImageNet-style keys: ``n<class>/n<class>_<i>.JPEG``, spread over 1000 class folders."""
    return [f"n{i % NUM_CLASSES:08d}/n{i % NUM_CLASSES:08d}_{i}.JPEG" for i in range(entries)]


def build_store(path: str, keys: list[str], boxes: int, batch: int = 2048) -> dict:
    if os.path.exists(path):
        os.remove(path)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    store = ProposalStore(path, mode="a")
    store.update_meta({"method": "synthetic", "max_boxes": boxes, "format_version": "1", "image_root": "synthetic"})
    scores = np.sort(rng.random(boxes, dtype=np.float32))[::-1].copy()
    for first in tqdm(range(0, len(keys), batch), desc="store", unit="batch", file=sys.stderr):
        chunk = keys[first:first + batch]
        xy = rng.random((len(chunk), boxes, 2), dtype=np.float32) * np.float32(400)
        wh = 8 + rng.random((len(chunk), boxes, 2), dtype=np.float32) * np.float32(100)
        xyxy = np.concatenate([xy, xy + wh], -1)
        store.put_many((k, Proposals(xyxy[j], scores, 375, 500)) for j, k in enumerate(chunk))
    store.close()
    seconds = time.perf_counter() - start
    return {"build_s": seconds, "size_bytes": os.path.getsize(path), "entries": len(keys), "boxes": boxes}


def _reader(path: str, keys: list[str], reads: int, seed: int, queue) -> None:
    store = ProposalStore(path)
    rng = np.random.default_rng(seed)
    times = []
    for i in rng.integers(0, len(keys), reads):
        start = time.perf_counter()
        props = store[keys[i]]
        times.append(time.perf_counter() - start)
        assert props.boxes.shape[1] == 4
    store.close()
    queue.put(times)


def read_latency(path: str, keys: list[str], readers: int, reads: int) -> dict:
    ctx = multiprocessing.get_context("fork")  # forked readers: nothing to pickle but their results
    queue = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(path, keys, reads, seed, queue)) for seed in range(readers)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    per_reader = [queue.get() for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    t = np.concatenate([np.array(r) for r in per_reader]) * 1e3
    return {"readers": readers, "reads_per_reader": reads, "mean_ms": float(t.mean()), "p50_ms": float(np.median(t)),
            "p99_ms": float(np.percentile(t, 99)), "max_ms": float(t.max()),
            "throughput_per_s": float(len(t) / wall)}


def make_image_folder(root: str, keys: list[str]) -> float:
    """Empty files named like the keys (skipped when the folder is already complete); seconds taken."""
    marker = os.path.join(root, f".complete_{len(keys)}")
    if os.path.exists(marker):
        return 0.0
    start = time.perf_counter()
    for c in range(NUM_CLASSES):
        os.makedirs(os.path.join(root, f"n{c:08d}"), exist_ok=True)
    for key in tqdm(keys, desc="image files", unit="file", mininterval=2, file=sys.stderr):
        open(os.path.join(root, key), "wb").close()
    open(marker, "w").close()
    return time.perf_counter() - start


def registration(root: str, store: str) -> tuple[dict, list[dict]]:
    from detectron2.data import DatasetCatalog

    from disco_detr.data.pretrain_datasets import register_unlabelled_images

    register_unlabelled_images("scale_benchmark", root, store)
    start = time.perf_counter()
    dicts = DatasetCatalog.get("scale_benchmark")
    return {"registration_s": time.perf_counter() - start, "images": len(dicts)}, dicts


def _private_bytes(pid: int | str = "self") -> int:
    """USS: the private (not shared) resident memory of a process."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


class _TouchMapper:
    """A mapper that reads the record's proposals (as the pre-training mapper does) and returns the
    worker's private memory after it."""

    def __init__(self, store: str):
        self.store = ProposalStore(store)

    def __call__(self, record: dict) -> dict:
        props = self.store[record["proposal_key"]]
        return {"pid": os.getpid(), "uss": _private_bytes(), "boxes": int(props.boxes.shape[0])}


def worker_memory(dicts: list[dict], store: str, workers: int, batches: int) -> dict:
    from detectron2.data.common import DatasetFromList

    from disco_detr.data.build import build_train_loader

    before = _private_bytes()
    serialized = DatasetFromList(dicts, copy=False)  # what build_train_loader does with the list
    list_bytes = int(serialized._lst._addr[-1]) if hasattr(serialized._lst, "_addr") else 0
    loader = build_train_loader(serialized, _TouchMapper(store), total_batch_size=16, num_workers=workers)
    first, last = {}, {}
    for step, batch in enumerate(tqdm(loader, total=batches, desc="workers", unit="batch", file=sys.stderr)):
        for sample in batch:
            first.setdefault(sample["pid"], sample["uss"])
            last[sample["pid"]] = sample["uss"]
        if step + 1 >= batches:
            break
    del loader
    uss = sorted(last.values())
    return {"workers": workers, "batches": batches, "serialized_list_bytes": list_bytes,
            "main_private_growth_bytes": _private_bytes() - before,
            "worker_private_bytes": uss, "worker_private_max_bytes": max(uss),
            "worker_private_first_bytes": sorted(first.values())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_281_167, help="images (default: ImageNet-1k train)")
    parser.add_argument("--boxes", type=int, default=512, help="proposals per image (default 512)")
    parser.add_argument("--readers", type=int, default=8, help="processes reading the store at once")
    parser.add_argument("--reads", type=int, default=2000, help="random reads per reader")
    parser.add_argument("--workers", type=int, default=4, help="data-loader workers of the memory check")
    parser.add_argument("--batches", type=int, default=200, help="batches of 16 the memory check loads")
    parser.add_argument("--work-dir", default="output/data_scale", help="store, image folder and report")
    parser.add_argument("--drop-caches", action="store_true", help="empty the page cache before reading (root)")
    args = parser.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    keys = image_keys(args.entries)
    store = os.path.join(args.work_dir, f"proposals_{args.entries}x{args.boxes}.sqlite")
    report = {"store": build_store(store, keys, args.boxes)}
    print(f"store: {args.entries} entries x {args.boxes} boxes in {report['store']['build_s']:.0f} s, "
          f"{report['store']['size_bytes'] / 2**30:.2f} GiB ({report['store']['size_bytes'] / args.entries:.0f} B/entry)")
    if args.drop_caches:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    report["read"] = read_latency(store, keys, args.readers, args.reads)
    r = report["read"]
    print(f"read ({args.readers} readers at once, {'cold' if args.drop_caches else 'warm'} cache): mean "
          f"{r['mean_ms']:.3f} ms, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms per sample; "
          f"{r['throughput_per_s']:.0f} samples/s in all")
    root = os.path.join(args.work_dir, f"images_{args.entries}")
    made = make_image_folder(root, keys)
    report["registration"], dicts = registration(root, store)
    report["registration"]["image_files_made_s"] = made
    print(f"registration of {len(dicts)} images: {report['registration']['registration_s']:.1f} s")
    report["memory"] = worker_memory(dicts, store, args.workers, args.batches)
    m = report["memory"]
    print(f"dataset list: {m['serialized_list_bytes'] / 2**20:.0f} MiB serialised; private memory of each of "
          f"{args.workers} workers after {args.batches} batches: "
          + ", ".join(f"{b / 2**20:.0f} MiB" for b in m["worker_private_bytes"]))
    report["goals"] = {"registration_under_60s": report["registration"]["registration_s"] < 60,
                       "worker_under_1GB": m["worker_private_max_bytes"] < 1e9,
                       "read_under_1ms": r["mean_ms"] < 1.0}
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in report["goals"].items()))
    with open(os.path.join(args.work_dir, "data_scale.json"), "w") as f:
        json.dump({"args": vars(args), **report}, f, indent=1)
    return report
