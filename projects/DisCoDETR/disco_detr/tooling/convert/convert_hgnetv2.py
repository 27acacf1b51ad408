"""Convert an HGNetV2 checkpoint (D-FINE / DEIM release, timm or HuggingFace layout) for ``train.init_checkpoint``.

    # D-FINE's ImageNet backbone (the one its configs start from), e.g. for D-FINE-L, from
    # https://github.com/Peterande/storage/releases/download/dfinev1.0/PPHGNetV2_B4_stage1.pth
    python tools/convert/convert_hgnetv2.py PPHGNetV2_B4_stage1.pth datasets/weights/hgnetv2_b4_d2.pth --source dfine
    # the backbone of a released D-FINE detector (EMA weights)
    python tools/convert/convert_hgnetv2.py dfine_l_coco.pth datasets/weights/dfine_l_backbone.pth --source dfine \\
        --key ema.module --allow-pickle
    # timm hgnetv2_b{n} (e.g. model.safetensors of timm/hgnetv2_b4.ssld_stage2_ft_in1k) or transformers' backbone
    python tools/convert/convert_hgnetv2.py model.safetensors datasets/weights/hgnetv2_b4_timm.pth --source timm

Download the file yourself; nothing is fetched here. The backbone is located inside the file by its first stem
convolution; every tensor is checked key by key and shape by shape against B0-B5 (disco_detr.convert.hgnetv2); the
output holds ``{"model": {prefix + name: tensor}}`` (prefix ``backbone.`` by default).
"""
import argparse
import os
import sys

import torch

from disco_detr.convert.hgnetv2 import HGNETV2_SOURCES, convert_hgnetv2
from disco_detr.convert.resnet_vd import load_weights_file, unwrap_state_dict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="input checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("dst", help="output .pth for train.init_checkpoint")
    parser.add_argument("--source", required=True, choices=HGNETV2_SOURCES, help="key layout of the input")
    parser.add_argument("--prefix", default="backbone.", help="prefix of the output keys (default: backbone.)")
    parser.add_argument("--key", default=None, help="dotted path of the state dict inside the file, e.g. ema.module")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    args = parser.parse_args(argv)
    try:
        state = unwrap_state_dict(load_weights_file(args.src, args.allow_pickle), args.key)
        converted, dropped = convert_hgnetv2(state, args.source, args.prefix)
    except Exception as e:  # every failure names the file
        sys.exit(f"error: {args.src}: {type(e).__name__}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted, "__author__": f"converted from {args.src} ({args.source} layout)"}, args.dst)
    lab = any(".lab." in k for k in converted)
    print(f"wrote {len(converted)} tensors to {args.dst} (learnable affine blocks: {'yes' if lab else 'no'}); "
          f"dropped {len(dropped)} keys")
