"""Unlabelled image folders for pre-training, registered in detectron2's DatasetCatalog.

A dataset is a folder of images (flat, or ImageNet-style class sub-folders such as
mini-ImageNet's ``train/n01532829/*.jpg``) plus its offline proposals store made by
``tools/generate_proposals.py``; :func:`load_unlabelled_folder` reads one without a registered name.
Each dict is::

    {"file_name": abs path, "image_id": int, "proposals_file": store path,
     "proposal_key": path relative to the image folder, with "/"}
"""
from __future__ import annotations

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .image_io import IMAGE_EXTENSIONS
from .proposal_store import METHODS, ProposalStore

__all__ = [
    "list_images",
    "load_unlabelled_images",
    "load_unlabelled_dicts",
    "load_unlabelled_folder",
    "register_unlabelled_images",
]

logger = logging.getLogger(__name__)


def list_images(image_root: str) -> list[str]:
    """Image paths under ``image_root`` (recursive), relative with "/" separators, sorted."""
    found = []
    for folder, dirs, files in os.walk(image_root):
        dirs.sort()
        rel = os.path.relpath(folder, image_root)
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return found


def _make_command(image_root: str, proposals_file: str, method: str = "edgeboxes") -> str:
    return f"python tools/generate_proposals.py --images {image_root} --out {proposals_file} --method {method}"


def load_unlabelled_images(name: str, image_root: str, proposals_file: str, method: str = "edgeboxes") -> list[dict]:
    """Dataset dicts of the images that have proposals; images without an entry are
    counted, logged and left out. A store made by the other proposal method of
    tools/generate_proposals.py than ``method`` is refused. Errors name the folder, the store and the command."""
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Dataset {name!r}: image folder {image_root!r} does not exist "
                                "(see datasets/README.md)")
    if not os.path.exists(proposals_file):
        raise FileNotFoundError(f"Dataset {name!r}: proposals file {proposals_file!r} does not exist; make it with "
                                f"`{_make_command(image_root, proposals_file, method)}`")
    images = list_images(image_root)
    if not images:
        raise FileNotFoundError(f"Dataset {name!r}: no images under {image_root!r}")
    store = ProposalStore(proposals_file, mode="r")
    have = set(store.keys())
    made_with = store.meta.get("method", method)
    unreadable = store.unreadable()
    store.close()
    if made_with in METHODS and made_with != method:  # (stores written by other tools name their own)
        raise ValueError(f"Dataset {name!r}: {proposals_file!r} holds {made_with} proposals, but this dataset is "
                         f"registered for {method} ones; make its own store with "
                         f"`{_make_command(image_root, proposals_file, method)}`")
    kept = [rel for rel in images if rel in have]
    if not kept:
        raise ValueError(f"Dataset {name!r}: none of the {len(images)} images under {image_root!r} has an entry in "
                         f"{proposals_file!r}; the proposals file does not match the dataset (remake it with "
                         f"`{_make_command(image_root, proposals_file, method)}`)")
    _warn_left_out(name, images, have, unreadable, image_root, proposals_file, method)
    return [{"file_name": os.path.join(image_root, rel), "image_id": i, "proposals_file": proposals_file,
             "proposal_key": rel} for i, rel in enumerate(kept)]


def _warn_left_out(name: str, images: list[str], have: set[str], unreadable: dict[str, str], image_root: str,
                   proposals_file: str, method: str) -> None:
    """One warning per reason an image is left out: the proposal run could not read it (rerunning fails it
    again: the file needs fixing or removing), or it was not computed yet (the command adds it)."""
    missing = [rel for rel in images if rel not in have]
    bad = [rel for rel in missing if rel in unreadable]
    if bad:
        shown = "; ".join(f"{rel}: {unreadable[rel]}" for rel in bad[:5]) + ("; ..." if len(bad) > 5 else "")
        logger.warning("Dataset %r: %d of %d images are left out because tools/generate_proposals.py could not "
                       "read them (%s); rerunning it fails them again: repair or remove those files under %s.",
                       name, len(bad), len(images), shown, image_root)
    if len(missing) > len(bad):
        logger.warning("Dataset %r: %d of %d images have no proposals in %s yet and are left out; `%s` adds them.",
                       name, len(missing) - len(bad), len(images), proposals_file,
                       _make_command(image_root, proposals_file, method))


def register_unlabelled_images(name: str, image_root: str, proposals_file: str, method: str = "edgeboxes") -> None:
    """Register (or re-register) an unlabelled image folder with its proposals store, made by the
    proposal ``method`` of tools/generate_proposals.py ("edgeboxes" for DisCo / Siamese DETR,
    "selective_search" for DETReg)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_unlabelled_images(name, image_root, proposals_file, method))
    MetadataCatalog.get(name).set(image_root=image_root, proposals_file=proposals_file, proposal_method=method,
                                  evaluator_type="none")


def load_unlabelled_dicts(names: str | list[str]) -> list[dict]:
    """The dicts of one or more registered unlabelled datasets, image ids renumbered."""
    names = [names] if isinstance(names, str) else list(names)
    dicts = []
    for name in names:
        if name not in DatasetCatalog.list():
            known = [n for n in DatasetCatalog.list() if "proposals_file" in MetadataCatalog.get(n).as_dict()]
            raise KeyError(f"Dataset {name!r} is not registered (unlabelled datasets: {', '.join(known)})")
        if "proposals_file" not in MetadataCatalog.get(name).as_dict():
            raise ValueError(f"Dataset {name!r} is not an unlabelled image folder with proposals "
                             "(register it with register_unlabelled_images)")
        dicts.extend(DatasetCatalog.get(name))
    return [{**d, "image_id": i} for i, d in enumerate(dicts)]


def load_unlabelled_folder(image_root: str, proposals_file: str, method: str = "edgeboxes") -> list[dict]:
    """The dicts of an unlabelled folder with its proposals, without registering it: a config's
    ``dataloader.train.dataset`` that names its folder itself (tools/pretrain_on_folder.py writes one),
    so the saved config reruns as it is. Same checks as :func:`load_unlabelled_images`."""
    return load_unlabelled_images(image_root, image_root, proposals_file, method)


def _register_builtin() -> None:
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    register_unlabelled_images("mini_imagenet_train", os.path.join(root, "mini-imagenet", "train"),
                               os.path.join(root, "mini-imagenet", "proposals_train.sqlite"))
    register_unlabelled_images("imagenet_train", os.path.join(root, "imagenet", "train"),
                               os.path.join(root, "imagenet", "proposals_train.sqlite"))
    # DETReg's selective-search proposals of the same folders (tools/generate_proposals.py --method
    # selective_search), in their own stores
    for name, folder in (("mini_imagenet_train_ss", "mini-imagenet"), ("imagenet_train_ss", "imagenet")):
        register_unlabelled_images(name, os.path.join(root, folder, "train"),
                                   os.path.join(root, folder, "proposals_train_ss.sqlite"), "selective_search")


_register_builtin()
