from .trainer import DETRTrainLoop, Trainer, resolve_device

__all__ = ["DETRTrainLoop", "Trainer", "resolve_device"]
