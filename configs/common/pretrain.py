# The pre-training config entry point: pretraining(method, variant) builds a DisCo DETR, Siamese DETR or
# DETReg pre-training config of a detector variant (a row of disco_detr.variants.VARIANTS) and returns its
# five sections by name. A leaf config reads:
#
#   from .common.pretrain import pretraining
#
#   _cfg = pretraining("disco", "dab")
#   dataloader = _cfg.dataloader
#   ...
#   train.output_dir = "./output/disco_dab"
#
# Every call builds fresh copies (the imported pieces are deep-copied, the detector config is loaded anew), so
# no call changes what another sees. Siamese DETR is DisCo without DMOQF and without CLD (use_dmoqf False,
# weight_contrast 0). preset="demo" builds the CPU demo's pre-training of the demo detector instead.
import copy
from dataclasses import dataclass

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from disco_detr.modeling.pretrain.detreg import DETRegPretrain
from disco_detr.modeling.pretrain.disco import DisCoDETR
from disco_detr.variants import VARIANTS as _VARIANTS
from disco_detr.variants import config_path

from .data.detreg import dataloader as _detreg_dataloader
from .data.pretrain import dataloader as _disco_dataloader
from .optim import AdamW as _optimizer
from .schedule import step_schedule
from .train import train as _train

#: the demo's shared training setting (optimiser, train keys) of every demo pre-training
DEMO_TRAINING = "configs/demo/cond.py"


@dataclass(frozen=True)
class PretrainingConfig:
    """The five sections of a pre-training config, by name (LazyConfig nodes, fresh for each call)."""

    dataloader: object
    lr_multiplier: object
    model: object
    optimizer: object
    train: object


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


def disco_model(detector, feature_levels, loss_weights):
    """DisCoDETR around ``detector`` (already a :func:`pretraining_detector`) with the paper's settings and
    the variant's ``loss_weights`` (weight_rec, weight_contrast); object and crop features from ``feature_levels``."""
    return L(DisCoDETR)(
        detector=detector,
        feature_levels=feature_levels,
        use_dmoqf=True,
        fusion="add",
        weight_loc=1.0,
        weight_enc=10.0,  # lambda_1
        **loss_weights,
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


def _demo_budget(train, max_iter: int):
    train.max_iter = max_iter
    train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
    train.epochs = None
    train.checkpointer.period = max_iter
    train.eval_period = 0
    return train


def _with_embedding_level(detector, level: str):
    """DETReg's embedding targets come from backbone ``level``: add it to the backbone's outputs if missing."""
    if level not in detector.backbone.out_features:
        detector.backbone.out_features = (level, *detector.backbone.out_features)


def _paper(method: str, variant, detector):
    """The paper's pre-training of ``detector``, a frozen R50 whose weights train.init_checkpoint must hold (SwAV
    weights converted with tools/convert/convert_torchvision_resnet.py).

    DisCo / Siamese DETR: AdamW 1e-4 (the variant's lr factors), weight decay 1e-4, clip 0.1, 60 epochs of the
    training set the run loads (mini-ImageNet by default), lr drop at epoch 40 ("40/60"), batch 256.
    DETReg, the release's: selective-search proposals (the first 30 per image), C3 embedding targets, AdamW
    2e-4 with the variant's DETReg lr factors, weight decay 1e-4, clip 0.1, batch 192, 50 epochs with the drop
    at 40 (the release: ImageNet-100; here the training set the run loads)."""
    optimizer, train = copy.deepcopy(_optimizer), copy.deepcopy(_train)
    optimizer.weight_decay = 1e-4
    if method == "detreg":
        epochs, drop_epoch, period = 50, 40, 1500  # a checkpoint about every 5 epochs of mini-ImageNet
        _with_embedding_level(detector, "res3")
        model = detreg_model(pretraining_detector(detector, num_classes=1), ("res3",))
        dataloader = copy.deepcopy(_detreg_dataloader)
        dataloader.train.dataset.names = "mini_imagenet_train_ss"
        dataloader.train.total_batch_size = 192
        optimizer.lr = 2e-4
        optimizer.params.lr_factor_keys = dict(variant.detreg_lr_factor_keys)
    else:
        epochs, drop_epoch, period = 60, 40, 1200
        model = disco_model(pretraining_detector(detector, num_classes=2), variant.feature_levels,
                            variant.disco_loss_weights)
        dataloader = copy.deepcopy(_disco_dataloader)
        dataloader.train.dataset.names = "mini_imagenet_train"
        dataloader.train.total_batch_size = 256
        optimizer.lr = 1e-4
        if variant.lr_factor_keys is not None:
            optimizer.params.lr_factor_keys = dict(variant.lr_factor_keys)
    return PretrainingConfig(dataloader=dataloader, lr_multiplier=step_schedule(drop_fraction=drop_epoch / epochs),
                             model=model, optimizer=optimizer, train=_paper_budget(train, epochs, period))


def _demo(method: str, variant, detector):
    """The CPU demo's pre-training of the demo ``detector`` with the method's paper settings and the demo's
    optimiser and train keys (:data:`DEMO_TRAINING`, with the variant's lr factors): 8 images per iteration
    for the variant's demo budget (50 iterations, 150 for Deformable DETR; chosen from the budget study,
    README "Budget study"; tools/run_demo.py passes --pretrain-iters). DisCo / Siamese: views from a 128-160 px
    resize, 64-px crops; DETReg: the same scales, crops resized from 140-200, the first 10 proposals, embedding
    targets from the stride-8 stage (the release's C3 is stride 8 too)."""
    demo = LazyConfig.load(config_path(DEMO_TRAINING))
    optimizer, train = demo.optimizer, demo.train
    if variant.lr_factor_keys is not None:
        optimizer.params.lr_factor_keys = dict(variant.lr_factor_keys)
    if method == "detreg":
        _with_embedding_level(detector, "stride8")
        model = detreg_model(pretraining_detector(detector, num_classes=1, freeze_backbone=False), ("stride8",))
        dataloader = copy.deepcopy(_detreg_dataloader)
        dataloader.train.dataset.names = "disco_demo_unlabelled_ss"
        dataloader.train.mapper.update(scales=(128, 144, 160), max_size=240, crop_resize_sizes=(140, 170, 200),
                                       crop_size_range=(128, 200), crop_size=64, num_proposals=10)
    else:
        model = disco_model(pretraining_detector(detector, num_classes=2, freeze_backbone=False),
                            variant.demo_feature_levels, variant.disco_loss_weights)
        dataloader = copy.deepcopy(_disco_dataloader)
        dataloader.train.dataset.names = "disco_demo_unlabelled"
        dataloader.train.mapper.update(min_sizes=(128, 144, 160), max_size=240, crop_size=64,
                                       # on a CPU the data worker overlaps with the step: colour augmentation
                                       # and crops stay in the worker (the same distribution as the device path)
                                       photometric="cpu", crops_on_device=False)
        dataloader.batch_transform = None  # nothing left to the device
    dataloader.train.total_batch_size = 8
    dataloader.train.num_workers = 1
    return PretrainingConfig(dataloader=dataloader,
                             lr_multiplier=step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02), model=model,
                             optimizer=optimizer, train=_demo_budget(train, variant.demo_pretrain_iters))


def pretraining(method: str, variant: str, preset: str = "paper") -> PretrainingConfig:
    """The ``method`` ("disco", "siamese", "detreg") pre-training config of ``variant`` (a key of
    disco_detr.variants.VARIANTS): ``preset`` "paper" wraps the variant's paper detector
    (configs/common/models/), "demo" its CPU demo detector (configs/demo/<variant>.py). Fresh objects on
    every call."""
    if method not in ("disco", "siamese", "detreg"):
        raise KeyError(f"unknown pre-training method {method!r}; choose from disco, siamese, detreg")
    if preset not in ("paper", "demo"):
        raise KeyError(f"unknown preset {preset!r}; choose from paper, demo")
    row = _VARIANTS[variant]
    detector = LazyConfig.load(config_path(row.model_config if preset == "paper" else row.demo_config)).model
    cfg = (_paper if preset == "paper" else _demo)(method, row, detector)
    if method == "siamese":  # fixed query groups, no CLD
        cfg.model.use_dmoqf = False
        cfg.model.weight_contrast = 0.0
    return cfg
