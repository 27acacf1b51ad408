"""What tools/lazyconfig_train_net.py runs around the trainer: ``--eval-only`` (evaluate one
checkpoint) and the one-line summary of the results it prints."""
from detectron2.utils import comm

from ..checkpoint import DisCoCheckpointer
from .trainer import Trainer

__all__ = ["evaluate_checkpoint", "summarize"]


def evaluate_checkpoint(cfg) -> dict:
    """Builds ``cfg.model``, loads ``cfg.train.init_checkpoint`` (a path or a ``zoo://`` name, transferred
    as at the start of training) and evaluates it on ``cfg.dataloader.test``: ``{task: {metric: value}}``."""
    model = Trainer.build_model(cfg)
    DisCoCheckpointer(model, cfg.train.output_dir, allow_pickle=cfg.train.checkpoint_allow_pickle,
                      transfer_mismatch=cfg.train.transfer_mismatch).load(cfg.train.init_checkpoint)
    return Trainer.test(cfg, model)


def summarize(results) -> None:
    """One line per evaluated task on the main process: AP / AP50 / AP75 (COCO-style, in percent)."""
    if not comm.is_main_process() or not results:
        return
    for task, metrics in results.items():
        if isinstance(metrics, dict) and "AP" in metrics:
            print(f"[{task}] AP {metrics['AP']:.2f}  AP50 {metrics.get('AP50', float('nan')):.2f}  "
                  f"AP75 {metrics.get('AP75', float('nan')):.2f}", flush=True)
