"""Joins proposal stores, e.g. the N shards of ``tools/generate_proposals.py --shard I/N``, into one.

    python tools/merge_proposals.py --out datasets/imagenet/proposals_train.sqlite \\
        datasets/imagenet/proposals_train.shard*.sqlite

The shards must have been made with the same method, max boxes, edge detector and image root,
must not hold an image twice, and (when they carry shard metadata) must be all N shards of one
run, each once; anything else is refused with the store named. An existing --out is appended to
under the same rules. Rows are copied inside SQLite (no decoding), one transaction per shard.
"""
from __future__ import annotations

import argparse
import sys
import time

from disco_detr.tooling.proposal_methods import merge_stores
from disco_detr.utils.progress import progress_bar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="store to create or append to (.sqlite)")
    parser.add_argument("shards", nargs="+", help="the stores to join")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with progress_bar(total=len(args.shards), unit="store", desc="merge", file=sys.stderr) as bar:
        try:
            copied = merge_stores(args.out, args.shards, progress=lambda _: bar.update(1))
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
    print(f"merged {sum(copied.values())} entries from {len(copied)} stores into {args.out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
