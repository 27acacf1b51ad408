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
# weight_contrast 0). preset="demo" builds the CPU demo's pre-training of the demo detector instead, preset="small"
# the same detector on photos at 320-480 px (configs/small/, docs/own_data.md).
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


def _cpu_friendly(method: str, variant, detector, dataset: str, sizes: dict):
    """The demo's optimiser and train keys (:data:`DEMO_TRAINING`, with the variant's lr factors) around the
    method's paper model of ``detector``, reading ``dataset``; the mapper's image-size keys from ``sizes``
    (``method`` -> keys); colour augmentation and crops in the data workers (on a CPU they overlap with the
    step), 8 images per iteration, 1 worker. The demo and the small preset differ only in ``sizes``/budget."""
    demo = LazyConfig.load(config_path(DEMO_TRAINING))
    optimizer, train = demo.optimizer, demo.train
    if variant.lr_factor_keys is not None:
        optimizer.params.lr_factor_keys = dict(variant.lr_factor_keys)
    if method == "detreg":
        _with_embedding_level(detector, "stride8")
        model = detreg_model(pretraining_detector(detector, num_classes=1, freeze_backbone=False), ("stride8",))
        dataloader = copy.deepcopy(_detreg_dataloader)
    else:
        model = disco_model(pretraining_detector(detector, num_classes=2, freeze_backbone=False),
                            variant.demo_feature_levels, variant.disco_loss_weights)
        dataloader = copy.deepcopy(_disco_dataloader)
        # on a CPU the data worker overlaps with the step: colour augmentation and crops stay in the worker
        # (the same distribution as the device path)
        dataloader.train.mapper.update(photometric="cpu", crops_on_device=False)
        dataloader.batch_transform = None  # nothing left to the device
    dataloader.train.dataset.names = dataset
    dataloader.train.mapper.update(**sizes[method == "detreg"])
    dataloader.train.total_batch_size = 8
    dataloader.train.num_workers = 1
    return dataloader, model, optimizer, train


def _demo(method: str, variant, detector):
    """The CPU demo's pre-training of the demo ``detector`` with the method's paper settings and the demo's
    optimiser and train keys (:func:`_cpu_friendly`): 8 images per iteration for the variant's demo budget
    (50 iterations, 150 for Deformable DETR; chosen from the budget study, README "Budget study");
    tools/run_demo.py passes --pretrain-iters). DisCo / Siamese: views from a 128-160 px resize, 64-px crops;
    DETReg: the same scales, crops resized from 140-200, the first 10 proposals, embedding targets from the
    stride-8 stage (the release's C3 is stride 8 too)."""
    dataset = "disco_demo_unlabelled_ss" if method == "detreg" else "disco_demo_unlabelled"
    sizes = ({"min_sizes": (128, 144, 160), "max_size": 240, "crop_size": 64},
             {"scales": (128, 144, 160), "max_size": 240, "crop_resize_sizes": (140, 170, 200),
              "crop_size_range": (128, 200), "crop_size": 64, "num_proposals": 10})
    dataloader, model, optimizer, train = _cpu_friendly(method, variant, detector, dataset, sizes)
    return PretrainingConfig(dataloader=dataloader,
                             lr_multiplier=step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02), model=model,
                             optimizer=optimizer, train=_demo_budget(train, variant.demo_pretrain_iters))


#: the small preset's image sizes, pre-training and fine-tuning (configs/common/small.py): short side 320-480,
#: long side at most 640 (a 4:3 photo at most 480 x 640)
SMALL_MIN_SIZES = tuple(range(320, 481, 32))
SMALL_MAX_SIZE = 640


def _small(method: str, variant, detector):
    """The small preset: the demo detector of the variant (frozen ImageNet MobileNetV2, d = 128; its weights
    from train.init_checkpoint) pre-trained on photos at the paper's view sizes (short side 320-480, long side
    <= 640, 128-px crops; DETReg: its release's crop branch and 30 proposals), the demo's optimiser and CPU-side
    augmentation, 8 images per iteration for 100 epochs of the folder (lr drop at 2/3), a checkpoint every
    500 iterations. Its fine-tuning counterpart is configs/small/<variant>.py. On a CPU: seconds per iteration;
    on one small GPU: raise dataloader.train.total_batch_size and num_workers."""
    dataset = "disco_demo_unlabelled_ss" if method == "detreg" else "disco_demo_unlabelled"
    sizes = ({"min_sizes": SMALL_MIN_SIZES, "max_size": SMALL_MAX_SIZE, "crop_size": 128},
             {"scales": SMALL_MIN_SIZES, "max_size": SMALL_MAX_SIZE, "crop_resize_sizes": (400, 500, 600),
              "crop_size_range": (384, 600), "crop_size": 128})
    dataloader, model, optimizer, train = _cpu_friendly(method, variant, detector, dataset, sizes)
    train.require_backbone_weights = True  # the frozen MobileNetV2's weights come from train.init_checkpoint
    train.max_iter = None  # from train.epochs and the size of the folder
    train.epochs = 100
    train.checkpointer.period = 500
    train.eval_period = 0
    return PretrainingConfig(dataloader=dataloader,
                             lr_multiplier=step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02), model=model,
                             optimizer=optimizer, train=train)


#: preset -> (its detector config in the variant's row, its builder, its fine-tuning counterpart)
_PRESETS = {
    "paper": ("model_config", _paper, lambda row: row.finetune_coco_config),
    "small": ("demo_config", _small, lambda row: f"configs/small/{row.name}.py"),
    "demo": ("demo_config", _demo, lambda row: row.demo_config),
}


def pretraining(method: str, variant: str, preset: str = "paper") -> PretrainingConfig:
    """The ``method`` ("disco", "siamese", "detreg") pre-training config of ``variant`` (a key of
    disco_detr.variants.VARIANTS): ``preset`` "paper" wraps the variant's paper detector
    (configs/common/models/), "small" (photos at 320-480 px, :func:`_small`) and "demo" its CPU demo detector
    (configs/demo/<variant>.py). ``train.finetune_config`` names the fine-tuning config that fits the result
    (the transfer names it when a checkpoint does not fit). Fresh objects on every call."""
    if method not in ("disco", "siamese", "detreg"):
        raise KeyError(f"unknown pre-training method {method!r}; choose from disco, siamese, detreg")
    if preset not in _PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from {', '.join(_PRESETS)}")
    row = _VARIANTS[variant]
    detector_key, build, finetune_config = _PRESETS[preset]
    detector = LazyConfig.load(config_path(getattr(row, detector_key))).model
    cfg = build(method, row, detector)
    cfg.train.finetune_config = finetune_config(row)
    if method == "siamese":  # fixed query groups, no CLD
        cfg.model.use_dmoqf = False
        cfg.model.weight_contrast = 0.0
    return cfg
