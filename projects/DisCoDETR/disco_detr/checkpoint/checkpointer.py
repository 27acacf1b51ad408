"""detectron2's DetectionCheckpointer with an explicit policy for pickled checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses checkpoints holding
arbitrary Python objects (e.g. the argparse ``Namespace`` that many research repositories
save next to the weights). We keep the safe default on purpose and turn the refusal into an
error that names the file and the opt-in (``train.checkpoint_allow_pickle=True``, only for
files you trust). Checkpoints written by this project hold tensors, numbers and dicts only
and always load safely.

Checkpoints are never half-written: each is written to a temporary file in the same folder,
flushed and fsynced, then renamed over its name (and ``last_checkpoint`` the same way), so a
kill at any moment leaves either the old file or the new one. ``--resume`` survives a damaged
file all the same (one copied half, a full disk): a checkpoint that cannot be read is reported
by name and the newest one that reads is used; when none does, the error lists them.
"""
from __future__ import annotations

import glob
import json
import os
import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from torch import nn

from ..model_zoo import check_against_model, conversion_report, is_zoo_path, resolve_for_load
from ..modeling.pretrain.base import DETECTOR_ATTRIBUTE, DETECTOR_PREFIX
from .transfer import GROUPS, architecture, describe_architecture, load_shares, matching_finetune_configs

__all__ = ["DisCoCheckpointer", "UnreadableCheckpoint", "atomic_write", "pretrained_to_finetune", "TRANSFER_DROP",
           "TRANSFER_MISMATCH_POLICIES"]


class UnreadableCheckpoint(RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a torch file)."""


def atomic_write(path: str, write) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, flush and fsync it, then rename it
    over ``path`` (atomic on POSIX file systems): readers see the old file or the complete new one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # the rename itself survives a crash once the folder entry is on disk
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Modules of a pre-trained detector that fine-tuning does not take over, unless the
#: detector class names its own (``DETRDetector.transfer_drop``: class heads, label embeddings).
TRANSFER_DROP = ("class_embed.",)
#: What transfer does with a pre-trained tensor whose shape differs from the fine-tuning
#: model's (e.g. 100 pre-trained queries into a 300-query detector).
TRANSFER_MISMATCH_POLICIES = ("error", "fresh", "force")
#: The groups whose loaded share (numel) a transfer checks against ``transfer_min_share``.
FLOORED_GROUPS = ("backbone", "encoder", "decoder")


def _few(keys, n: int = 8) -> str:
    """At most ``n`` keys, comma-separated, then how many more."""
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _share_summary(shares: dict) -> str:
    """"backbone 100 %, encoder 100 %, decoder 99 %, heads 40 %; 98 % of the model" (groups the model has)."""
    parts = [f"{g} {shares[g]['share']:.0%}" for g in GROUPS if shares[g]["share"] is not None]
    return ", ".join(parts) + f"; {shares['overall']['share'] or 0:.0%} of the model's parameters"


def pretrained_to_finetune(state: dict, drop: tuple[str, ...] = TRANSFER_DROP) -> tuple[dict, list[str]]:
    """A pre-training state dict (any :class:`~disco_detr.modeling.pretrain.base.PretrainingModel`) -> the
    detector's state dict for fine-tuning.

    Keeps every key of the wrapped detector (:data:`~disco_detr.modeling.pretrain.base.DETECTOR_PREFIX`,
    ``detector.*``: backbone, input projection, encoder, decoder, query embeddings, box head) without
    the prefix, except those starting with one of ``drop`` (the class head: the pre-training head is
    object/no-object); drops every pre-training-only module (DisCo's object feature projection,
    reconstruction MLP, encoder head, CLD heads; DETReg's embedding head). Returns (kept state dict,
    dropped keys).
    """
    kept, dropped = {}, []
    for key, value in state.items():
        if key.startswith(DETECTOR_PREFIX) and not key[len(DETECTOR_PREFIX):].startswith(tuple(drop)):
            kept[key[len(DETECTOR_PREFIX):]] = value
        else:
            dropped.append(key)
    return kept, dropped


def _wraps_detector(state: dict) -> bool:
    """Whether ``state`` is a pre-training model's (it holds wrapped-detector keys, ``detector.*``)."""
    return any(k.startswith(DETECTOR_PREFIX) for k in state)


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class DisCoCheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer, plus:

    * transfer: a pre-training checkpoint (keys ``detector.*``) loaded into a bare detector
      becomes a fine-tuning one. Only keys the model has with the same shape load; the log and
      ``<save_dir>/transfer_report.json`` give, per group (backbone / encoder / decoder / heads /
      other, :mod:`.transfer`), the keys and the share of elements loaded, and list every
      dropped / freshly initialised / shape-mismatched / foreign key. A checkpoint of another
      backbone family or width d is refused with both named (and the fine-tuning config that fits
      the pre-training run, when its folder tells). A pre-trained tensor whose shape differs from
      the model's (e.g. 100 pre-trained queries into a 300-query detector) is an error under
      ``transfer_mismatch="error"`` (default); ``"fresh"`` leaves those tensors freshly initialised
      on purpose. Under both, a transfer that loads less than ``transfer_min_share`` (default 0.9)
      of the backbone, encoder or decoder is refused: a legitimate transfer loads all of them but
      the query embeddings (< 1 % of the decoder), while DisCo pre-trains a frozen backbone, so its
      value sits in the transformer and a whole-model share could hide a random one. ``"force"``
      loads whatever fits; a transfer that leaves any of the three groups partly fresh always warns
      with the shares.
    * with ``require_backbone_weights`` (``train.require_backbone_weights``, pre-training) a
      checkpoint that does not hold every weight of the model's frozen backbone
      (``detector.backbone.*``) is refused.
    """

    def __init__(self, model, save_dir: str = "", *, allow_pickle: bool = False, transfer_mismatch: str = "error",
                 require_backbone_weights: bool = False, transfer_min_share: float = 0.9, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        if transfer_mismatch not in TRANSFER_MISMATCH_POLICIES:
            raise ValueError(f"transfer_mismatch must be one of {TRANSFER_MISMATCH_POLICIES}, got {transfer_mismatch!r}")
        if not 0.0 <= transfer_min_share <= 1.0:
            raise ValueError(f"transfer_min_share must be a share in [0, 1], got {transfer_min_share!r}")
        self.transfer_min_share = transfer_min_share
        self.allow_pickle = allow_pickle
        self.transfer_mismatch = transfer_mismatch
        self.require_backbone_weights = require_backbone_weights
        self._source = ""
        self._zoo_conversion = None

    # ---- writing: never half-written ----------------------------------------------------------
    def save(self, name: str, **kwargs) -> None:
        """detectron2's ``save`` (model, checkpointables, ``kwargs``) written atomically (:func:`atomic_write`)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()},
                **kwargs}
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        PathManager.mkdirs(self.save_dir)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename.encode()))

    # ---- resuming: the newest checkpoint that reads -------------------------------------------
    def resume_candidates(self) -> list[str]:
        """The checkpoint ``last_checkpoint`` names, then every other ``*.pth`` of the output folder,
        newest first (by modification time)."""
        tagged = self.get_checkpoint_file()
        others = [p for p in glob.glob(os.path.join(self.save_dir, "*.pth")) if os.path.abspath(p) != os.path.abspath(tagged)]
        others.sort(key=lambda p: (os.path.getmtime(p), p), reverse=True)
        return ([tagged] if tagged else []) + others

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """As detectron2's, except that with ``resume`` a checkpoint that cannot be read is reported and
        the next newest one is tried; when none reads, the error lists every one with its reason."""
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        failures = []
        for candidate in self.resume_candidates():
            if not os.path.isfile(candidate):
                failures.append(f"{candidate}: missing")
                continue
            try:
                checkpoint = self.load(candidate)
            except UnreadableCheckpoint as e:
                self._parsed_url_during_load = None  # detectron2's load resets it only when it returns
                self.logger.warning("Cannot resume from %s (%s); trying the next newest checkpoint.", candidate, e)
                failures.append(f"{candidate}: {e}")
                continue
            if failures:
                self.logger.warning("Resumed from %s, the newest checkpoint that loads.", candidate)
            return checkpoint
        raise UnreadableCheckpoint(
            f"--resume: no checkpoint in {self.save_dir} can be read:\n  " + "\n  ".join(failures or ["(none found)"])
            + "\nRemove the damaged files, or start without --resume.")

    def load(self, path: str, *args, **kwargs):
        """``path`` may be ``zoo://<name>``: downloaded, converted and cached by :mod:`disco_detr.model_zoo`
        (with this checkpointer's pickle opt-in); the load report goes to ``<save_dir>/zoo_report.json``."""
        self._source, self._zoo_conversion = path, None
        if is_zoo_path(path):
            path = resolve_for_load(path, allow_pickle=self.allow_pickle)
            self._zoo_conversion = conversion_report(path) or {}
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        model = _bare(self.model)
        model_state = model.state_dict()
        state = checkpoint["model"]
        if _wraps_detector(model_state) and not _wraps_detector(state):
            # detector weights (e.g. a converted backbone) into a pre-training wrapper
            checkpoint["model"] = state = {DETECTOR_PREFIX + k: v for k, v in state.items()}
        if self.require_backbone_weights:
            missing = [k for k in model_state if k.startswith(DETECTOR_PREFIX + "backbone.") and k not in state]
            if missing:
                raise ValueError(
                    f"Checkpoint {self._source!r} lacks {len(missing)} weights of the frozen backbone "
                    f"(e.g. {missing[0]}): pre-training against a partly random frozen backbone would waste the run. "
                    "Pass the converted backbone weights as train.init_checkpoint (see the README).")
        if _wraps_detector(state) and not _wraps_detector(model_state):
            checkpoint["model"] = self._transfer(state, model, model_state)
        elif self._zoo_conversion is not None:
            checkpoint["model"] = self._zoo_check(state, model, model_state)
        return super()._load_model(checkpoint)

    def _zoo_check(self, state: dict, model: nn.Module, model_state: dict) -> dict:
        heads = getattr(model, "transfer_drop", None) or getattr(getattr(model, DETECTOR_ATTRIBUTE, None), "transfer_drop",
                                                                 TRANSFER_DROP)
        if _wraps_detector(model_state):
            heads = tuple(DETECTOR_PREFIX + h for h in heads)
        kept, report = check_against_model(state, model_state, source=self._source, class_heads=tuple(heads),
                                           policy=self.transfer_mismatch, conversion=self._zoo_conversion)
        self.logger.info("Model zoo %s: kept %d keys, dropped %d in conversion, freshly initialised %d, shape-mismatched "
                         "%d (%s), unexpected %d", self._source, len(report["kept"]), len(report["dropped"]),
                         len(report["fresh"]), len(report["mismatched"]),
                         ", ".join(m["key"] for m in report["mismatched"]), len(report["unexpected"]))
        if self.save_dir:
            PathManager.mkdirs(self.save_dir)
            path = os.path.join(self.save_dir, "zoo_report.json")
            with PathManager.open(path, "w") as f:
                json.dump(report, f, indent=1)
            self.logger.info("Model zoo load report (every key): %s", path)
        return kept

    def _transfer(self, state: dict, model: nn.Module, model_state: dict) -> dict:
        kept, dropped = pretrained_to_finetune(state, getattr(model, "transfer_drop", TRANSFER_DROP))
        loaded = {k: v for k, v in kept.items() if k in model_state and tuple(v.shape) == tuple(model_state[k].shape)}
        mismatched = [{"key": k, "checkpoint_shape": list(v.shape), "model_shape": list(model_state[k].shape)}
                      for k, v in kept.items() if k in model_state and k not in loaded]
        unexpected = sorted(k for k in kept if k not in model_state)
        fresh = sorted(set(model_state) - set(loaded))
        shares = load_shares(loaded, model_state)
        arch = {"checkpoint": architecture(kept), "model": architecture(model_state)}
        report = {"checkpoint": self._source, "policy": self.transfer_mismatch, "min_share": self.transfer_min_share,
                  "architecture": arch, "shares": shares, "kept": sorted(loaded), "dropped": sorted(dropped),
                  "fresh": fresh, "mismatched": mismatched, "unexpected": unexpected}
        if self._zoo_conversion is not None:
            report["conversion"] = self._zoo_conversion
        self.logger.info("Pre-trained -> fine-tuning transfer: loaded %d of the model's %d tensors (%s), dropped %d "
                         "(%s), freshly initialised %d (%s), shape-mismatched %d (%s), not in this model %d (%s)",
                         len(loaded), len(model_state), _share_summary(shares), len(dropped), _few(dropped),
                         len(fresh), _few(fresh), len(mismatched), _few([m["key"] for m in mismatched]),
                         len(unexpected), _few(unexpected))
        if self.save_dir:
            PathManager.mkdirs(self.save_dir)
            path = os.path.join(self.save_dir, "transfer_report.json")
            with PathManager.open(path, "w") as f:
                json.dump(report, f, indent=1)
            self.logger.info("Transfer report (every key): %s", path)
        self._check_transfer(arch, shares, mismatched)
        return loaded

    def _check_transfer(self, arch: dict, shares: dict, mismatched: list[dict]) -> None:
        """Refuse a transfer between different architectures, a shape mismatch under "error", and any
        share of backbone / encoder / decoder below ``transfer_min_share``, unless the policy is "force";
        warn with the shares whenever one of them is not loaded in full."""
        force = self.transfer_mismatch == "force"
        short = _share_summary(shares)
        ours, theirs = arch["checkpoint"], arch["model"]
        if not force and all(ours.values()) and all(theirs.values()) and ours != theirs:
            configs = matching_finetune_configs(self._source) if os.path.isfile(self._source) else []
            fit = (f"Fine-tune it with {' or '.join(configs)}" if configs else
                   "Fine-tune it with the fine-tuning config of the pre-training's variant and size "
                   "(configs/demo/<v>.py for configs/demo/<method>_<v>.py; configs/finetune_<v>_voc.py or _coco.py for "
                   "configs/<method>_<v>.py)")
            raise ValueError(
                f"Pre-trained checkpoint {self._source!r} does not fit this config: pre-trained with "
                f"{describe_architecture(ours)}; this config builds {describe_architecture(theirs)} (only {short} "
                f"would load). {fit}, or set train.transfer_mismatch=force to load what fits and train the rest from "
                "random initialisation.")
        if mismatched and self.transfer_mismatch == "error":
            examples = "; ".join(f"{m['key']}: {m['checkpoint_shape']} in the checkpoint, {m['model_shape']} in the "
                                 "model" for m in mismatched[:3])
            more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
            queries = any(m["key"].split(".", 1)[0] in ("query_embed", "anchor_embed", "tgt_embed") for m in mismatched)
            hint = ("A different query count loses the pre-trained queries; use a fine-tuning config with the "
                    "pre-training's query count (e.g. configs/finetune_cond_voc_q100.py), or set "
                    "train.transfer_mismatch=fresh to initialise these tensors freshly on purpose." if queries else
                    "Set train.transfer_mismatch=fresh to initialise these tensors freshly on purpose.")
            raise ValueError(f"Pre-trained checkpoint {self._source!r} does not fit the fine-tuning model: {examples}"
                             f"{more}. {hint}")
        low = [g for g in FLOORED_GROUPS if shares[g]["share"] is not None and shares[g]["share"] < self.transfer_min_share]
        if low and not force:
            raise ValueError(
                f"Pre-trained checkpoint {self._source!r} would load only {short}: below the floor of "
                f"{self.transfer_min_share:.0%} for the {' and '.join(low)}, which would train from random "
                "initialisation. Use the fine-tuning config that matches the pre-training, or set "
                "train.transfer_mismatch=force to train from what loads.")
        if any(shares[g]["share"] is not None and shares[g]["share"] < 1 for g in FLOORED_GROUPS):
            self.logger.warning("Transfer from %s loads only %s; the rest is freshly initialised (%s, every key in "
                                "transfer_report.json).", self._source, short, self.transfer_mismatch)

    def _torch_load(self, f: str):
        with PathManager.open(f, "rb") as fh:
            try:
                return torch.load(fh, map_location=torch.device("cpu"), weights_only=not self.allow_pickle)
            except pickle.UnpicklingError as e:
                if "Unsupported global" not in str(e):  # not refused Python objects: a damaged or foreign file
                    detail = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line),
                                  (str(e).splitlines() or [""])[0])
                    raise UnreadableCheckpoint(f"{f} cannot be read, not a torch checkpoint ({detail})") from e
                reason = next(line.strip() for line in str(e).splitlines() if "Unsupported global" in line)
                raise pickle.UnpicklingError(
                    f"Checkpoint {f!r} holds Python objects that torch refuses to unpickle with "
                    f"weights_only=True ({reason}). If you trust this file, set "
                    "train.checkpoint_allow_pickle=True."
                ) from e
            except Exception as e:  # truncated zip, empty file, garbage: torch raises RuntimeError, OSError, EOFError, ...
                first = (str(e).splitlines() or [""])[0]
                raise UnreadableCheckpoint(f"{f} cannot be read, truncated or corrupt ({type(e).__name__}: {first})") from e
