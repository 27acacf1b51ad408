"""``zoo://<name>``: resolve a catalog name to a local, converted checkpoint file.

``resolve(name)`` (and detectron2's ``PathManager.get_local_path("zoo://<name>")``, which the
handler registered here serves) does, for the catalog entry ``name``:

1. checks that the entry's converter exists (else :class:`~.layouts.MissingConverterError`, before any download);
2. finds the original file in ``<cache>/downloads/<name>/<file>`` or downloads it there (progress bar,
   resume, size / checksum checks: :mod:`.download`); offline (``$DISCO_ZOO_OFFLINE=1``) or without a
   reachable server an uncached file fails at once with the URL and the path to put the file in;
3. loads it with ``weights_only=True`` (a file that needs pickle is refused with an explanation unless
   ``allow_pickle=True``, which the checkpointer passes from ``train.checkpoint_allow_pickle``);
4. converts it by its source layout and caches ``<cache>/converted/<name>.pth`` (tensors and strings only,
   so it always loads with ``weights_only=True``) with the conversion report ``<name>.report.json``;
   a later call reuses it while the original file's SHA-256 and the conversion format are unchanged.

The cache is ``$DISCO_ZOO_CACHE``, else ``~/.cache/disco_detr``.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import time

import torch
from iopath.common.file_io import PathHandler

from .catalog import ZooEntry, cache_root, get_config_file, get_entry
from .download import ChecksumError, DownloadError, download, file_sha256, read_meta, write_meta
from .layouts import check_converter, convert_entry

__all__ = ["PREFIX", "ZooOfflineError", "ZooPathHandler", "converted_path", "download_path", "get_checkpoint_url",
           "get_config", "is_zoo_path", "resolve", "resolve_for_load"]

PREFIX = "zoo://"
#: bump when a converter's output for the same input changes: cached conversions are redone
CONVERSION_FORMAT = 1
logger = logging.getLogger(__name__)


class ZooOfflineError(FileNotFoundError):
    """An uncached entry while offline (or its server unreachable, or no direct URL known)."""


def _offline() -> bool:
    return os.environ.get("DISCO_ZOO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_zoo_path(path) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def _name(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def download_path(entry: ZooEntry, cache_dir: str | None = None) -> str:
    """Where the original file of ``entry`` lives in the cache (put it there by hand when offline)."""
    return os.path.join(cache_dir or cache_root(), "downloads", *entry.name.split("/"), entry.file_name)


def converted_path(entry: ZooEntry, cache_dir: str | None = None) -> str:
    return os.path.join(cache_dir or cache_root(), "converted", *entry.name.split("/")) + ".pth"


def get_checkpoint_url(name: str) -> str:
    """The publisher's URL of the entry (detectron2's ``model_zoo.get_checkpoint_url`` counterpart)."""
    entry = get_entry(_name(name))
    if not entry.url:
        raise ZooOfflineError(f"model zoo entry {entry.name!r} has no direct file URL; its publisher lists it at "
                              f"{entry.page or 'an unknown page'}")
    return entry.url


def get_config(name: str, index: int = 0):
    """The LazyConfig of the entry's config with ``train.init_checkpoint = "zoo://<name>"``
    (detectron2's ``model_zoo.get_config(path, trained=True)`` counterpart)."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(get_config_file(name, index))
    cfg.train.init_checkpoint = PREFIX + get_entry(_name(name)).name
    return cfg


def _verified_original(entry: ZooEntry, path: str) -> dict:
    """Check a cached original file against its metadata (size) and the catalog (size, SHA-256)."""
    meta = read_meta(path)
    size = os.path.getsize(path)
    if meta is None:  # placed by hand: check what the catalog gives, then record it
        digest = file_sha256(path, progress=True)
        meta = {"url": entry.url, "size": size, "sha256": digest, "checked": ["placed by hand"],
                "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if entry.sha256 and digest != entry.sha256:
            raise ChecksumError(f"{path!r} (model zoo entry {entry.name!r}): SHA-256 {digest}, the catalog expects "
                                f"{entry.sha256}; not loaded")
        if entry.size is not None and size != entry.size:
            raise ChecksumError(f"{path!r} (model zoo entry {entry.name!r}): {size} bytes, the catalog expects "
                                f"{entry.size}; not loaded")
        write_meta(path, meta)
    elif meta.get("size") != size:
        raise ChecksumError(f"cached {path!r} (model zoo entry {entry.name!r}) has {size} bytes, {meta.get('size')} when "
                            "it was downloaded: the file changed or is truncated; delete it (and its .meta.json) to "
                            "download it again")
    return meta


def _fetch(entry: ZooEntry, cache_dir: str | None) -> tuple[str, dict]:
    path = download_path(entry, cache_dir)
    if os.path.isfile(path):
        return path, _verified_original(entry, path)
    where = f"put the file at {path}"
    if not entry.url:
        raise ZooOfflineError(f"model zoo entry {entry.name!r} is not cached and has no direct file URL: download it "
                              f"from {entry.page or 'its publisher'} and {where}")
    if _offline() and not entry.url.startswith("file://"):  # a local file needs no network
        raise ZooOfflineError(f"model zoo entry {entry.name!r} is not cached and $DISCO_ZOO_OFFLINE is set: download "
                              f"{entry.url} and {where}")
    try:
        meta = download(entry.url, path, size=entry.size, sha256=entry.sha256)
    except DownloadError as e:
        raise ZooOfflineError(f"model zoo entry {entry.name!r}: {e}. Without network access, download {entry.url} "
                              f"elsewhere and {where}") from e
    return path, meta


def _load_original(entry: ZooEntry, path: str, allow_pickle: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                      str(e).splitlines()[0] if str(e) else "")
        raise pickle.UnpicklingError(
            f"{path!r} (model zoo entry {entry.name!r}, from {entry.url or entry.page}) holds Python objects that torch "
            f"refuses to unpickle with weights_only=True ({reason}). Unpickling can run arbitrary code; if you trust "
            "the publisher, set train.checkpoint_allow_pickle=True (or resolve(..., allow_pickle=True)). The converted "
            "file this produces holds tensors only and loads safely afterwards.") from e
    except (RuntimeError, EOFError) as e:
        raise ChecksumError(f"{path!r} (model zoo entry {entry.name!r}) is not a readable torch checkpoint ({e}); "
                            "delete it and its .meta.json to download it again") from e


def resolve(name: str, *, allow_pickle: bool = False, cache_dir: str | None = None) -> str:
    """Local path of the converted checkpoint of catalog entry ``name`` (``zoo://`` optional); see the module docstring."""
    entry = get_entry(_name(name), cache_dir)
    check_converter(entry)
    dst = converted_path(entry, cache_dir)
    report_path = dst[: -len(".pth")] + ".report.json"
    original, meta = _fetch(entry, cache_dir)
    if os.path.isfile(dst) and os.path.isfile(report_path):
        try:
            with open(report_path) as f:
                cached = json.load(f)
        except (OSError, json.JSONDecodeError):
            cached = {}
        if cached.get("source_sha256") == meta.get("sha256") and cached.get("format") == CONVERSION_FORMAT:
            logger.info("Model zoo %s: using the cached conversion %s", entry.name, dst)
            return dst
    obj = _load_original(entry, original, allow_pickle)
    state, report = convert_entry(entry, obj, original)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp"
    torch.save({"model": state, "__author__": f"disco_detr model zoo: {entry.name} ({entry.layout})"}, tmp)
    report_dict = {"format": CONVERSION_FORMAT, "source": original, "source_url": entry.url,
                   "source_sha256": meta.get("sha256"), "converted": dst, **report.to_dict()}
    with open(report_path + ".tmp", "w") as f:
        json.dump(report_dict, f, indent=1)
    os.replace(tmp, dst)
    os.replace(report_path + ".tmp", report_path)
    logger.info("%s; converted file %s, report %s", report.summary(), dst, report_path)
    return dst


def resolve_for_load(path: str, *, allow_pickle: bool = False) -> str:
    """:func:`resolve` for a checkpointer in a (possibly distributed) job: the first process of each machine
    downloads and converts, the others wait and then reuse the cached files."""
    from detectron2.utils import comm

    if comm.get_world_size() == 1:
        return resolve(path, allow_pickle=allow_pickle)
    local = resolve(path, allow_pickle=allow_pickle) if comm.get_local_rank() == 0 else None
    comm.synchronize()
    return local or resolve(path, allow_pickle=allow_pickle)


def conversion_report(local_path: str) -> dict | None:
    """The conversion report written next to a converted file, or None for other files."""
    report_path = local_path[: -len(".pth")] + ".report.json" if local_path.endswith(".pth") else ""
    try:
        with open(report_path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


class ZooPathHandler(PathHandler):
    """iopath handler for ``zoo://<name>`` (as detectron2's ``detectron2://`` one): the local converted file.
    Pickle is never allowed here; the checkpointer resolves ``zoo://`` itself to pass its opt-in."""

    def _get_supported_prefixes(self):
        return [PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        self._check_kwargs(kwargs)
        return resolve(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        self._check_kwargs(kwargs)
        if any(c in mode for c in "wa+"):
            raise ValueError(f"{path}: model zoo files are read-only")
        return open(resolve(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs) -> bool:
        try:
            get_entry(_name(path))
        except KeyError:
            return False
        return True

    def _isfile(self, path: str, **kwargs) -> bool:
        return self._exists(path, **kwargs)


def register_handler() -> None:
    from detectron2.utils.file_io import PathManager

    if PREFIX not in PathManager._path_handlers:
        PathManager.register_handler(ZooPathHandler())
