# Pre-training configs from detector configs: DisCo / Siamese DETR (DisCoDETR) and DETReg (DETRegPretrain).
#
# Every pre-training config is a detector config (configs/common/models/<variant>.py, or a demo detector)
# turned into a pre-training one here, then patched by a few plain lines of its own:
#
#   from .common.models.dab_detr_r50 import model as _detector
#   from .common.pretrain import disco_pretraining
#   dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "dab")
#   train.output_dir = "./output/disco_dab"
#
# Siamese DETR is DisCo without DMOQF and without CLD: its configs set model.use_dmoqf = False and
# model.weight_contrast = 0.0 on a DisCo one.
from detectron2.config import LazyCall as L

from disco_detr.modeling.pretrain.detreg import DETRegPretrain
from disco_detr.modeling.pretrain.disco import DisCoDETR

from .data.detreg import dataloader as _detreg_dataloader
from .data.pretrain import dataloader as _disco_dataloader
from .optim import AdamW as _optimizer
from .schedule import step_schedule
from .train import train as _train

#: DisCo's loss weights per detector variant: lambda_0 (weight_rec, L_rec) and lambda_3 (weight_contrast, CLD).
#: lambda_0 is 5 for Conditional DETR (DAB-DETR takes its value: the authors released no DAB-DETR
#: pre-training) and 3 for the deformable-attention variants (Deformable DETR, DINO, RT-DETR); lambda_3 is 2,
#: 5 for multi-scale Deformable DETR (Table 3 (c)).
DISCO_LOSS_WEIGHTS = {
    "cond": {"weight_rec": 5.0, "weight_contrast": 2.0},
    "dab": {"weight_rec": 5.0, "weight_contrast": 2.0},
    "deformable_ms": {"weight_rec": 3.0, "weight_contrast": 5.0},
    "deformable_ss": {"weight_rec": 3.0, "weight_contrast": 2.0},
    "dino": {"weight_rec": 3.0, "weight_contrast": 2.0},
    "rtdetr": {"weight_rec": 3.0, "weight_contrast": 2.0},
}


def pretraining_detector(detector, num_classes: int, freeze_backbone: bool = True):
    """The detector config ``detector`` changed in place for pre-training, and returned: ``num_classes`` 2
    (object / no-object: DisCo, Siamese DETR) or 1 (every proposal is an "object": DETReg; fine-tuning
    replaces the class head), no criterion (the pre-training model computes the losses), no denoising
    queries (pre-training decodes its matching queries only), the whole backbone frozen (the paper
    configs; the demo's backbones come frozen by their own config)."""
    detector.num_classes = num_classes
    detector.criterion = None
    if "num_denoising" in detector:
        detector.num_denoising = 0
    if freeze_backbone:
        detector.backbone.freeze_at = 5
    return detector


def disco_model(detector, feature_levels, variant: str):
    """DisCoDETR around ``detector`` (already a :func:`pretraining_detector`) with the paper's settings and
    ``variant``'s loss weights (:data:`DISCO_LOSS_WEIGHTS`); object and crop features from ``feature_levels``."""
    return L(DisCoDETR)(
        detector=detector,
        feature_levels=feature_levels,
        use_dmoqf=True,
        fusion="add",
        weight_loc=1.0,
        weight_enc=10.0,  # lambda_1
        **DISCO_LOSS_WEIGHTS[variant],
        cld_projector=True,
        cld_predictor=True,
        health_period=10,  # log pre-training health (group agreement, reference offset/spread/displacement)
    )


def detreg_model(detector, embedding_levels=("res3",)):
    """DETRegPretrain around ``detector`` (already a :func:`pretraining_detector`), the release's settings;
    ``embedding_levels``: the backbone level whose crop features are the embedding targets (C3, 512 channels)."""
    return L(DETRegPretrain)(
        detector=detector,
        embedding_levels=embedding_levels,
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


def _paper_budget(train, epochs: int, checkpoint_period: int):
    """The paper-scale pre-training run: clip 0.1, a frozen backbone that init_checkpoint must provide,
    ``epochs`` of the training set the run loads (max_iter from its size), a checkpoint every
    ``checkpoint_period`` iterations, no evaluation."""
    train.clip_grad_norm = 0.1
    train.require_backbone_weights = True  # refuse to start unless train.init_checkpoint holds the frozen backbone
    train.max_iter = None  # from train.epochs and the size of the dataset the run loads
    train.epochs = epochs
    train.checkpointer.period = checkpoint_period
    train.eval_period = 0
    return train


def disco_pretraining(detector, feature_levels, variant: str):
    """The paper's DisCo pre-training of ``detector``: (dataloader, lr_multiplier, model, optimizer, train).

    Frozen R50 (SwAV weights converted with tools/convert/convert_torchvision_resnet.py, in
    train.init_checkpoint), AdamW 1e-4, weight decay 1e-4, clip 0.1, 60 epochs of the training set the run
    loads (mini-ImageNet by default), lr drop at epoch 40 ("40/60"), batch 256."""
    epochs, drop_epoch = 60, 40
    model = disco_model(pretraining_detector(detector, num_classes=2), feature_levels, variant)
    dataloader, optimizer, train = _disco_dataloader, _optimizer, _train
    dataloader.train.dataset.names = "mini_imagenet_train"
    dataloader.train.total_batch_size = 256
    optimizer.lr = 1e-4
    optimizer.weight_decay = 1e-4
    train = _paper_budget(train, epochs, checkpoint_period=1200)  # about 5 epochs of mini-ImageNet at batch 256
    lr_multiplier = step_schedule(drop_fraction=drop_epoch / epochs)
    return dataloader, lr_multiplier, model, optimizer, train


def detreg_pretraining(detector, embedding_levels=("res3",)):
    """The DETReg release's pre-training of ``detector``: (dataloader, lr_multiplier, model, optimizer, train).

    Selective-search proposals (the first 30 per image), frozen SwAV R50 (train.init_checkpoint), AdamW 2e-4
    with the sampling offsets and reference points at x0.1 (detectors without them set
    optimizer.params.lr_factor_keys = {}), weight decay 1e-4, clip 0.1, batch 192, 50 epochs with the drop at
    40 (the release: ImageNet-100; here the training set the run loads, mini-ImageNet by default)."""
    epochs, drop_epoch = 50, 40
    model = detreg_model(pretraining_detector(detector, num_classes=1), embedding_levels)
    dataloader, optimizer, train = _detreg_dataloader, _optimizer, _train
    dataloader.train.dataset.names = "mini_imagenet_train_ss"
    dataloader.train.total_batch_size = 192
    optimizer.lr = 2e-4
    optimizer.weight_decay = 1e-4
    optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
    train = _paper_budget(train, epochs, checkpoint_period=1500)  # about 5 epochs of mini-ImageNet at batch 192
    lr_multiplier = step_schedule(drop_fraction=drop_epoch / epochs)
    return dataloader, lr_multiplier, model, optimizer, train


def _demo_budget(train, max_iter: int):
    train.max_iter = max_iter
    train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
    train.epochs = None
    train.checkpointer.period = max_iter
    train.eval_period = 0
    return train


def demo_disco_pretraining(detector, feature_levels, variant: str, optimizer, train, max_iter: int = 50):
    """The CPU demo's DisCo pre-training of the demo ``detector``, with the paper's DisCo settings for
    ``variant`` and the demo fine-tuning config's ``optimizer`` and ``train``: (dataloader, lr_multiplier,
    model, optimizer, train). 50 iterations of 8 images: chosen from the budget study (README, "Budget
    study"); tools/run_demo.py passes --pretrain-iters."""
    model = disco_model(pretraining_detector(detector, num_classes=2, freeze_backbone=False), feature_levels,
                        variant)
    dataloader = _disco_dataloader
    dataloader.train.dataset.names = "disco_demo_unlabelled"
    dataloader.train.mapper.update(min_sizes=(128, 144, 160), max_size=240, crop_size=64,
                                   # on a CPU the data worker overlaps with the step: colour augmentation and
                                   # crops stay in the worker (the same distribution as the device path)
                                   photometric="cpu", crops_on_device=False)
    dataloader.batch_transform = None  # nothing left to the device
    dataloader.train.total_batch_size = 8
    dataloader.train.num_workers = 1
    lr_multiplier = step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02)
    return dataloader, lr_multiplier, model, optimizer, _demo_budget(train, max_iter)


def demo_detreg_pretraining(detector, optimizer, train, max_iter: int = 50):
    """The CPU demo's DETReg pre-training of the demo ``detector`` (its backbone must also output
    ``stride8``, the embedding targets), with the release's DETReg settings and the demo fine-tuning
    config's ``optimizer`` and ``train``: (dataloader, lr_multiplier, model, optimizer, train)."""
    model = detreg_model(pretraining_detector(detector, num_classes=1, freeze_backbone=False), ("stride8",))
    dataloader = _detreg_dataloader
    dataloader.train.dataset.names = "disco_demo_unlabelled_ss"
    dataloader.train.mapper.update(scales=(128, 144, 160), max_size=240, crop_resize_sizes=(140, 170, 200),
                                   crop_size_range=(128, 200), crop_size=64, num_proposals=10)
    dataloader.train.total_batch_size = 8
    dataloader.train.num_workers = 1
    lr_multiplier = step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02)
    return dataloader, lr_multiplier, model, optimizer, _demo_budget(train, max_iter)
