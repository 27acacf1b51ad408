"""The LazyConfig trainer: a detectron2 ``DefaultTrainer`` that reads LazyConfig files.

``DefaultTrainer`` builds everything from YACS keys; this subclass builds the same pieces
from ``cfg.model``, ``cfg.optimizer``, ``cfg.lr_multiplier``, ``cfg.dataloader`` and
``cfg.train`` and keeps the rest of detectron2's machinery (hooks, writers, checkpointer,
``launch``). It serves fine-tuning and pre-training alike.
"""
from __future__ import annotations

import logging
import math
import os
import time
import weakref

import torch
from detectron2.config import instantiate
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.engine.defaults import default_writers
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger
from omegaconf import OmegaConf

from ..analysis.hooks import build_analysis_hooks
from ..checkpoint import DisCoCheckpointer
from ..data.build import cap_num_workers, set_loader_start
from ..evaluation import with_dataset_evaluators
from ..modeling.detectors.base import unwrap_detector
from ..modeling.layers.ms_deform_attn import set_ms_deform_attn_backend
from ..structures import PretrainBatch
from ..utils.seeding import mix_seeds
from .ema import EMAHook, ModelEMA
from .num_classes import check_num_classes, resolve_num_classes
from .preemption import StopOnSignal, save_and_wait

__all__ = ["Trainer", "DETRTrainLoop", "NonFiniteLossError", "NonFiniteStop", "instantiate_capped", "resolve_device",
           "TRAIN_KEYS"]

logger = logging.getLogger("detectron2")

#: Every key of ``cfg.train`` the trainer reads; any other key is a typo and is rejected.
TRAIN_KEYS = {
    "output_dir", "init_checkpoint", "max_iter", "device", "seed", "amp", "ddp", "clip_grad_norm",
    "checkpointer", "eval_period", "log_period", "checkpoint_allow_pickle", "epochs", "transfer_mismatch", "analysis",
    "ema", "compile", "ms_deform_attn_backend", "require_backbone_weights", "nonfinite", "nonfinite_max_consecutive",
    "activation_checkpointing",
    "finetune_config",  # pre-training: the fine-tuning config that fits the result (read by the transfer only)
}

#: The values of ``train.nonfinite``: what a step whose summed loss is NaN or inf does.
NONFINITE_POLICIES = ("raise", "skip")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device} but CUDA is not available; use train.device=cpu or auto")
    return device


def compile_variant_name(model) -> str:
    """The class name of the detector (or pre-training meta-architecture) inside DDP, for messages."""
    model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return type(model).__name__


def compile_error_summary(error: BaseException) -> str:
    """One line: the compiler exception's type and the first line of its root cause."""
    cause = getattr(error, "inner_exception", None) or error.__cause__ or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()] or [""]
    detail = f"{type(cause).__name__}: {lines[0][:400]}" if cause is not error else lines[0][:400]
    return f"{type(error).__name__}: {detail}"


def amp_dtype() -> torch.dtype:
    """The autocast dtype of CUDA AMP: bfloat16 where the device supports it, else float16."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def resolve_max_iter(cfg, data_loader) -> int:
    """``train.max_iter`` when it is set; otherwise ``train.epochs`` passes over the training
    set the run actually loaded (so an epoch schedule stays right for any dataset), at
    ``dataloader.train.total_batch_size`` images per iteration."""
    max_iter, epochs = cfg.train.get("max_iter"), cfg.train.get("epochs")
    if max_iter:
        if epochs:
            logger.info("train.max_iter=%d is set: it overrides train.epochs=%s", max_iter, epochs)
        return int(max_iter)
    if not epochs:
        raise ValueError("Set train.max_iter (iterations) or train.epochs (passes over the training set).")
    num_images = len(data_loader.dataset.dataset)
    batch = cfg.dataloader.train.total_batch_size
    max_iter = int(math.ceil(epochs * num_images / batch))
    logger.info("train.epochs=%s over %d training images at batch %d: %d iterations", epochs, num_images, batch,
                max_iter)
    return max_iter


def compile_options(compile_cfg) -> dict | None:
    """``train.compile`` -> the keyword arguments of ``torch.compile``, or None when it is off."""
    compile_cfg = dict(compile_cfg or {})
    unknown = sorted(set(compile_cfg) - {"enabled", "backend", "mode"})
    if unknown:
        raise KeyError(f"Unknown key(s) in cfg.train.compile: {', '.join(unknown)} (known: enabled, backend, mode)")
    if not compile_cfg.get("enabled", False):
        return None
    options = {"backend": compile_cfg.get("backend", "inductor")}
    if compile_cfg.get("mode"):
        options["mode"] = compile_cfg["mode"]
    return options


def validate_train_config(train_cfg) -> None:
    unknown = sorted(set(train_cfg.keys()) - TRAIN_KEYS)
    if unknown:
        raise KeyError(f"Unknown key(s) in cfg.train: {', '.join('train.' + k for k in unknown)}. "
                       f"Known keys: {', '.join(sorted(TRAIN_KEYS))}")


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`NonFiniteStop` after ``train.nonfinite_max_consecutive`` skipped steps in a row."""


def batch_image_ids(data) -> list:
    """The images of a fine-tuning batch (a list of dataset dicts), by ``file_name`` (else ``image_id``), for
    messages; pre-training batches (:mod:`disco_detr.structures`) carry no image ids: an empty list."""
    if not isinstance(data, (list, tuple)):
        return []
    return [d.get("file_name", d.get("image_id")) for d in data if isinstance(d, dict)]


def all_processes_finite(losses: torch.Tensor | None) -> bool:
    """Whether the summed loss is finite on every process (None: the forward failed, not finite). With several
    processes one all_reduce (MIN) of a flag, so every process takes the same branch before any backward."""
    finite = losses is not None and bool(torch.isfinite(losses.detach()).all())
    if comm.get_world_size() == 1:
        return finite
    dist = torch.distributed
    nccl = dist.get_backend() == "nccl"   # NCCL reduces CUDA tensors only; GLOO takes CPU tensors
    flag = torch.tensor([int(finite)], device=torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def describe_nonfinite(report: dict) -> str:
    """One process's part of the skip message: its loss terms (or the forward's error) and its images."""
    what = report["error"] or ", ".join(f"{k}={v:.4g}" for k, v in report["losses"].items())
    images = ", ".join(str(i) for i in report["images"]) or "no image ids in the batch"
    return f"rank {report['rank']}: {what}; images: {images}"


class DETRTrainLoop(SimpleTrainer):
    """SimpleTrainer with optional CUDA AMP, ``torch.compile``, gradient clipping and reproducible dropout.

    Each step reseeds torch's RNG from ``(seed, iteration, rank)`` after loading the batch,
    so a resumed run draws exactly the dropout masks the uninterrupted run would have.

    AMP (``amp=True``, CUDA): the forward runs under ``torch.autocast`` in bfloat16 where the GPU
    supports it, else float16, and only float16 gets a GradScaler. What stays float32 inside is
    the model's business (``modeling/precision.py``: matching, DMOQF, criteria, pre-training
    losses; deformable attention's locations, weights and sums); the summed loss is float32.

    ``compile_kwargs``: ``None`` (eager) or the keyword arguments of ``torch.compile`` (``backend``,
    ``mode``). The model's forward is compiled (``self.model`` itself stays the eager module, so
    checkpoints, EMA and evaluation see the usual parameter names). If compilation fails (at
    the first step or at a later recompilation), the loop logs why, names the variant, and
    runs the same step and all later ones eagerly.

    ``nonfinite``: ``"raise"`` (detectron2's FloatingPointError when the logged loss is NaN / inf) or ``"skip"``:
    after the forward every process learns whether any process's summed loss is non-finite (one all_reduce,
    before backward, so DDP's gradient all-reduce never waits for a process that skipped); if so, every process
    skips backward and the optimizer step (weights, optimizer and GradScaler state stay as they were), the
    iteration still counts (data position, LR schedule), rank 0 logs the iteration, the loss terms and image ids
    of the offending processes, and ``nonfinite_skipped`` (skips so far) goes to the event storage.
    A FloatingPointError raised by the forward (the Hungarian matcher refuses non-finite predictions) counts as a
    non-finite loss. :class:`NonFiniteStop` ends the run after ``nonfinite_max_consecutive`` skips in a row.
    Under float16 AMP a finite loss with non-finite gradients stays the GradScaler's business.

    Pre-training batches (any :class:`~disco_detr.structures.PretrainBatch`) are moved to ``device`` and given to
    ``batch_transform`` (``dataloader.batch_transform``, e.g. the device-side colour augmentation
    :class:`~disco_detr.data.photometric.PairedViewPhotometric`) before the forward (:meth:`prepare_batch`);
    fine-tuning batches (lists of dicts) go to the model as they come.
    """

    def __init__(self, model, data_loader, optimizer, *, amp: bool = False, clip_grad_norm: float = 0.0,
                 seed: int = 0, compile_kwargs: dict | None = None, device: torch.device | str | None = None,
                 batch_transform=None, nonfinite: str = "raise", nonfinite_max_consecutive: int = 10):
        super().__init__(model, data_loader, optimizer)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if int(nonfinite_max_consecutive) < 1:
            raise ValueError(f"train.nonfinite_max_consecutive must be at least 1, got {nonfinite_max_consecutive}")
        self.nonfinite = nonfinite
        self.nonfinite_max_consecutive = int(nonfinite_max_consecutive)
        self.nonfinite_skipped = 0        # skipped steps in this process's run
        self.nonfinite_consecutive = 0    # skipped steps in a row, up to the current iteration
        self.device = None if device is None else torch.device(device)
        self.batch_transform = batch_transform
        self.amp = amp
        # bf16 where the GPU supports it (no loss scaling needed), else fp16 with a loss scaler
        self.amp_dtype = amp_dtype() if amp else None
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp and self.amp_dtype == torch.float16 else None
        self.clip_grad_norm = clip_grad_norm
        self.seed = seed
        self.compiled_forward = None
        self.compile_error = None
        if compile_kwargs is not None:
            self.compiled_forward = torch.compile(model, **compile_kwargs)
            logger.info("train.compile: compiling the forward of %s with torch.compile(%s)",
                        compile_variant_name(model), ", ".join(f"{k}={v!r}" for k, v in compile_kwargs.items()))

    def forward_losses(self, data) -> tuple[dict, torch.Tensor]:
        """(loss dict, summed float32 loss) of one batch, compiled when possible (see the class docstring)."""
        if self.compiled_forward is not None:
            try:
                with torch.autocast("cuda", dtype=self.amp_dtype or torch.float16, enabled=self.amp):
                    loss_dict = self.compiled_forward(data)
                return loss_dict, sum(v.float() for v in loss_dict.values())
            except torch._dynamo.exc.TorchDynamoException as error:  # compile failures, not the model's errors
                self.compile_error = compile_error_summary(error)
                logger.warning("train.compile: %s does not compile (%s); running it eagerly from iteration %d on.",
                               compile_variant_name(self.model), self.compile_error, self.iter)
                self.compiled_forward = None
                torch.manual_seed(mix_seeds(self.seed, self.iter, comm.get_rank()))  # the eager retry draws the same
        with torch.autocast("cuda", dtype=self.amp_dtype or torch.float16, enabled=self.amp):
            loss_dict = self.model(data)
        return loss_dict, sum(v.float() for v in loss_dict.values())

    def prepare_batch(self, data):
        """A pre-training batch on ``device`` (when set), through ``batch_transform``; a batch whose
        photometric augmentation is left to the device but no transform is configured is refused."""
        if isinstance(data, PretrainBatch) and self.device is not None:
            data = data.to(self.device)
        if self.batch_transform is not None:
            return self.batch_transform(data)
        if isinstance(data, PretrainBatch) and data.photometric_pending:
            raise ValueError("The batch carries photometric parameters for the device (PairedViewMapper("
                             "photometric='device')) but dataloader.batch_transform is None; set "
                             "dataloader.batch_transform=L(PairedViewPhotometric)() (configs/common/data/pretrain.py), "
                             "or the mapper's photometric='cpu'")
        return data

    def run_step(self):
        assert self.model.training, "[DETRTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        data = self.prepare_batch(data)
        torch.manual_seed(mix_seeds(self.seed, self.iter, comm.get_rank()))

        if self.nonfinite == "skip":
            loss_dict, losses, error = self.guarded_forward_losses(data)
            if not all_processes_finite(losses):
                self.skip_step(loss_dict, error, data)
                return
            self.nonfinite_consecutive = 0
            get_event_storage().put_scalar("nonfinite_skipped", self.nonfinite_skipped, smoothing_hint=False)
        else:
            loss_dict, losses = self.forward_losses(data)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            losses.backward()
        self.after_backward()
        if self.clip_grad_norm > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def guarded_forward_losses(self, data) -> tuple[dict, torch.Tensor | None, str | None]:
        """:meth:`forward_losses` under ``nonfinite="skip"``: (loss dict, summed loss, None), or ({}, None, the
        error in one line) when the forward raised FloatingPointError."""
        try:
            return (*self.forward_losses(data), None)
        except FloatingPointError as error:
            return {}, None, f"{type(error).__name__} in the forward: {(str(error).splitlines() or [''])[0][:300]}"

    def skip_step(self, loss_dict: dict, error: str | None, data) -> None:
        """The step of an iteration whose loss is non-finite on some process: no backward, no optimizer step; the
        offending processes' loss terms and images are gathered and logged on rank 0 (every process is here, so
        the gather cannot hang) and the counter goes to the event storage."""
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_skipped += 1
        self.nonfinite_consecutive += 1
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        report = {"rank": comm.get_rank(), "losses": terms, "error": error, "images": batch_image_ids(data),
                  "finite": error is None and math.isfinite(sum(terms.values()))}
        reports = comm.gather(report) if comm.get_world_size() > 1 else [report]
        if comm.is_main_process():
            logger.warning("train.nonfinite='skip': non-finite loss at iteration %d, step skipped on every process "
                           "(%d skipped so far, %d in a row; the run stops at %d in a row). %s", self.iter,
                           self.nonfinite_skipped, self.nonfinite_consecutive, self.nonfinite_max_consecutive,
                           " | ".join(describe_nonfinite(r) for r in reports if not r["finite"]))
        get_event_storage().put_scalar("nonfinite_skipped", self.nonfinite_skipped, smoothing_hint=False)

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class NonFiniteStop(HookBase):
    """Under ``train.nonfinite="skip"``: after the step that makes ``nonfinite_max_consecutive`` skips in a row,
    save ``model_<iter>.pth`` (main process; every process agrees on the count) and raise
    :class:`NonFiniteLossError` with the reason. The weights are those of the last finite step; ``--resume``
    continues after the skipped batches."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    def after_step(self):
        loop = self.trainer._trainer
        if loop.nonfinite != "skip" or loop.nonfinite_consecutive < loop.nonfinite_max_consecutive:
            return
        it = self.trainer.iter
        name = save_and_wait(self.checkpointer, it)
        message = (f"train.nonfinite='skip': the loss was NaN or inf at {loop.nonfinite_consecutive} iterations in a "
                   f"row ({it - loop.nonfinite_consecutive + 1} to {it}; train.nonfinite_max_consecutive="
                   f"{loop.nonfinite_max_consecutive}), so training stops. Saved {name}.pth with the weights of the "
                   "last finite step; --resume continues after these batches. A loss that diverged (rather than a "
                   "few bad batches) needs a lower learning rate or train.clip_grad_norm.")
        logger.error(message)
        raise NonFiniteLossError(message)


class Trainer(DefaultTrainer):
    """DefaultTrainer driven by a LazyConfig.

    Reads ``cfg.model``, ``cfg.optimizer`` (its ``params.model`` is filled in),
    ``cfg.lr_multiplier`` (a fvcore ParamScheduler over ``train.max_iter``),
    ``cfg.dataloader.{train,test,evaluator}`` and ``cfg.train`` (keys: :data:`TRAIN_KEYS`).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        validate_train_config(cfg.train)
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device)
        set_ms_deform_attn_backend(cfg.train.get("ms_deform_attn_backend", "auto"))
        torch.manual_seed(cfg.train.seed)  # the same initial weights however the trainer is started
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ddp = dict(cfg.train.get("ddp", {}))
        if self.device.type == "cpu":
            ddp["device_ids"] = None  # CPU DDP (GLOO): DistributedDataParallel takes no device ids
        model = create_ddp_model(model, **ddp)
        amp = bool(cfg.train.amp.enabled)
        if amp and self.device.type != "cuda":
            logger.info("train.amp.enabled is ignored on %s (AMP is used on CUDA only).", self.device)
            amp = False
        self._trainer = DETRTrainLoop(model, data_loader, optimizer, amp=amp,
                                      clip_grad_norm=cfg.train.get("clip_grad_norm", 0.0),
                                      seed=cfg.train.seed, compile_kwargs=compile_options(cfg.train.get("compile", {})),
                                      device=self.device, batch_transform=self.build_batch_transform(cfg),
                                      nonfinite=cfg.train.get("nonfinite", "raise"),
                                      nonfinite_max_consecutive=cfg.train.get("nonfinite_max_consecutive", 10))
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.require_backbone_weights = bool(cfg.train.get("require_backbone_weights", False))
        self.checkpointer = DisCoCheckpointer(
            model, cfg.train.output_dir, trainer=weakref.proxy(self),
            allow_pickle=cfg.train.get("checkpoint_allow_pickle", False),
            transfer_mismatch=cfg.train.get("transfer_mismatch", "error"),
            require_backbone_weights=self.require_backbone_weights,
        )
        self.start_iter = 0
        self.max_iter = resolve_max_iter(cfg, data_loader)
        self.register_hooks(self.build_hooks())

    @property
    def model(self):
        return self._trainer.model

    @classmethod
    def build_model(cls, cfg):
        resolve_num_classes(cfg)  # model.num_classes = None -> the dataset's count; a wrong count fails here
        model = instantiate(cfg.model)
        model.to(resolve_device(cfg.train.device))
        parts = cfg.train.get("activation_checkpointing", ())
        if parts:  # a pre-training wrapper holds the detector whose layers it runs
            unwrap_detector(model).set_activation_checkpointing(parts)
            logger.info("Activation checkpointing of %s", list(parts) if not isinstance(parts, str) else [parts])
        output_dir = cfg.train.get("output_dir")
        if comm.is_main_process() and output_dir:  # the model print is long: a file, named in the log
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, "model.txt"), "w") as f:
                f.write(f"{model}\n")
            logger.info("Model: %s, printed to %s", type(model).__name__, os.path.join(output_dir, "model.txt"))
        num_params = sum(p.numel() for p in model.parameters())
        num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("Parameters: %s total, %s trainable", f"{num_params:,}", f"{num_trainable:,}")
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        cfg.optimizer.params.model = model
        return instantiate(cfg.optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        loader = instantiate(cfg.dataloader.train)
        check_num_classes(cfg)  # now that every training dataset's classes are known
        return loader

    @classmethod
    def build_batch_transform(cls, cfg):
        """``cfg.dataloader.batch_transform`` (None when absent): what the loop applies to each batch on the
        training device before the forward."""
        transform = instantiate(cfg.dataloader.get("batch_transform"))
        if transform is not None and not callable(transform):
            raise TypeError(f"dataloader.batch_transform must be a callable on batches or None (null on the command "
                            f"line), got {transform!r}")
        return transform

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return instantiate(cfg.lr_multiplier)

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler(optimizer=self._trainer.optimizer, scheduler=self.scheduler)]
        ema = cfg.train.get("ema", {})
        self.ema = ModelEMA(self.model, ema.get("decay", 0.9999), ema.get("warmups", 2000)) if ema.get("enabled") else None
        if self.ema is not None:  # before the checkpointer and evaluation: they see the EMA weights (engine/ema.py)
            ret.append(EMAHook(self.ema))
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, **cfg.train.checkpointer))
        if "test" in cfg.dataloader:  # pre-training configs have no test set
            ret.append(hooks.EvalHook(cfg.train.eval_period, self._evaluate))
        ret.extend(build_analysis_hooks(cfg))  # train.analysis (off by default); before the writer
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.train.log_period))
        if self._trainer.nonfinite == "skip":  # after the writers: the skipped iteration is written first
            ret.append(NonFiniteStop(self.checkpointer))
        ret.append(StopOnSignal(self.checkpointer))  # last: SIGTERM / SIGUSR1 save and stop after the step
        return ret

    def _evaluate(self):
        model = self.ema.module if getattr(self, "ema", None) is not None else self.model
        self._last_eval_results = self.test(self.cfg, model)
        return self._last_eval_results

    def build_writers(self):
        return default_writers(self.cfg.train.output_dir, self.max_iter)

    def resume_or_load(self, resume: bool = True):
        """Load ``train.init_checkpoint``, or with ``resume`` the last checkpoint of the output
        folder (model, optimizer, schedule, iteration), and continue the data stream there.
        With ``train.require_backbone_weights`` a fresh start needs an ``init_checkpoint`` that holds
        every weight of the frozen backbone (the checkpointer checks the weights)."""
        init = self.cfg.train.init_checkpoint
        resuming = resume and self.checkpointer.has_checkpoint()
        if not resuming and not init:
            if self.require_backbone_weights:
                raise ValueError(
                    "train.init_checkpoint is empty, so the frozen backbone of this pre-training run would stay randomly "
                    "initialised. Convert SwAV ResNet-50 weights with `python tools/convert/convert_torchvision_resnet.py "
                    "swav_800ep_pretrain.pth.tar datasets/weights/swav_r50.pth` and pass "
                    "train.init_checkpoint=datasets/weights/swav_r50.pth (train.require_backbone_weights=False "
                    "pre-trains against a random backbone on purpose).")
            logger.warning("\n%s\nNo pre-trained weights: train.init_checkpoint is empty, so this run trains the whole "
                           "detector, backbone included, from random initialisation.\n%s", "!" * 100, "!" * 100)
        self.checkpointer.resume_or_load(init, resume=resume)
        if resuming:
            self.start_iter = self.iter + 1
        set_loader_start(self._trainer.data_loader, self.start_iter)

    def train(self):
        TrainerBase.train(self, self.start_iter, self.max_iter)
        return getattr(self, "_last_eval_results", None)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Run ``cfg.dataloader.evaluator`` on ``cfg.dataloader.test``; returns its results. A VOC test set
        (metadata ``evaluator_type`` "pascal_voc") gets VOC AP beside the config's evaluators."""
        loader = instantiate_capped(cfg.dataloader.test)
        evaluator = evaluators
        if evaluator is None:
            evaluator = with_dataset_evaluators(instantiate(cfg.dataloader.evaluator),
                                                OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None),
                                                OmegaConf.select(cfg, "model.num_classes", default=None))
        results = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            print_csv_format(results)
        return results


def instantiate_capped(loader_cfg):
    """``instantiate(loader_cfg)`` with its ``num_workers`` capped at the CPU cores this process may use
    (detectron2's test loader does not cap them; the config is left as it was)."""
    workers = loader_cfg.get("num_workers")
    if workers is None or cap_num_workers(workers) == workers:
        return instantiate(loader_cfg)
    loader_cfg.num_workers = cap_num_workers(workers)
    try:
        return instantiate(loader_cfg)
    finally:
        loader_cfg.num_workers = workers
