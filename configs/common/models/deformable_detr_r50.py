# Deformable DETR (plain: no box refinement, not two-stage), ResNet-50 (frozen stem and res2,
# frozen BN), multi-scale: res3-res5 + one stride-64 level, 6+6 layers, d=256, 8 heads,
# 4 points, FFN 1024, dropout 0.1, 300 queries, focal loss, matcher and loss weights 2/5/2.
# single_scale(model) turns it into the paper's single-scale model (res5 only, one level).
from detectron2.config import LazyCall as L

from disco_detr.modeling import DeformableDETR, build_resnet
from disco_detr.modeling.detectors.deformable_detr import DeformableDecoder, DeformableEncoder

from .detr_parts import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, focal_set_criterion

model = L(DeformableDETR)(
    backbone=L(build_resnet)(depth=50, out_features=("res3", "res4", "res5"), freeze_at=2, norm="FrozenBN"),
    in_features=("res3", "res4", "res5"),
    num_extra_levels=1,  # conv3x3/s2 + GroupNorm on res5: stride 64
    # feature-map sine positions as in the Deformable DETR release (and detrex): offset -0.5, T 10000
    position_offset=-0.5,
    position_temperature=10000.0,
    encoder=L(DeformableEncoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=1024, dropout=0.1,
                                 num_levels=4, num_points=4),
    decoder=L(DeformableDecoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=1024, dropout=0.1,
                                 num_levels=4, num_points=4),
    num_classes=80,
    num_queries=300,
    criterion=focal_set_criterion(weight_class=2.0),
    pixel_mean=IMAGENET_PIXEL_MEAN,
    pixel_std=IMAGENET_PIXEL_STD,
    num_detections=100,
    size_divisibility=0,  # pad to the batch's largest image only, as the release does
)


def single_scale(model, feature: str = "res5"):
    """Make a Deformable DETR model config single-scale in place: one backbone level, no extra level."""
    model.backbone.out_features = (feature,)
    model.in_features = (feature,)
    model.num_extra_levels = 0
    model.encoder.num_levels = 1
    model.decoder.num_levels = 1
    return model
