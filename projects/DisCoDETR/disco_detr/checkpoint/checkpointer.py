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

__all__ = ["DisCoCheckpointer", "pretrained_to_finetune", "TRANSFER_DROP"]


#: Modules of a pre-trained detector that fine-tuning does not take over.
TRANSFER_DROP = ("class_embed.",)


def pretrained_to_finetune(state: dict) -> tuple[dict, list[str]]:
    """A DisCo/Siamese pre-training state dict -> the detector's state dict for fine-tuning.

    Keeps every ``detector.*`` key (backbone, input projection, encoder, decoder, query
    embeddings, box head) without the prefix, except the class head (``class_embed``: the
    pre-training head is object/no-object); drops every pre-training-only module (object
    feature projection, query fusion MLP, reconstruction MLP, encoder head, CLD heads).
    Returns (kept state dict, dropped keys).
    """
    kept, dropped = {}, []
    for key, value in state.items():
        if key.startswith("detector.") and not key[len("detector."):].startswith(TRANSFER_DROP):
            kept[key[len("detector."):]] = value
        else:
            dropped.append(key)
    return kept, dropped


class DisCoCheckpointer(DetectionCheckpointer):
    """Also turns a pre-training checkpoint (keys ``detector.*``) into a fine-tuning one
    when loaded into a bare detector, and logs exactly which keys it kept, dropped and
    left freshly initialised."""

    def __init__(self, model, save_dir: str = "", *, allow_pickle: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_pickle = allow_pickle

    def _load_model(self, checkpoint):
        model_keys = set(self.model.state_dict())
        state = checkpoint["model"]
        if any(k.startswith("detector.") for k in model_keys) and not any(k.startswith("detector.") for k in state):
            # detector weights (e.g. a converted backbone) into a pre-training wrapper
            checkpoint["model"] = state = {f"detector.{k}": v for k, v in state.items()}
        is_pretrained = any(k.startswith("detector.") for k in state)
        if is_pretrained and not any(k.startswith("detector.") for k in model_keys):
            kept, dropped = pretrained_to_finetune(state)
            fresh = sorted(model_keys - set(kept))
            self.logger.info("Pre-trained -> fine-tuning transfer: kept %d keys, dropped %d (%s), "
                             "freshly initialised %d (%s)", len(kept), len(dropped), ", ".join(sorted(dropped)),
                             len(fresh), ", ".join(fresh))
            checkpoint["model"] = kept
        return super()._load_model(checkpoint)

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
