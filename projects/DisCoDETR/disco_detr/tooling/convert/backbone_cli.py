"""The command line shared by the backbone converters (convert_resnet_vd, convert_hgnetv2): input file, output file,
source layout, output prefix, the state dict's path inside the file; a failure exits naming the input file."""
import argparse
import os
import sys
from collections.abc import Callable

import torch

from disco_detr.convert.resnet_vd import load_weights_file, unwrap_state_dict


def backbone_parser(description: str, sources: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="input checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("dst", help="output .pth for train.init_checkpoint")
    parser.add_argument("--source", required=True, choices=sources, help="key layout of the input")
    parser.add_argument("--prefix", default="backbone.", help="prefix of the output keys (default: backbone.)")
    parser.add_argument("--key", default=None, help="dotted path of the state dict inside the file, e.g. ema.module")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    return parser


def convert_file(args: argparse.Namespace, convert: Callable, **kwargs) -> tuple[dict, list]:
    """``convert(state, args.source, args.prefix, **kwargs)`` on the file ``args.src``; writes ``{"model": converted}``
    to ``args.dst``; returns (converted, dropped). Exits with the file's name on any failure to read or convert."""
    try:
        state = unwrap_state_dict(load_weights_file(args.src, args.allow_pickle), args.key)
        converted, dropped = convert(state, args.source, args.prefix, **kwargs)
    except Exception as e:  # every failure names the file
        sys.exit(f"error: {args.src}: {type(e).__name__}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted, "__author__": f"converted from {args.src} ({args.source} layout)"}, args.dst)
    return converted, dropped
