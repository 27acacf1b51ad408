"""Convert a ResNet-vd checkpoint (RT-DETR release, timm or HuggingFace layout) for ``train.init_checkpoint``.

    # RT-DETR's ImageNet SSLD weights (the ones the DisCo paper uses for RT-DETR), from
    # https://github.com/lyuwenyu/storage/releases/download/v0.1/ResNet50_vd_ssld_v2_pretrained_from_paddle.pth
    python tools/convert/convert_resnet_vd.py ResNet50_vd_ssld_v2_pretrained_from_paddle.pth \\
        datasets/weights/r50vd_ssld_d2.pth --source rtdetr
    # timm resnet50d (e.g. the hub repo timm/resnet50d.ra2_in1k: pytorch_model.bin or model.safetensors)
    python tools/convert/convert_resnet_vd.py model.safetensors datasets/weights/r50d_timm_d2.pth --source timm
    # the backbone of a HuggingFace RT-DETR checkpoint (e.g. PekingU/rtdetr_r50vd)
    python tools/convert/convert_resnet_vd.py model.safetensors datasets/weights/r50vd_hf_d2.pth --source hf

Download the file yourself; nothing is fetched here. The backbone is located inside the file by
its first stem convolution, so full detector checkpoints work too (``--key ema.module`` picks the
EMA weights of an RT-DETR release training checkpoint). Every backbone tensor is checked key by key
and shape by shape against the ResNet-vd architecture read from the file; the output holds
``{"model": {prefix + name: tensor}}`` (prefix ``backbone.`` by default).
"""
import argparse
import os
import sys

import torch

from disco_detr.convert.resnet_vd import (
    RESNET_VD_SOURCES,
    convert_resnet_vd,
    infer_resnet_vd_config,
    load_weights_file,
    unwrap_state_dict,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="input checkpoint (.pth / .pt / .bin / .safetensors)")
    parser.add_argument("dst", help="output .pth for train.init_checkpoint")
    parser.add_argument("--source", required=True, choices=RESNET_VD_SOURCES, help="key layout of the input")
    parser.add_argument("--prefix", default="backbone.", help="prefix of the output keys (default: backbone.)")
    parser.add_argument("--key", default=None, help="dotted path of the state dict inside the file, e.g. ema.module")
    parser.add_argument("--source-prefix", default=None, help="backbone prefix inside the file (found automatically)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    args = parser.parse_args(argv)
    try:
        state = unwrap_state_dict(load_weights_file(args.src, args.allow_pickle), args.key)
        converted, dropped = convert_resnet_vd(state, args.source, args.prefix, source_prefix=args.source_prefix)
    except Exception as e:  # every failure names the file
        sys.exit(f"error: {args.src}: {type(e).__name__}: {e}")
    config = infer_resnet_vd_config({k[len(args.prefix):]: v for k, v in converted.items()})
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted, "__author__": f"converted from {args.src} ({args.source} layout)"}, args.dst)
    params = sum(v.numel() for k, v in converted.items() if k.endswith(("weight", "bias")))
    print(f"wrote {len(converted)} tensors ({params:,} parameters) to {args.dst}: stem {config['stem_widths']}, "
          f"depths {config['depths']}, widths {config['widths']}, bottleneck ratio {config['bottleneck_ratio']}")
    print(f"dropped {len(dropped)} keys" + (f": {', '.join(dropped[:8])}" + (" ..." if len(dropped) > 8 else "")
                                           if dropped else ""))
