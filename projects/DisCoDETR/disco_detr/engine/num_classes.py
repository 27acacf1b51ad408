"""``model.num_classes`` against the training dataset's classes, checked when the trainer builds.

A fine-tuning config whose ``model`` has a ``num_classes`` key is checked against the
``thing_classes`` of ``dataloader.train.dataset.names`` (every name must agree):

* ``model.num_classes = None`` means "from the dataset": it becomes ``len(thing_classes)``;
* a number that differs is an error naming the dataset and the line to add
  (``model.num_classes = 20``), before any training step, instead of a stream of
  "category id 14 is outside [0, 5)" from the mapper.

COCO-json datasets learn their ``thing_classes`` only when loaded: :func:`resolve_num_classes`
loads them when the count is needed (None) and otherwise checks what the metadata already
holds; :func:`check_num_classes` runs again after the training loader is built, when it holds
all of them. Pre-training configs (the detector inside a wrapper, ``model.detector``) are
left alone: their class heads are object / no-object by design.
"""
from __future__ import annotations

import logging

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["dataset_classes", "resolve_num_classes", "check_num_classes"]

logger = logging.getLogger("detectron2")


def _train_names(cfg) -> list[str]:
    dataset = cfg.get("dataloader", {}).get("train", {}).get("dataset", {})
    names = dataset.get("names") if hasattr(dataset, "get") else None
    if not names:
        return []
    return [names] if isinstance(names, str) else list(names)


def dataset_classes(names: list[str], load: bool = False) -> tuple[str, list[str]] | None:
    """(name, thing_classes) of the first of ``names`` whose metadata has ``thing_classes`` (with
    ``load``, a registered dataset without them is loaded first, which fills them for COCO json);
    raises ValueError when two of the datasets list different classes; None when none is known."""
    found = []
    for name in names:
        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "thing_classes") and load and name in DatasetCatalog.list():
            DatasetCatalog.get(name)
        if hasattr(meta, "thing_classes"):
            found.append((name, list(meta.thing_classes)))
    if any(classes != found[0][1] for _, classes in found[1:]):
        raise ValueError("The training datasets list different classes: " + "; ".join(
            f"{name}: {len(classes)} ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})"
            for name, classes in found))
    return found[0] if found else None


def _compare(num_classes: int, name: str, classes: list[str]) -> None:
    if int(num_classes) != len(classes):
        shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
        raise ValueError(
            f"model.num_classes = {num_classes}, but the training dataset {name!r} has {len(classes)} classes "
            f"({shown}). Add this line to the config:\n    model.num_classes = {len(classes)}\n"
            f"(or pass model.num_classes={len(classes)} on the command line; model.num_classes = None takes the "
            "count from the dataset).")


def resolve_num_classes(cfg) -> None:
    """Before the model is built: ``model.num_classes = None`` -> the training dataset's class count
    (written into ``cfg``); a set count is compared with the classes the metadata already knows."""
    model = cfg.get("model")
    if model is None or "num_classes" not in model:
        return
    names = _train_names(cfg)
    if model.num_classes is None:
        found = dataset_classes(names, load=True)
        if found is None:
            raise ValueError(f"model.num_classes = None takes the class count from the training dataset, but "
                             f"{names or 'dataloader.train.dataset.names'} has no thing_classes in its metadata. "
                             "Set model.num_classes to the number of classes.")
        model.num_classes = len(found[1])
        logger.info("model.num_classes = %d, from the classes of %r", model.num_classes, found[0])
        return
    found = dataset_classes(names)
    if found is not None:
        _compare(model.num_classes, *found)


def check_num_classes(cfg) -> None:
    """After the training loader is built (all metadata filled): a set ``model.num_classes`` that
    differs from the training dataset's class count is an error that prints the line to add."""
    model = cfg.get("model")
    if model is None or "num_classes" not in model or model.num_classes is None:
        return
    found = dataset_classes(_train_names(cfg))
    if found is not None:
        _compare(model.num_classes, *found)
