# D-FINE on ResNet-50-vd: D-FINE-L's encoder, decoder and losses (the release's dfine_hgnetv2_l_coco: hybrid
# encoder d=256 with GELAN fusion and SCDown (expansion 1.0, depth 1.0), AIFI 1 layer, 8 heads, FFN 1024 on the
# stride-32 map; 300 selected queries; 6-layer decoder, 8 heads, FFN 1024, points (3, 6, 3) on strides 8/16/32;
# 32 bins, reg_scale 4, up 0.5; LQE top-4, hidden 64; 100 denoising queries; VFL 1 (alpha 0.75, gamma 2), L1 5,
# GIoU 2, FGL 0.15, DDF 1.5 (T 5); matcher focal 2 / L1 5 / GIoU 2) on RT-DETR's ResNet-50-vd (stem frozen,
# frozen BN) at strides 8/16/32. The release's HGNetv2 backbones come with their own model configs.
# Inputs are RGB scaled to [0, 1] (no mean/std), as the release feeds them.
# Weights: tools/convert/convert_dfine.py (transformers' layout or the release's), or the SSLD ImageNet backbone
# alone: tools/convert/convert_resnet_vd.py --source rtdetr.
from detectron2.config import LazyCall as L

from disco_detr.modeling import DFINE, HungarianMatcher, build_resnet_vd
from disco_detr.modeling.criterion import DFineCriterion
from disco_detr.modeling.detectors.d_fine import DFineDecoder
from disco_detr.modeling.layers.hybrid_encoder import HybridEncoder

model = L(DFINE)(
    backbone=L(build_resnet_vd)(depth=50, out_features=("res3", "res4", "res5"), freeze_at=1, norm="FrozenBN"),
    in_features=("res3", "res4", "res5"),
    encoder=L(HybridEncoder)(in_channels=(512, 1024, 2048), d_model=256, num_heads=8, dim_feedforward=1024,
                             dropout=0.0, aifi_levels=(2,), num_aifi_layers=1, temperature=10000.0, expansion=1.0,
                             depth_mult=1.0, aifi_position="hf", fusion="gelan"),
    decoder=L(DFineDecoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=1024, dropout=0.0,
                            points_per_level=(3, 6, 3), offset_scale=0.5),
    num_classes=80,
    num_queries=300,
    max_num_bins=32,
    reg_scale=4.0,
    up=0.5,
    lqe_top_k=4,
    lqe_hidden_dim=64,
    lqe_layers=2,
    criterion=L(DFineCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost="focal",
                                    focal_alpha=0.25, focal_gamma=2.0),
        weight_vfl=1.0,
        weight_bbox=5.0,
        weight_giou=2.0,
        weight_fgl=0.15,
        weight_ddf=1.5,
        ddf_temperature=5.0,
        max_num_bins="${..max_num_bins}",
        reg_scale="${..reg_scale}",
        up="${..up}",
        alpha=0.75,
        gamma=2.0,
        aux_loss=True,
    ),
    pixel_mean=[0.0, 0.0, 0.0],
    pixel_std=[255.0, 255.0, 255.0],
    num_denoising=100,
    label_noise_ratio=0.5,
    box_noise_scale=1.0,
    num_detections=300,
    size_divisibility=0,
)
