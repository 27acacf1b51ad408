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
from disco_detr.convert.hgnetv2 import HGNETV2_SOURCES, convert_hgnetv2

from .backbone_cli import backbone_parser, convert_file


def main(argv=None):
    args = backbone_parser(__doc__, HGNETV2_SOURCES).parse_args(argv)
    converted, dropped = convert_file(args, convert_hgnetv2)
    lab = any(".lab." in k for k in converted)
    print(f"wrote {len(converted)} tensors to {args.dst} (learnable affine blocks: {'yes' if lab else 'no'}); "
          f"dropped {len(dropped)} keys")
