# Conditional DETR, ResNet-50 (frozen stem and res2, frozen BN), 6+6 layers, d=256, 300 queries.
from detectron2.config import LazyCall as L

from disco_detr.modeling import ConditionalDETR, build_resnet
from disco_detr.modeling.detectors.conditional_detr import ConditionalDecoder
from disco_detr.modeling.layers import DETREncoder

from .detr_parts import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, focal_set_criterion

model = L(ConditionalDETR)(
    backbone=L(build_resnet)(depth=50, out_features=("res5",), freeze_at=2, norm="FrozenBN"),
    in_feature="res5",
    # feature-map sine positions as in the Conditional DETR release (and detrex): offset 0, T 10000
    position_offset=0.0,
    position_temperature=10000.0,
    encoder=L(DETREncoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=2048, dropout=0.1),
    decoder=L(ConditionalDecoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=2048, dropout=0.1),
    num_classes=80,
    num_queries=300,
    criterion=focal_set_criterion(weight_class=2.0),
    pixel_mean=IMAGENET_PIXEL_MEAN,
    pixel_std=IMAGENET_PIXEL_STD,
    num_detections=100,
    size_divisibility=0,  # pad to the batch's largest image only, as the release does
)
