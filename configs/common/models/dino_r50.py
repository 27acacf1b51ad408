# DINO 4-scale (Zhang et al. 2023) on ResNet-50-vd, as the DisCo paper fine-tunes it:
# backbone res3-res5 (frozen stem, frozen BN) + one stride-64 level (conv3x3/s2 + GroupNorm on res5),
# 6+6 deformable layers, d=256, 8 heads, 4 levels x 4 points, FFN 2048, dropout 0, 900 queries, mixed
# query selection, look-forward-twice, contrastive denoising (100 queries, label noise 0.5, box noise 1.0),
# focal loss with DINO's weights (class 1, L1 5, GIoU 2; matcher 2 / 5 / 2, also for the encoder and
# denoising losses), top-300 (query, class) pairs at inference (detrex's select_box_nums_for_evaluation).
from detectron2.config import LazyCall as L

from disco_detr.modeling import DINO, build_resnet_vd
from disco_detr.modeling.detectors.deformable_detr import DeformableEncoder
from disco_detr.modeling.detectors.dino import DINODecoder

from .detr_parts import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, focal_set_criterion

model = L(DINO)(
    backbone=L(build_resnet_vd)(depth=50, out_features=("res3", "res4", "res5"), freeze_at=1, norm="FrozenBN"),
    in_features=("res3", "res4", "res5"),
    num_extra_levels=1,
    position_offset=-0.5,
    position_temperature=10000.0,
    encoder=L(DeformableEncoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=2048, dropout=0.0,
                                 num_levels=4, num_points=4),
    decoder=L(DINODecoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=2048, dropout=0.0,
                           num_levels=4, num_points=4),
    num_classes=80,
    num_queries=900,
    num_denoising=100,
    label_noise_ratio=0.5,
    box_noise_scale=1.0,
    criterion=focal_set_criterion(weight_class=1.0),
    pixel_mean=IMAGENET_PIXEL_MEAN,
    pixel_std=IMAGENET_PIXEL_STD,
    num_detections=300,
    size_divisibility=0,
)
