"""Writes tests/data/reference/deim_mal.pt: transformers' DEIM matchability-aware loss on fixed matches.

Run from the repository root with transformers installed (pinned: transformers 5.25.0, torch 2.14.1, CPU):

    python tests/data/reference/make_deim_mal_fixture.py

Reference: ``Deimv2Loss.loss_labels_mal`` (transformers/loss/loss_deimv2.py; the DEIM release's ``loss_mal``), called
with given matches, so the matcher plays no part. Contents (``torch.load(path, weights_only=True)``):
``versions``; ``num_classes``; ``logits`` (2, 7, 5) and ``boxes`` (2, 7, 4) normalised cxcywh; ``targets``: per image
``labels`` / ``boxes``; ``indices``: per image (query ids, target ids); ``num_boxes``; ``cases``: list of
(gamma, mal_alpha, loss_mal) with the release's defaults (1.5, None) first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
from transformers import Deimv2Config
from transformers.loss.loss_deimv2 import Deimv2Loss

CASES = [(1.5, None), (2.0, 0.75)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("deim_mal.pt")))
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    num_classes = 5
    logits = torch.randn(2, 7, num_classes, generator=g) * 2
    centres, sizes = torch.rand(2, 7, 2, generator=g) * 0.6 + 0.2, torch.rand(2, 7, 2, generator=g) * 0.3 + 0.05
    boxes = torch.cat([centres, sizes], -1)
    targets, indices = [], []
    for n, queries in ((3, [4, 0, 6]), (2, [2, 5])):
        # targets near the matched predictions, so that the IoUs spread over (0, 1)
        tgt = boxes[len(targets), queries] + torch.randn(n, 4, generator=g) * 0.04
        targets.append({"labels": torch.randint(0, num_classes, (n,), generator=g), "boxes": tgt})
        indices.append((torch.tensor(queries), torch.tensor(list(reversed(range(n))))))
        targets[-1]["boxes"] = targets[-1]["boxes"][list(reversed(range(n)))]  # target j matches query queries[-1-j]
    num_boxes = 5.0
    cases = []
    for gamma, mal_alpha in CASES:
        config = Deimv2Config(num_labels=num_classes, focal_loss_gamma=gamma, mal_alpha=mal_alpha)
        criterion = Deimv2Loss(config)
        hf_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
        loss = criterion.loss_labels_mal({"logits": logits, "pred_boxes": boxes}, hf_targets, indices, num_boxes)
        cases.append((gamma, mal_alpha, loss["loss_mal"]))
    fixture = {"versions": {"transformers": transformers.__version__, "torch": str(torch.__version__)},
               "num_classes": num_classes, "logits": logits, "boxes": boxes, "targets": targets,
               "indices": indices, "num_boxes": num_boxes, "cases": cases}
    torch.save(fixture, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{c[2].item():.6f}" for c in cases))


if __name__ == "__main__":
    main()
