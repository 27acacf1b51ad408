# RT-DETR R50-vd as in its paper and release (rtdetr_r50vd_6x_coco): ResNet-50-vd (stem frozen, frozen BN;
# the release's freeze_at=0 is freeze_at=1 here) at strides 8/16/32, hybrid encoder d=256 (AIFI: 1 layer,
# 8 heads, FFN 1024, GELU, on the stride-32 map; CCFM with 3 RepVGG blocks per CSPRep layer, expansion 1.0),
# IoU-aware selection of 300 queries, 6-layer decoder (8 heads, FFN 1024, 3 levels x 4 points, dropout 0),
# 100 denoising queries (label noise 0.5, box noise 1.0), varifocal loss 1 (alpha 0.75, gamma 2) + L1 5 +
# GIoU 2, matcher focal 2 / L1 5 / GIoU 2 (alpha 0.25, gamma 2), top-300 inference over queries x classes.
# Inputs are RGB scaled to [0, 1] (no mean/std), as the release feeds them.
# Weights: tools/convert/convert_rtdetr.py (transformers' PekingU/rtdetr_r50vd or the release's checkpoints), or the
# SSLD ImageNet backbone alone: tools/convert/convert_resnet_vd.py --source rtdetr.
from detectron2.config import LazyCall as L

from disco_detr.modeling import RTDETR, HungarianMatcher, build_resnet_vd
from disco_detr.modeling.criterion import RTDETRCriterion
from disco_detr.modeling.detectors.rt_detr import RTDETRDecoder
from disco_detr.modeling.layers.hybrid_encoder import HybridEncoder

model = L(RTDETR)(
    backbone=L(build_resnet_vd)(depth=50, out_features=("res3", "res4", "res5"), freeze_at=1, norm="FrozenBN"),
    in_features=("res3", "res4", "res5"),
    encoder=L(HybridEncoder)(in_channels=(512, 1024, 2048), d_model=256, num_heads=8, dim_feedforward=1024,
                             dropout=0.0, aifi_levels=(2,), num_aifi_layers=1, temperature=10000.0, expansion=1.0,
                             depth_mult=1.0, aifi_position="hf"),
    decoder=L(RTDETRDecoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=1024, dropout=0.0,
                             num_levels=3, num_points=4),
    num_classes=80,
    num_queries=300,
    criterion=L(RTDETRCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost="focal",
                                    focal_alpha=0.25, focal_gamma=2.0),
        weight_vfl=1.0,
        weight_bbox=5.0,
        weight_giou=2.0,
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
