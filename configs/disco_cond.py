# DisCo DETR pre-training of Conditional DETR R50 (paper settings): 300 queries, n = 10
# boxes, frozen R50 (SwAV weights converted with tools/convert/convert_torchvision_resnet.py, in
# train.init_checkpoint: the run refuses to start without them), AdamW 1e-4, weight decay
# 1e-4, clip 0.1, 60 epochs of the training set the run loads, lr drop at epoch 40
# ("40/60"), batch 256. Fusion adds the other view's object feature to the positional query and
# lets the detector's own layers process the sum (eq. 3 read as the detector's own path, SPEC section 4).
from detectron2.config import LazyCall as L

from disco_detr.modeling.pretrain.disco import DisCoDETR

from .common.data.pretrain import dataloader
from .common.models.conditional_detr_r50 import model as _detector
from .common.optim import AdamW as optimizer
from .common.schedule import step_schedule
from .common.train import train

EPOCHS, DROP_EPOCH = 60, 40

_detector.num_classes = 2  # object / no-object; fine-tuning replaces the class head
_detector.criterion = None  # DisCoDETR computes the pre-training losses
_detector.backbone.freeze_at = 5  # the whole backbone is frozen (FrozenBN already)

model = L(DisCoDETR)(
    detector=_detector,
    feature_levels=("res5",),
    use_dmoqf=True,
    fusion="add",
    weight_loc=1.0,
    weight_rec=5.0,  # lambda_0 (Conditional DETR)
    weight_enc=10.0,  # lambda_1
    weight_contrast=2.0,  # lambda_3
    cld_projector=True,
    cld_predictor=True,
    health_period=10,  # log pre-training health (group agreement, reference offset/spread/displacement)
    require_backbone_weights=True,  # refuse to start unless train.init_checkpoint holds the frozen backbone
)

dataloader.train.dataset.names = "mini_imagenet_train"
dataloader.train.total_batch_size = 256
optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
train.clip_grad_norm = 0.1
train.max_iter = None  # from train.epochs and the size of the dataset the run loads
train.epochs = EPOCHS
train.checkpointer.period = 1200  # iterations: about 5 epochs of mini-ImageNet (60,000 images) at batch 256
train.eval_period = 0
train.output_dir = "./output/disco_cond"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
