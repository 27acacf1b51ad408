"""Convert a torchvision-layout ResNet-50 checkpoint (torchvision, SwAV, ...) for
``train.init_checkpoint``.

    python tools/convert/convert_torchvision_resnet.py swav_800ep_pretrain.pth.tar datasets/weights/swav_r50_d2.pth

SwAV's ResNet-50 weights are published by facebookresearch/swav (e.g. the 800-epoch
``swav_800ep_pretrain.pth.tar`` model); download it yourself, nothing is fetched here.
Keys get the ``backbone.`` prefix of our detectors (``--prefix`` changes it).
"""
import argparse

import torch

from disco_detr.convert.torchvision_resnet import torchvision_resnet_to_detectron2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--prefix", default="backbone.")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    args = parser.parse_args(argv)
    state = torch.load(args.src, map_location="cpu", weights_only=not args.allow_pickle)
    converted, dropped = torchvision_resnet_to_detectron2(state, args.prefix)
    torch.save({"model": converted, "__author__": f"converted from {args.src}"}, args.dst)
    print(f"wrote {len(converted)} tensors to {args.dst}; dropped {len(dropped)}: {', '.join(dropped[:8])}"
          + (" ..." if len(dropped) > 8 else ""))
