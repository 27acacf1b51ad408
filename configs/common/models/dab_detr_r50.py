# DAB-DETR, ResNet-50 (frozen stem and res2, frozen BN), 6+6 layers, d=256, 8 heads, FFN 2048 with PReLU,
# dropout 0 (DAB-DETR's and detrex's default), 300 learned 4-d anchor boxes (centres initialised uniformly,
# as detrex's config), width/height-modulated cross-attention, anchors refined after every layer by the
# shared box head; focal loss, matcher 2/5/2 and loss weights 1/5/2 of its paper (and detrex).
from detectron2.config import LazyCall as L

from disco_detr.modeling import DABDETR, build_resnet
from disco_detr.modeling.detectors.dab_detr import DABDecoder, DABEncoder

from .detr_parts import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, focal_set_criterion

model = L(DABDETR)(
    backbone=L(build_resnet)(depth=50, out_features=("res5",), freeze_at=2, norm="FrozenBN"),
    in_feature="res5",
    # feature-map sine positions as in the DAB-DETR release (and detrex): offset 0, temperature 20
    position_offset=0.0,
    position_temperature=20.0,
    encoder=L(DABEncoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=2048, dropout=0.0),
    decoder=L(DABDecoder)(num_layers=6, d_model=256, num_heads=8, dim_feedforward=2048, dropout=0.0,
                          modulate_hw_attn=True),
    num_classes=80,
    num_queries=300,
    random_anchor_centres=True,
    criterion=focal_set_criterion(weight_class=1.0),
    pixel_mean=IMAGENET_PIXEL_MEAN,
    pixel_std=IMAGENET_PIXEL_STD,
    num_detections=100,
    size_divisibility=0,  # pad to the batch's largest image only, as the release does
)
