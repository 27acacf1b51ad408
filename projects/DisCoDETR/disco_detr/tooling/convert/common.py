"""The command line shared by the detector converters (convert_rtdetr, convert_dfine): read a checkpoint, rename it
with a :mod:`disco_detr.convert` function into the model a LazyConfig builds, load it strictly, save it for
``train.init_checkpoint``."""
import argparse
import os
import sys
from collections.abc import Callable

import torch
from detectron2.config import instantiate

__all__ = ["convert_detector_main"]


def convert_detector_main(argv, description: str, sources: tuple[str, ...], convert: Callable,
                          default_config: str) -> None:
    """Parse ``argv`` (src, dst, --source, --key, --config, --allow-pickle, overrides), convert with
    ``convert(state, source, model) -> (state, dropped)`` and write ``{"model": state}`` to dst."""
    from disco_detr.config import load_config
    from disco_detr.convert.resnet_vd import load_weights_file, unwrap_state_dict

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="input checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("dst", help="output .pth for train.init_checkpoint")
    parser.add_argument("--source", required=True, choices=sources, help="key layout of the input")
    parser.add_argument("--key", default=None, help="dotted path of the state dict inside the file, e.g. ema.module")
    parser.add_argument("--config", default=default_config, help="LazyConfig whose model is the target architecture")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides key=value (e.g. model.num_classes=20)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    model = instantiate(cfg.model)
    try:
        state = unwrap_state_dict(load_weights_file(args.src, args.allow_pickle), args.key)
        converted, dropped = convert(state, args.source, model)
        model.load_state_dict(converted, strict=True)
    except Exception as e:  # every failure names the file
        sys.exit(f"error: {args.src}: {type(e).__name__}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted, "__author__": f"converted from {args.src} ({args.source} layout)"}, args.dst)
    params = sum(v.numel() for k, v in converted.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {len(converted)} tensors ({params:,} numbers) to {args.dst}")
    print(f"dropped {len(dropped)} keys" + (f": {', '.join(dropped[:8])}" if dropped else ""))
