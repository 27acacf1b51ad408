"""Convert a detrex checkpoint (IDEA-Research/detrex) to our detectors' layout, for ``train.init_checkpoint``.

    python tools/convert/convert_detrex.py --variant conditional conditional_detr_r50_50ep.pth datasets/weights/cond_detrex.pth
    python tools/convert/convert_detrex.py --variant deformable deformable_detr_r50_50ep.pth datasets/weights/deform_detrex.pth
    python tools/convert/convert_detrex.py --variant dab dab_detr_r50_50ep.pth datasets/weights/dab_detrex.pth
    python tools/convert/convert_detrex.py --variant dino dino_r50_4scale_12ep.pth datasets/weights/dino_detrex.pth \
        --opts model.backbone._target_=disco_detr.modeling.build_resnet

``dino``: detrex DINO (4-scale) -> DINO. detrex's DINO checkpoints carry a detectron2 ResNet-50, the paper
configs a ResNet-50-vd: check (and later train) with the ResNet-50 as in the override above.

Variants: ``conditional`` (detrex ConditionalDETR -> ConditionalDETR) and ``deformable`` (detrex
DeformableDETR, plain: no box refinement, not two-stage -> DeformableDETR) and ``dab`` (detrex DABDETR ->
DABDETR). The result is checked key by key
and shape by shape against the model of ``--config`` (default: the variant's COCO fine-tuning config; pass
the config you will train or evaluate with, plus ``--opts key=value ...`` overrides, or ``--no-check``).
Every detrex key must be converted, merged (the per-layer copies of Deformable DETR's shared heads) or
dropped on purpose; anything else is an error naming the key. ``--report`` writes the full key lists as JSON.
Download the detrex checkpoint yourself; nothing is fetched here.
"""
import argparse
import json
import os
import sys

import torch

from disco_detr.convert.detrex import DETREX_VARIANTS, convert_detrex, load_detrex_state_dict
from disco_detr.tooling.paths import REPO

DEFAULT_CONFIGS = {
    "conditional": os.path.join(REPO, "configs", "finetune_cond_coco.py"),
    "deformable": os.path.join(REPO, "configs", "finetune_deformable_ms_coco.py"),
    "dab": os.path.join(REPO, "configs", "finetune_dab_coco.py"),
    "dino": os.path.join(REPO, "configs", "finetune_dino_coco.py"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="detrex checkpoint (.pth)")
    parser.add_argument("dst", help="converted checkpoint to write")
    parser.add_argument("--variant", required=True, choices=DETREX_VARIANTS)
    parser.add_argument("--config", help="config whose model the result is checked against "
                                         "(default: the variant's COCO fine-tuning config)")
    parser.add_argument("--opts", nargs="*", default=[], help="key=value overrides of --config")
    parser.add_argument("--no-check", action="store_true", help="do not build a model to check keys and shapes")
    parser.add_argument("--report", help="write converted / merged / dropped / unmatched keys here (JSON)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    args = parser.parse_args(argv)

    state = load_detrex_state_dict(args.src, args.allow_pickle)
    reference = None
    if not args.no_check:
        from detectron2.config import instantiate

        from disco_detr.config import load_config

        config = args.config or DEFAULT_CONFIGS[args.variant]
        with torch.device("meta"):  # only names and shapes are needed
            reference = instantiate(load_config(config, args.opts).model)
    try:
        converted, report = convert_detrex(state, args.variant, reference=reference)
    except (KeyError, ValueError) as e:
        sys.exit(f"{args.src}: {e.args[0] if e.args else e}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted, "__author__": f"converted from detrex ({args.variant}): {args.src}"}, args.dst)
    print(f"{report.summary()}; wrote {len(converted)} tensors to {args.dst}")
    for title, keys in (("merged", report.merged), ("dropped", report.dropped)):
        if keys:
            print(f"{title}: {', '.join(keys[:8])}" + (" ..." if len(keys) > 8 else ""))
