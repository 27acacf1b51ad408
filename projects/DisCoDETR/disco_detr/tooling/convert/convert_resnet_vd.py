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
from disco_detr.convert.resnet_vd import RESNET_VD_SOURCES, convert_resnet_vd, infer_resnet_vd_config

from .backbone_cli import backbone_parser, convert_file


def main(argv=None):
    parser = backbone_parser(__doc__, RESNET_VD_SOURCES)
    parser.add_argument("--source-prefix", default=None, help="backbone prefix inside the file (found automatically)")
    args = parser.parse_args(argv)
    converted, dropped = convert_file(args, convert_resnet_vd, source_prefix=args.source_prefix)
    config = infer_resnet_vd_config({k[len(args.prefix):]: v for k, v in converted.items()})
    params = sum(v.numel() for k, v in converted.items() if k.endswith(("weight", "bias")))
    print(f"wrote {len(converted)} tensors ({params:,} parameters) to {args.dst}: stem {config['stem_widths']}, "
          f"depths {config['depths']}, widths {config['widths']}, bottleneck ratio {config['bottleneck_ratio']}")
    print(f"dropped {len(dropped)} keys" + (f": {', '.join(dropped[:8])}" + (" ..." if len(dropped) > 8 else "")
                                           if dropped else ""))
