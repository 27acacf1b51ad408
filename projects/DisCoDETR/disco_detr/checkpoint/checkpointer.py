"""detectron2's DetectionCheckpointer with an explicit policy for pickled checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses checkpoints holding
arbitrary Python objects (e.g. the argparse ``Namespace`` that many research repositories
save next to the weights). We keep the safe default on purpose and turn the refusal into an
error that names the file and the opt-in (``train.checkpoint_allow_pickle=True``, only for
files you trust). Checkpoints written by this project hold tensors, numbers and dicts only
and always load safely.
"""
from __future__ import annotations

import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

__all__ = ["DisCoCheckpointer"]


class DisCoCheckpointer(DetectionCheckpointer):
    def __init__(self, model, save_dir: str = "", *, allow_pickle: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_pickle = allow_pickle

    def _torch_load(self, f: str):
        with PathManager.open(f, "rb") as fh:
            try:
                return torch.load(fh, map_location=torch.device("cpu"), weights_only=not self.allow_pickle)
            except pickle.UnpicklingError as e:
                reason = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                              str(e).splitlines()[0])
                raise pickle.UnpicklingError(
                    f"Checkpoint {f!r} holds Python objects that torch refuses to unpickle with "
                    f"weights_only=True ({reason}). If you trust this file, set "
                    "train.checkpoint_allow_pickle=True."
                ) from e
