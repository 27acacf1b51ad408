"""Benchmarks offline proposal generation and the proposals store.

1. Images/s of one process (OpenCV limited to one thread, as in generate_proposals.py's
   workers) at 640x480 for EdgeBoxes and selective search, on rendered demo images
   (textured shapes on a textured background).
2. ``ProposalStore.get`` latency (median and p99, microseconds, random keys, warm page
   cache) on a store of --entries images x --boxes random boxes, and its file size
   extrapolated to ImageNet's 1.28 M images.

Ends with one JSON line. The default run takes about a minute on 2 cores.

    python tools/benchmarks/benchmark_proposals.py [--edgeboxes-images 12] [--ss-images 4]
        [--entries 20000] [--boxes 512] [--reads 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import cv2
import numpy as np

from disco_detr.data.proposal_store import Proposals, ProposalStore
from disco_detr.tooling.demo_images import render_image
from disco_detr.tooling.proposal_methods import compute_proposals

IMAGENET_IMAGES = 1_281_167


def make_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` rendered 640x480 RGB images (rendered square at 640, resized)."""
    rng = np.random.default_rng(seed)
    return [cv2.resize(render_image(rng, 640)[0], (640, 480), interpolation=cv2.INTER_AREA) for _ in range(n)]


def bench_method(method: str, images: list[np.ndarray], max_boxes: int) -> dict:
    compute_proposals(images[0][:120, :160], method=method, max_boxes=max_boxes)  # warm-up
    counts = []
    start = time.perf_counter()
    for image in images:
        counts.append(len(compute_proposals(image, method=method, max_boxes=max_boxes).boxes))
    seconds = time.perf_counter() - start
    return {"images_per_s": len(images) / seconds, "ms_per_image": 1e3 * seconds / len(images),
            "mean_boxes": float(np.mean(counts))}


def random_proposals(rng: np.random.Generator, k: int, height: int = 375, width: int = 500) -> Proposals:
    xy = rng.uniform(0, [width - 2, height - 2], size=(k, 2))
    wh = rng.uniform(1, [width, height], size=(k, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], 1).astype(np.float32)
    scores = np.sort(rng.random(k).astype(np.float32))[::-1].copy()
    return Proposals(boxes=boxes, scores=scores, height=height, width=width)


def bench_store(entries: int, boxes: int, reads: int, folder: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "bench.sqlite")
    keys = [f"n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG" for i in range(entries)]
    start = time.perf_counter()
    store = ProposalStore(path, mode="a")
    store.update_meta({"method": "random", "max_boxes": boxes})
    batch = 1000
    for i in range(0, entries, batch):
        store.put_many((k, random_proposals(rng, boxes)) for k in keys[i:i + batch])
    store.close()
    write_s = time.perf_counter() - start
    size = os.path.getsize(path)

    reader = ProposalStore(path, mode="r")
    for k in rng.choice(keys, size=min(200, entries)):  # opens the connection, warms the cache
        reader.get(str(k))
    times = np.empty(reads, dtype=np.float64)
    for i, k in enumerate(rng.choice(keys, size=reads)):
        k = str(k)
        t0 = time.perf_counter_ns()
        props = reader.get(k)
        times[i] = time.perf_counter_ns() - t0
        assert props is not None and props.boxes.shape == (boxes, 4)
    reader.close()
    bytes_per_entry = size / entries
    return {"entries": entries, "boxes": boxes, "write_s": write_s, "file_mb": size / 2**20,
            "bytes_per_entry": bytes_per_entry, "get_median_us": float(np.median(times) / 1e3),
            "get_p99_us": float(np.percentile(times, 99) / 1e3),
            "imagenet_gb": bytes_per_entry * IMAGENET_IMAGES / 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edgeboxes-images", type=int, default=12)
    parser.add_argument("--ss-images", type=int, default=4)
    parser.add_argument("--max-boxes", type=int, default=512)
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--boxes", type=int, default=512)
    parser.add_argument("--reads", type=int, default=20000)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    result: dict = {"image_size": "640x480", "opencv": cv2.__version__}
    images = make_images(max(args.edgeboxes_images, args.ss_images))
    for method, count in (("edgeboxes", args.edgeboxes_images), ("selective_search", args.ss_images)):
        if count > 0:
            r = bench_method(method, images[:count], args.max_boxes)
            print(f"{method + ':':<18}{r['images_per_s']:.2f} images/s per process ({r['ms_per_image']:.0f} ms/image, "
                  f"{r['mean_boxes']:.0f} boxes on average, {count} images)", flush=True)
            result.update({f"{method}_images_per_s": round(r["images_per_s"], 3),
                           f"{method}_mean_boxes": round(r["mean_boxes"], 1)})

    with tempfile.TemporaryDirectory(prefix="proposal_bench_") as folder:
        st = bench_store(args.entries, args.boxes, args.reads, folder)
    print(f"store: {st['entries']} entries x {st['boxes']} boxes written in {st['write_s']:.1f} s, "
          f"{st['file_mb']:.0f} MB ({st['bytes_per_entry']:.0f} B/entry); get() median {st['get_median_us']:.1f} us, "
          f"p99 {st['get_p99_us']:.1f} us (warm cache); {IMAGENET_IMAGES} images -> {st['imagenet_gb']:.1f} GB")
    result.update({"store_entries": st["entries"], "store_boxes": st["boxes"],
                   "store_bytes_per_entry": round(st["bytes_per_entry"], 1),
                   "get_median_us": round(st["get_median_us"], 2), "get_p99_us": round(st["get_p99_us"], 2),
                   "imagenet_store_gb": round(st["imagenet_gb"], 2)})
    print(json.dumps(result))
    return 0
