# DETReg pre-training (Bar et al., CVPR 2022) of multi-scale Deformable DETR R50, the release's own setting:
# selective-search proposals (the first 30 per image), one augmented view, objectness = the detector's own
# class head (sigmoid focal, weight 2), its own box head (L1 5, GIoU 2), an embedding head (MLP d -> d -> 512)
# regressing the frozen SwAV R50 C3 feature of each proposal's 128 x 128 crop (L1, weight 1, last layer only);
# matching cost class 2 / L1 5 / GIoU 2. Frozen SwAV R50 (train.init_checkpoint, the run refuses to start
# without it), AdamW 2e-4 with the sampling offsets and reference points at x0.1, weight decay 1e-4, clip
# 0.1, batch 192, 50 epochs with the drop at 40 (the release: ImageNet-100; here the training set the run
# loads, mini-ImageNet by default, as the DisCo / Siamese configs).
from detectron2.config import LazyCall as L

from disco_detr.modeling.pretrain.detreg import DETRegPretrain

from .common.data.detreg import dataloader
from .common.models.deformable_detr_r50 import model as _detector
from .common.optim import AdamW as optimizer
from .common.schedule import step_schedule
from .common.train import train

EPOCHS, DROP_EPOCH = 50, 40

_detector.num_classes = 1  # every proposal is an "object"; fine-tuning replaces the class head
_detector.criterion = None  # DETRegPretrain computes the pre-training losses
_detector.backbone.freeze_at = 5  # the whole backbone is frozen
_detector.backbone.out_features = ("res3", "res4", "res5")

model = L(DETRegPretrain)(
    detector=_detector,
    embedding_levels=("res3",),  # C3, 512 channels: the embedding target and the head's width
    weight_class=2.0,
    weight_bbox=5.0,
    weight_giou=2.0,
    weight_embedding=1.0,
    cost_class=2.0,
    cost_bbox=5.0,
    cost_giou=2.0,
    focal_alpha=0.25,
    focal_gamma=2.0,
    health_period=10,  # log pre-training health (references, matched IoU, embedding cosine)
)

dataloader.train.dataset.names = "mini_imagenet_train_ss"
dataloader.train.total_batch_size = 192
optimizer.lr = 2e-4
optimizer.weight_decay = 1e-4
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.clip_grad_norm = 0.1
train.require_backbone_weights = True  # refuse to start unless train.init_checkpoint holds the frozen backbone
train.max_iter = None  # from train.epochs and the size of the dataset the run loads
train.epochs = EPOCHS
train.checkpointer.period = 1500  # iterations: about 5 epochs of mini-ImageNet (60,000 images) at batch 192
train.eval_period = 0
train.output_dir = "./output/detreg_deformable_ms"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
