"""Computes offline object proposals for a folder of images into a SQLite store.

    python tools/generate_proposals.py --images datasets/mini-imagenet/train \\
        --out datasets/mini-imagenet/proposals_train.sqlite [--method edgeboxes] \\
        [--max-boxes 512] [--workers 8] [--sed-model model.yml.gz] [--limit N]

Images are found recursively (a flat folder or ImageNet-style class sub-folders); each is
stored under its path relative to --images with "/" separators. The run is resumable:
images already in the store are skipped, and results are committed every --commit-every
images, so a killed run loses at most the images in flight. Unreadable images are
logged and skipped (not stored); the store's metadata names them with their errors (so that
training tells them from images not computed yet), and a rerun tries them again. An existing
store made with another method, max_boxes, edge detector, image root or shard is refused.

Across machines: ``--shard I/N`` processes the images whose file name falls in shard I of N
(CRC-32 of the path relative to --images, so every machine, a rerun and a resumed shard
take the same files) into its own store; ``tools/merge_proposals.py`` joins the N stores
into one. A SLURM array, one shard per task:

    sbatch --array=0-15 --cpus-per-task=8 --wrap "python tools/generate_proposals.py \
        --images /data/imagenet/train --shard \\$SLURM_ARRAY_TASK_ID/16 \
        --out /data/proposals/train.shard\\$SLURM_ARRAY_TASK_ID.sqlite --workers 8"
    python tools/merge_proposals.py --out /data/proposals/train.sqlite /data/proposals/train.shard*.sqlite
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
import warnings

import cv2

from disco_detr.data.build import available_cpus
from disco_detr.data.pretrain_datasets import list_images
from disco_detr.data.proposal_store import FORMAT_VERSION, METHODS, ProposalStore
from disco_detr.tooling.proposal_methods import (
    meta_differences,
    parse_shard,
    proposals_for_file,
    shard_of,
)
from disco_detr.utils.progress import progress_bar

logger = logging.getLogger("generate_proposals")

def _edges_name(method: str, sed_model: str | None) -> str:
    if method != "edgeboxes":
        return "none"
    return f"sed:{os.path.basename(sed_model)}" if sed_model else "gradient+nms"


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; OpenCV's own threads would oversubscribe


def _process(task: tuple[str, str, str, int, str | None]):
    """Worker: ``(key, proposals, None, warnings)`` or ``(key, None, error message, warnings)``; never raises.
    The image's Python warnings come back as messages, for the main process to log above the progress bar."""
    key, path, method, max_boxes, sed_model = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            props, error = proposals_for_file(path, method=method, max_boxes=max_boxes, sed_model=sed_model), None
        except Exception as e:  # any failure on one image must not stop the run
            props, error = None, f"{type(e).__name__}: {e}"
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return key, props, error, messages


def _check_meta(store: ProposalStore, wanted: dict[str, str]) -> str | None:
    """An error message if the store was made with other settings, else None."""
    have = store.meta
    problems = [f"{name}: store has {a!r}, requested {b!r}"
                for name, a, b in meta_differences(have, wanted, [name for name in wanted if name in have])]
    if not problems:
        return None
    return (f"{store.path} was made with other settings ({'; '.join(problems)}). Use another --out, "
            "or delete the store to recompute it.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="image folder (searched recursively)")
    parser.add_argument("--out", required=True, help="proposals store to create or append to (.sqlite)")
    parser.add_argument("--method", default="edgeboxes", choices=METHODS)
    parser.add_argument("--max-boxes", type=int, default=512, help="most proposals kept per image")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="worker processes (default: the CPU cores this process may use; 1 runs in this process)")
    parser.add_argument("--sed-model", default=None,
                        help="OpenCV structured-edge model (model.yml.gz) for EdgeBoxes; default: gradient edges")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (sorted order)")
    parser.add_argument("--commit-every", type=int, default=64, help="images per committed batch")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="only shard I of N of the images (by file name); merge the N stores with "
                             "tools/merge_proposals.py")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)

    image_root = os.path.abspath(args.images)
    if not os.path.isdir(image_root):
        parser.error(f"--images {args.images!r} is not a folder")
    if args.max_boxes < 1:
        parser.error("--max-boxes must be >= 1")
    if args.commit_every < 1:
        parser.error("--commit-every must be >= 1")
    if args.sed_model is not None:
        if args.method != "edgeboxes":
            parser.error("--sed-model only applies to --method edgeboxes")
        if not os.path.isfile(args.sed_model):
            parser.error(f"--sed-model {args.sed_model!r} does not exist")
    sed_model = os.path.abspath(args.sed_model) if args.sed_model else None
    shard = None
    if args.shard is not None:
        try:
            shard = parse_shard(args.shard)
        except ValueError as e:
            parser.error(f"--shard: {e}")

    wanted = {"method": args.method, "max_boxes": str(args.max_boxes), "format_version": FORMAT_VERSION,
              "image_root": image_root, "edges": _edges_name(args.method, sed_model)}
    if shard is not None:
        wanted["shard"] = f"{shard[0]}/{shard[1]}"
    store = ProposalStore(args.out, mode="a")
    try:
        problem = _check_meta(store, wanted)
        if problem:
            parser.error(problem)
        store.update_meta({**wanted, "image_root": store.meta.get("image_root", image_root)})

        if "shard" in store.meta and shard is None:
            parser.error(f"{args.out} holds shard {store.meta['shard']} of a sharded run; pass --shard "
                         f"{store.meta['shard']} to continue it, or use another --out")
        keys = list_images(image_root)
        if args.limit is not None:
            keys = keys[: max(args.limit, 0)]
        if shard is not None:
            keys = [k for k in keys if shard_of(k, shard[1]) == shard[0]]
        existing = set(store.keys())
        todo = [k for k in keys if k not in existing]
        skipped = len(keys) - len(todo)
        logger.info("%d images under %s, %d already in %s, %d to compute (%s, max %d boxes, %d workers)",
                    len(keys), image_root, skipped, args.out, len(todo), args.method, args.max_boxes, args.workers)
        stats = _run(store, image_root, todo, args, sed_model)
    finally:
        store.close()

    rate = stats["done"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    logger.info("summary: done=%d skipped_existing=%d failed=%d fallbacks=%d (enhanced=%d, centre_box=%d) "
                "images/s=%.2f store=%s", stats["done"], skipped, stats["failed"],
                stats["enhanced"] + stats["centre_box"], stats["enhanced"], stats["centre_box"], rate, args.out)
    return 0


def _run(store: ProposalStore, image_root: str, todo: list[str], args, sed_model: str | None) -> dict:
    stats = {"done": 0, "failed": 0, "enhanced": 0, "centre_box": 0, "seconds": 0.0}
    failed: dict[str, str] = {}
    tasks = [(k, os.path.join(image_root, *k.split("/")), args.method, args.max_boxes, sed_model) for k in todo]
    pending: list = []
    start = time.perf_counter()

    def flush() -> None:
        if pending:
            store.put_many(pending)
            pending.clear()

    pool = None
    cv_threads = cv2.getNumThreads()
    # log lines (the workers' warnings included) go above the bar
    with progress_bar(total=len(tasks), unit="img", desc="proposals", dynamic_ncols=True, file=sys.stderr) as bar:
        try:
            if args.workers > 1 and len(tasks) > 1:
                # Stop OpenCV's worker threads before forking: a forked child inherits the pool's
                # state without its threads and hangs reconfiguring it (seen with cv2.setNumThreads
                # in the child after the parent ran OpenCV code). Restored below.
                cv2.setNumThreads(1)
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
                pool = ctx.Pool(args.workers, initializer=_init_worker)
                chunk = max(1, min(16, len(tasks) // (4 * args.workers)))
                results = pool.imap_unordered(_process, tasks, chunksize=chunk)
            else:
                results = map(_process, tasks)
            for key, props, error, messages in results:
                bar.update(1)
                for message in messages:
                    logger.warning("%s: %s", os.path.join(image_root, key), message)
                if props is None:
                    stats["failed"] += 1
                    failed[key] = error
                    logger.warning("skipped %s: %s", os.path.join(image_root, key), error)
                    continue
                stats["done"] += 1
                if props.fallback:
                    stats[props.fallback] += 1
                pending.append((key, props))
                if len(pending) >= args.commit_every:
                    flush()
                    bar.set_postfix(failed=stats["failed"], fallbacks=stats["enhanced"] + stats["centre_box"])
            flush()
            if pool is not None:
                pool.close()
                pool.join()
                pool = None
        finally:
            try:
                flush()  # keep what was computed when interrupted
                store.record_unreadable(failed)
            except Exception:
                logger.exception("could not store the last %d results", len(pending))
            if pool is not None:
                pool.terminate()
                pool.join()
            cv2.setNumThreads(cv_threads)
    stats["seconds"] = time.perf_counter() - start
    return stats
