"""Label splits: a fraction, or k images per class, of any registered detection dataset, with a fold.

A split is a registered detectron2 dataset named ``<parent>_<P>pct_fold<F>`` (``P`` = 100 x the
fraction, ``0p5pct`` for 0.5 %) or ``<parent>_<K>shot_fold<F>``; its dicts are the parent's dicts
of the chosen images, unchanged (boxes in the parent's mode, e.g. ``XYWH_ABS`` pixels for COCO,
``XYXY_ABS`` for VOC). Registering is lazy: the parent is read when the split is first loaded.

Contract:

* **The pool.** A split draws from the parent's images with at least one non-crowd box (the
  images training keeps), ordered by increasing image id (ints numerically, then strings).
  This order is also the index base of unbiased-teacher's ``COCO_supervision.txt``.
* **Identical on every process.** The choice depends only on the parent's name, the fraction
  (or k), the fold and the image ids: each image is ranked by SHA-256 of those (never by
  ``hash()``, which ``PYTHONHASHSEED`` changes, nor by the rank or a global RNG), so every GPU
  and machine draws the same images, whatever order the parent's loader returns.
* **Fractions**: the ``floor(fraction x pool)`` images of lowest rank (at least one).
* **k per class**: see :func:`sample_shots` (a greedy pass, rarest class first).
* **Files.** :func:`write_label_split` writes the image ids as JSON (``format``
  :data:`SPLIT_FORMAT`), :func:`load_detection_dicts` does so next to the run when given
  ``split_dir``; :func:`register_label_split` with ``split_file`` reads such a file, or a
  ``COCO_supervision.txt``-style file (percent -> fold -> pool indices), instead of sampling.
  A file that does not fit the parent is refused with the reason (:class:`LabelSplitError`).
* **Empty categories**: a category without an image in a split is logged as a warning.

See ``datasets/README.md`` (Label splits) for the names and how to use a published split.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog

from .voc import UnreadableAnnotationsError

__all__ = [
    "DEFAULT_FRACTIONS",
    "DEFAULT_SHOTS",
    "FOLDS",
    "SPLIT_FORMAT",
    "LabelSplit",
    "LabelSplitError",
    "empty_categories",
    "is_label_split",
    "label_split_name",
    "read_label_split",
    "read_ssod_split",
    "register_label_split",
    "register_label_splits",
    "sample_fraction",
    "sample_shots",
    "save_label_split",
    "split_pool",
    "write_label_split",
]

logger = logging.getLogger(__name__)

SPLIT_FORMAT = "disco_detr.label_split.v1"
#: Fractions and k registered for every parent by :func:`register_label_splits` unless told otherwise.
DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25, 0.50)
DEFAULT_SHOTS: tuple[int, ...] = (1, 5, 10)
FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)
_MAX_LISTED = 10

# split name -> (LabelSplit, split_file or None); and what the last load of a split found
_REGISTERED: dict[str, tuple[LabelSplit, str | None]] = {}
_LOADED: dict[str, dict] = {}


class LabelSplitError(ValueError):
    """A split file, or a split request, that does not fit the dataset; the message says why."""


# --------------------------------------------------------------------------- the split itself

@dataclass(frozen=True)
class LabelSplit:
    """A label split of the registered dataset ``dataset``: ``fraction`` in (0, 1] of its pool,
    or ``shots`` images per class, and a ``fold`` (>= 0; 0-4 are registered by default)."""

    dataset: str
    fraction: float | None = None
    shots: int | None = None
    fold: int = 0

    def __post_init__(self):
        if (self.fraction is None) == (self.shots is None):
            raise ValueError(f"label split of {self.dataset!r}: give exactly one of fraction= and shots=")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"label split of {self.dataset!r}: fraction must be in (0, 1], got {self.fraction}")
        if self.shots is not None and (not isinstance(self.shots, int) or self.shots < 1):
            raise ValueError(f"label split of {self.dataset!r}: shots must be a positive integer, got {self.shots!r}")
        if not isinstance(self.fold, int) or self.fold < 0:
            raise ValueError(f"label split of {self.dataset!r}: fold must be an integer >= 0, got {self.fold!r}")

    @property
    def token(self) -> str:
        """``10pct``, ``0p5pct`` (0.5 %) or ``10shot``: the size part of the name and of the seed."""
        if self.shots is not None:
            return f"{self.shots}shot"
        return f"{_percent(self.fraction):g}".replace(".", "p") + "pct"

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.token}_fold{self.fold}"

    @property
    def seed(self) -> str:
        return f"{SPLIT_FORMAT}|{self.dataset}|{self.token}|fold{self.fold}"


def _percent(fraction: float) -> float:
    return round(fraction * 100, 6)  # 0.29 * 100 = 28.999999999999996


def label_split_name(dataset: str, *, fraction: float | None = None, shots: int | None = None,
                     fold: int = 0) -> str:
    """The registered name of a split, e.g. ``coco_2017_train_10pct_fold0`` or ``..._5shot_fold2``."""
    return LabelSplit(dataset, fraction, shots, fold).name


def fraction_dataset(dataset: str, fraction: float, fold: int = 0) -> str:
    """The dataset a fine-tuning on ``fraction`` (fold ``fold``) of ``dataset`` trains on: ``dataset`` itself at
    fraction 1, else its registered label split (:func:`label_split_name`)."""
    return dataset if fraction == 1 else label_split_name(dataset, fraction=fraction, fold=fold)


def _id_key(image_id):
    return (0, image_id, "") if isinstance(image_id, int) and not isinstance(image_id, bool) else (1, 0, str(image_id))


def split_pool(dicts: list[dict]) -> list[dict]:
    """The images a split draws from: the records with at least one non-crowd annotation, in
    increasing image id (ints numerically, then strings). Raises on a duplicate image id."""
    seen: set = set()
    for record in dicts:
        if record["image_id"] in seen:
            raise LabelSplitError(f"image id {record['image_id']!r} appears twice in the dataset; "
                                  "a split names images by id")
        seen.add(record["image_id"])
    pool = [r for r in dicts if any(a.get("iscrowd", 0) == 0 for a in r.get("annotations", ()))]
    return sorted(pool, key=lambda r: _id_key(r["image_id"]))


def _rank(split: LabelSplit, image_id) -> bytes:
    return hashlib.sha256(f"{split.seed}|{json.dumps(image_id)}".encode()).digest()


def _fingerprint(pool: list[dict]) -> str:
    return hashlib.sha256(json.dumps([r["image_id"] for r in pool]).encode()).hexdigest()


def _classes(record: dict) -> set[int]:
    return {a["category_id"] for a in record.get("annotations", ()) if a.get("iscrowd", 0) == 0}


def sample_fraction(dicts: list[dict], split: LabelSplit) -> list:
    """Image ids (increasing) of a fraction split: the ``max(1, floor(fraction x N))`` images of the
    pool (:func:`split_pool`, ``N`` images) whose SHA-256 rank under ``split.seed`` is lowest."""
    pool = split_pool(dicts)
    if not pool:
        raise LabelSplitError(f"{split.name}: {split.dataset!r} has no image with a non-crowd box")
    count = max(1, math.floor(split.fraction * len(pool) + 1e-9))
    chosen = sorted(pool, key=lambda r: _rank(split, r["image_id"]))[:count]
    return sorted((r["image_id"] for r in chosen), key=_id_key)


def sample_shots(dicts: list[dict], split: LabelSplit) -> list:
    """Image ids (increasing) of a k-per-class split: every class gets at least ``k`` images that
    contain it (all of them when the pool has fewer).

    Greedy, rarest class first: classes are visited by increasing number of pool images that
    contain them; each takes images containing it in SHA-256 rank order (:func:`sample_fraction`'s
    seeded order) until ``k`` chosen images contain it, counting images other classes already took.
    Why: rare classes have the fewest candidates, so they choose first, and the common classes
    then mostly need no extra images (they co-occur), which keeps the split near ``k x C``
    images. A class can end above ``k`` through co-occurrence; exactly ``k`` per class is not
    possible in general when images hold several classes.
    """
    pool = split_pool(dicts)
    ranked = sorted(pool, key=lambda r: _rank(split, r["image_id"]))
    candidates: dict[int, list[dict]] = {}
    for record in ranked:
        for c in _classes(record):
            candidates.setdefault(c, []).append(record)
    covered: Counter = Counter()
    chosen: set = set()
    for c in sorted(candidates, key=lambda c: (len(candidates[c]), c)):
        for record in candidates[c]:
            if covered[c] >= split.shots:
                break
            if record["image_id"] in chosen:
                continue
            chosen.add(record["image_id"])
            covered.update(_classes(record))
    short = {c: len(v) for c, v in candidates.items() if len(v) < split.shots}
    if short:
        logger.warning("%s: %d class(es) have fewer than %d images in %r and get all of them "
                       "(class id: images): %s", split.name, len(short), split.shots, split.dataset, short)
    return sorted(chosen, key=_id_key)


def empty_categories(records: list[dict], class_names) -> list[str]:
    """The names in ``class_names`` (contiguous-id order) of the categories without a non-crowd
    box in ``records``."""
    present = set().union(*(_classes(r) for r in records)) if records else set()
    return [name for i, name in enumerate(class_names) if i not in present]


def _report_empty(name: str, split_records: list[dict], parent_records: list[dict], class_names) -> None:
    if class_names is None:
        return
    missing = empty_categories(split_records, class_names)
    if missing:
        absent = set(empty_categories(parent_records, class_names))
        also = [n for n in missing if n in absent]
        logger.warning("Label split %s: %d of %d categories have no image: %s%s", name, len(missing),
                       len(class_names), ", ".join(missing),
                       f" ({', '.join(also)} none in the parent either)" if also else "")


# --------------------------------------------------------------------------- files

def _pool_ids(pool: list[dict]) -> set:
    return {r["image_id"] for r in pool}


def _check_ids(ids, pool: list[dict], what: str) -> list:
    if not isinstance(ids, list) or not all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in ids):
        raise LabelSplitError(f"{what}: 'image_ids' must be a list of integer or string image ids")
    duplicated = sorted({i for i, n in Counter(ids).items() if n > 1}, key=_id_key)
    if duplicated:
        raise LabelSplitError(f"{what}: image ids listed twice: {duplicated[:_MAX_LISTED]}")
    known = _pool_ids(pool)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise LabelSplitError(f"{what}: {len(unknown)} of {len(ids)} image id(s) are not images with a box in "
                              f"the dataset (e.g. {unknown[:_MAX_LISTED]}); the file was written for other data")
    return sorted(ids, key=_id_key)


def write_label_split(path: str, split: LabelSplit, image_ids: list, dicts: list[dict],
                      source: str = "sampled") -> str:
    """Write ``image_ids`` of ``split`` (drawn from the parent's ``dicts``) as JSON to ``path``
    (atomically, so processes writing the same split do not interleave); returns ``path``.

    Keys: ``format``, ``name``, ``dataset``, ``fraction``, ``shots``, ``fold``, ``source``,
    ``pool_images`` and ``pool_sha256`` (the pool it was drawn from) and ``image_ids``."""
    pool = split_pool(dicts)
    return _write(path, split, image_ids, len(pool), _fingerprint(pool), source)


def _write(path: str, split: LabelSplit, image_ids: list, pool_images: int, pool_sha256: str, source: str) -> str:
    data = {"format": SPLIT_FORMAT, "name": split.name, "dataset": split.dataset, "fraction": split.fraction,
            "shots": split.shots, "fold": split.fold, "source": source, "pool_images": pool_images,
            "pool_sha256": pool_sha256, "image_ids": sorted(image_ids, key=_id_key)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


def read_json(path: str, what: str = "label split file", error: type[Exception] = LabelSplitError):
    """The parsed JSON of ``path``; a missing file is a FileNotFoundError naming ``what``, text
    that is not JSON an ``error`` naming the file (shared with the COCO json reader)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def read_label_split(path: str, split: LabelSplit, dicts: list[dict]) -> list:
    """The image ids (increasing) of a file written by :func:`write_label_split`, checked against
    ``split`` and the parent's ``dicts``.

    Refused (:class:`LabelSplitError`, with the reason): another format; a file of another
    dataset, size (fraction / k) or fold than ``split``; ids that are not a list of ints or
    strings, listed twice, or not images with a box in the parent. A parent whose pool differs
    from the one the file was drawn from, but that holds every id, is a warning.
    """
    return _label_split_ids(read_json(path), path, split, dicts)


def _label_split_ids(data, path: str, split: LabelSplit, dicts: list[dict]) -> list:
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise LabelSplitError(f"{path}: not a label split file (no \"format\": {SPLIT_FORMAT!r})")
    written = (data.get("dataset"), data.get("fraction"), data.get("shots"), data.get("fold"))
    wanted = (split.dataset, split.fraction, split.shots, split.fold)
    if written[0] != wanted[0]:
        raise LabelSplitError(f"{path}: the split is of dataset {written[0]!r}, not {split.dataset!r}")
    if written[1:] != wanted[1:]:
        raise LabelSplitError(f"{path}: the split is {data.get('name')!r} (fraction {written[1]}, shots "
                              f"{written[2]}, fold {written[3]}), not {split.name!r}")
    pool = split_pool(dicts)
    ids = _check_ids(data.get("image_ids"), pool, path)
    if data.get("pool_sha256") != _fingerprint(pool):
        logger.warning("%s: %r now has %d images with a box (the file was drawn from %s); every id of the split "
                       "is still there, so it is used as written", path, split.dataset, len(pool),
                       data.get("pool_images"))
    return ids


def read_ssod_split(path: str, fraction: float, fold: int, dicts: list[dict]) -> list:
    """The image ids (increasing) that fold ``fold`` at ``fraction`` selects in a semi-supervised
    detection split file such as unbiased-teacher's ``dataseed/COCO_supervision.txt``.

    Format: a JSON object ``{percent: {fold: [index, ...]}}``, keys written as ``str(float)``
    (``"0.5"``, ``"1.0"``, ``"10.0"``; folds ``"0"``..``"9"``), each index into the pool
    (:func:`split_pool`: for ``coco_2017_train`` the 117,266 images with a non-crowd box in
    increasing id, the list detectron2 loads with empty images filtered); a fold holds
    ``int(percent / 100 x N)`` indices. Refused with the reason: a missing percent or fold
    (the ones in the file listed), an index that is not an integer, out of range or repeated,
    a count that differs from the percentage of the pool (the file was made for other data).
    """
    return _ssod_ids(read_json(path), path, fraction, fold, dicts)


def _ssod_ids(data, path: str, fraction: float, fold: int, dicts: list[dict]) -> list:
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise LabelSplitError(f"{path}: not a split file of the form {{percent: {{fold: [indices]}}}}")
    percent = _percent(fraction)
    keys = {}
    for key in data:
        try:
            keys[round(float(key), 6)] = key
        except ValueError:
            raise LabelSplitError(f"{path}: key {key!r} is not a percentage") from None
    if percent not in keys:
        raise LabelSplitError(f"{path}: no percentage {percent:g} (fraction {fraction}); the file has "
                              f"{sorted(keys)}")
    folds = data[keys[percent]]
    if str(fold) not in folds:
        raise LabelSplitError(f"{path}: percentage {keys[percent]} has no fold {fold}; it has folds "
                              f"{sorted(folds, key=lambda k: (len(k), k))}")
    indices = folds[str(fold)]
    where = f"{path} [{keys[percent]!r}][{str(fold)!r}]"
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise LabelSplitError(f"{where}: not a list of integer indices")
    pool = split_pool(dicts)
    bad = [i for i in indices if not 0 <= i < len(pool)]
    if bad:
        raise LabelSplitError(f"{where}: index(es) {bad[:_MAX_LISTED]} out of range: the dataset has {len(pool)} "
                              "images with a box (indices 0..N-1)")
    repeated = sorted(i for i, n in Counter(indices).items() if n > 1)
    if repeated:
        raise LabelSplitError(f"{where}: index(es) listed twice: {repeated[:_MAX_LISTED]}")
    expected = math.floor(percent / 100 * len(pool) + 1e-9)
    if len(indices) != expected:
        raise LabelSplitError(f"{where}: {len(indices)} indices, but {percent:g} % of the dataset's {len(pool)} "
                              f"images with a box is {expected}; the file was made for other data")
    return sorted((pool[i]["image_id"] for i in indices), key=_id_key)


def _read_split_file(path: str, split: LabelSplit, dicts: list[dict]) -> tuple[list, str]:
    data = read_json(path)
    if isinstance(data, dict) and "format" in data:
        return _label_split_ids(data, path, split, dicts), f"file {path}"
    if split.fraction is None:
        raise LabelSplitError(f"{path}: a percent -> fold file holds fractions; {split.name} asks for "
                              f"{split.shots} images per class")
    return _ssod_ids(data, path, split.fraction, split.fold, dicts), f"file {path} (percent -> fold indices)"


# --------------------------------------------------------------------------- registration

def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    _REGISTERED.pop(name, None)
    _LOADED.pop(name, None)


def _copy_parent_metadata(name: str, parent: str) -> None:
    meta = MetadataCatalog.get(name)
    for key, value in MetadataCatalog.get(parent).as_dict().items():
        if key != "name" and not hasattr(meta, key):
            meta.set(**{key: value})


def _load_split(name: str) -> list[dict]:
    split, split_file = _REGISTERED[name]
    errors = None
    try:
        dicts = DatasetCatalog.get(split.dataset)
    except UnreadableAnnotationsError as e:  # VOC: split what could be read; the caller decides
        dicts, errors = e.records, e.errors
    _copy_parent_metadata(name, split.dataset)  # e.g. thing_classes, set when a COCO json is read
    pool = split_pool(dicts)  # a pool is its own pool: the functions below sort it once
    if split_file is not None:
        ids, source = _read_split_file(split_file, split, pool)
    else:
        ids = sample_fraction(pool, split) if split.fraction is not None else sample_shots(pool, split)
        source = "sampled"
    chosen = set(ids)
    records = [r for r in dicts if r["image_id"] in chosen]
    _LOADED[name] = {"split": split, "image_ids": ids, "source": source, "pool_images": len(pool),
                     "pool_sha256": _fingerprint(pool)}
    logger.info("Label split %s: %d of %d images with a box (%s)", name, len(records), len(pool), source)
    _report_empty(name, records, pool, getattr(MetadataCatalog.get(name), "thing_classes", None))
    if errors:
        raise UnreadableAnnotationsError(f"parent {split.dataset!r} of label split {name!r}", errors, records)
    return records


def register_label_split(dataset: str, *, fraction: float | None = None, shots: int | None = None,
                         fold: int = 0, split_file: str | None = None) -> str:
    """Register the label split of the registered dataset ``dataset`` and return its name
    (:func:`label_split_name`); re-registering replaces the old entry.

    Nothing is read now. When the split is loaded, the parent is loaded and the images are
    sampled (:func:`sample_fraction` / :func:`sample_shots`), or, with ``split_file``, read from
    a file written by :func:`write_label_split` or a ``COCO_supervision.txt``-style file
    (:func:`read_ssod_split`; ``fraction=0.1`` reads its percentage ``"10.0"``). The split's
    metadata is the parent's (``thing_classes``, ``evaluator_type``, ``json_file``, ...) plus
    ``label_split_parent``. Call it after registering the parent: the project's helpers
    (``register_coco_dataset`` / ``register_voc_dataset``) re-register the default splits.
    """
    split = LabelSplit(dataset, fraction, shots, fold)
    name = split.name
    _unregister(name)
    _REGISTERED[name] = (split, split_file)
    DatasetCatalog.register(name, lambda: _load_split(name))
    _copy_parent_metadata(name, dataset)
    MetadataCatalog.get(name).set(label_split_parent=dataset)
    return name


def register_label_splits(dataset: str, fractions=DEFAULT_FRACTIONS, shots=DEFAULT_SHOTS, folds=FOLDS) -> list[str]:
    """Register the fraction and k-shot splits of ``dataset`` for every fold (lazily); the names."""
    names = [register_label_split(dataset, fraction=f, fold=k) for f in fractions for k in folds]
    return names + [register_label_split(dataset, shots=s, fold=k) for s in shots for k in folds]


def is_label_split(name: str) -> bool:
    """Whether ``name`` is registered as a label split in this process."""
    return name in _REGISTERED and name in DatasetCatalog.list()


def save_label_split(name: str, directory: str) -> str:
    """Write the image ids of the registered split ``name`` to ``<directory>/<name>.json``
    (:func:`write_label_split`; loads the split first if this process has not); the path."""
    if name not in _LOADED:
        DatasetCatalog.get(name)
    loaded = _LOADED[name]
    return _write(os.path.join(directory, f"{name}.json"), loaded["split"], loaded["image_ids"],
                  loaded["pool_images"], loaded["pool_sha256"], loaded["source"])
