"""Convert an RT-DETR checkpoint (HuggingFace transformers or the PyTorch RT-DETR release) for ``train.init_checkpoint``.

    # transformers' port, e.g. the hub repo PekingU/rtdetr_r50vd (model.safetensors), COCO's 80 classes:
    python tools/convert/convert_rtdetr.py model.safetensors datasets/weights/rtdetr_r50vd_coco_d2.pth --source hf
    # the release's COCO checkpoint (rtdetr_r50vd_6x_coco_from_paddle.pth), its EMA weights:
    python tools/convert/convert_rtdetr.py rtdetr_r50vd_6x_coco_from_paddle.pth datasets/weights/rtdetr_r50vd_coco_d2.pth \\
        --source release --key ema.module

Download the file yourself; nothing is fetched here. The target architecture is built from a LazyConfig
(``--config``, default configs/finetune_rtdetr_coco.py, with optional ``key=value`` overrides, e.g.
``model.num_classes=20``); every tensor is checked key by key and shape by shape against it. The output holds
``{"model": {name: tensor}}`` in our layout (disco_detr.convert.rtdetr), ready for
``train.init_checkpoint`` (loading it strictly into the built model is part of the check).
"""
import argparse
import os
import sys

import torch
from detectron2.config import instantiate

from disco_detr.tooling.paths import REPO


def main(argv=None):
    from disco_detr.config import load_config
    from disco_detr.convert.resnet_vd import load_weights_file, unwrap_state_dict
    from disco_detr.convert.rtdetr import RTDETR_SOURCES, convert_rtdetr

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="input checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("dst", help="output .pth for train.init_checkpoint")
    parser.add_argument("--source", required=True, choices=RTDETR_SOURCES, help="key layout of the input")
    parser.add_argument("--key", default=None, help="dotted path of the state dict inside the file, e.g. ema.module")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "finetune_rtdetr_coco.py"),
                        help="LazyConfig whose model is the target architecture")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides key=value (e.g. model.num_classes=20)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    model = instantiate(cfg.model)
    try:
        state = unwrap_state_dict(load_weights_file(args.src, args.allow_pickle), args.key)
        converted, dropped = convert_rtdetr(state, args.source, model)
        model.load_state_dict(converted, strict=True)
    except Exception as e:  # every failure names the file
        sys.exit(f"error: {args.src}: {type(e).__name__}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted, "__author__": f"converted from {args.src} ({args.source} layout)"}, args.dst)
    params = sum(v.numel() for k, v in converted.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {len(converted)} tensors ({params:,} numbers) to {args.dst}")
    print(f"dropped {len(dropped)} keys" + (f": {', '.join(dropped[:8])}" if dropped else ""))
