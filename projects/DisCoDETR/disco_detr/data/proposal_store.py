"""The proposals store: one SQLite file of offline object proposals per image set.

Proposals are computed once by ``tools/generate_proposals.py`` (the methods are in
:mod:`disco_detr.tooling.proposal_methods`); training reads one image's entry at a time.

Storage layout (format version :data:`FORMAT_VERSION`)::

    proposals(key TEXT PRIMARY KEY, height INT, width INT, boxes BLOB, scores BLOB, fallback TEXT)
    meta(name TEXT PRIMARY KEY, value TEXT)

``key`` is the image path relative to the image root with "/" separators (see
:func:`image_key`); ``boxes`` is a float32 ``(K, 4)`` xyxy array in pixels of the
original image (after EXIF orientation, i.e. as detectron2's ``read_image`` loads it) and
``height``/``width`` are that image's size; ``scores`` is a float32 ``(K,)`` array sorted
in descending order. ``meta`` holds the method (one of :data:`METHODS`), ``max_boxes``, the
format version, the image root the keys are relative to and, under :data:`UNREADABLE`, a JSON
object ``{key: error}`` of the images the proposal run could not read (they have no entry).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["FALLBACKS", "FORMAT_VERSION", "METHODS", "UNREADABLE", "ProposalStore", "Proposals", "image_key"]

#: Bump when the stored layout or the meaning of a column changes.
FORMAT_VERSION = "1"
METHODS = ("edgeboxes", "selective_search")
#: Values of :attr:`Proposals.fallback` ("" when the method found boxes on the image itself).
FALLBACKS = ("", "enhanced", "centre_box")
#: The meta entry naming the images that could not be read: JSON ``{key: error message}``.
UNREADABLE = "unreadable"

GENERATE_COMMAND = "python tools/generate_proposals.py --images IMAGE_DIR --out {path}"

# ----------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Proposals:
    """One image's proposals.

    boxes: ``(K, 4)`` float32 xyxy in pixels of the image the proposals were computed on
    (``height`` x ``width``, the original image); scores: ``(K,)`` float32, descending;
    fallback: ``""`` normally, ``"enhanced"`` or ``"centre_box"`` when a fallback made them.
    """

    boxes: np.ndarray
    scores: np.ndarray
    height: int
    width: int
    fallback: str = ""


def image_key(path: str, image_root: str) -> str:
    """The store key of ``path``: its path relative to ``image_root``, with "/" separators."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(image_root))
    if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        raise ValueError(f"{path!r} is not inside the image root {image_root!r}")
    return rel.replace(os.sep, "/")


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS proposals (key TEXT PRIMARY KEY, height INT, width INT, "
    "boxes BLOB, scores BLOB, fallback TEXT)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)",
)

_PAGE_SIZE = 8192

# Connections inherited through fork() are never used again in the child; they are kept
# referenced here so that garbage collection in the child does not close the parent's
# database handle from the child (SQLite's rule: do not carry a connection across fork).
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []


class ProposalStore:
    """The proposals of one image set in one SQLite file.

    ``mode="r"`` opens an existing file read-only; ``mode="a"`` creates it (and its
    folder) if needed and allows :meth:`put_many`. The SQLite connection is opened lazily
    in the process that uses it (and reopened after a fork), so a store can be created in
    the main process and used from DataLoader workers; it pickles without its connection.
    """

    def __init__(self, path: str, mode: str = "r"):
        if mode not in ("r", "a"):
            raise ValueError(f"ProposalStore mode must be 'r' or 'a', got {mode!r}")
        self.path = os.fspath(path)
        self.mode = mode
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._meta: dict[str, str] | None = None
        if mode == "r":
            if not os.path.isfile(self.path):
                raise FileNotFoundError(
                    f"Proposals store {self.path!r} does not exist; make it with "
                    f"`{GENERATE_COMMAND.format(path=self.path)}`")
        else:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            conn = self._connection()
            # 8 KiB pages: a 512-box row (10 KiB) then takes little more than its size on disk
            # (4 KiB pages waste ~20% in partly filled overflow pages). No effect on an existing file.
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            with conn:
                for statement in _SCHEMA:
                    conn.execute(statement)

    # -- connection handling
    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid == pid:
            return self._conn
        if self._conn is not None:  # inherited through fork: never touch it here
            _INHERITED_CONNECTIONS.append(self._conn)
            self._conn = None
        if self.mode == "r":
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                conn.execute("SELECT 1 FROM proposals LIMIT 1")
            except sqlite3.DatabaseError as e:
                raise ValueError(f"{self.path!r} is not a proposals store ({e}); make it with "
                                 f"`{GENERATE_COMMAND.format(path=self.path)}`") from e
        else:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
        self._conn, self._pid = conn, pid
        return conn

    def close(self) -> None:
        """Closes the connection (if open in this process); the store reopens on next use."""
        with self._guard():
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            elif self._conn is not None:
                _INHERITED_CONNECTIONS.append(self._conn)
            self._conn, self._pid = None, None

    def __enter__(self) -> ProposalStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_conn"] = None
        state["_pid"] = None
        state["_lock"] = None
        state["_lock_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    def _guard(self) -> threading.Lock:
        """The lock serialising use of the connection between threads; a fresh one after a
        fork (a lock held by another thread of the parent would never be released here)."""
        if self._lock_pid != os.getpid():
            self._lock = threading.Lock()
            self._lock_pid = os.getpid()
        return self._lock

    def __repr__(self) -> str:
        return f"ProposalStore({self.path!r}, mode={self.mode!r})"

    # -- reading
    def get(self, key: str) -> Proposals | None:
        """The proposals stored under ``key``, or None."""
        with self._guard():
            row = self._connection().execute(
                "SELECT height, width, boxes, scores, fallback FROM proposals WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        height, width, boxes, scores, fallback = row
        return Proposals(boxes=np.frombuffer(boxes, dtype=np.float32).reshape(-1, 4).copy(),
                         scores=np.frombuffer(scores, dtype=np.float32).copy(),
                         height=int(height), width=int(width), fallback=fallback or "")

    def __getitem__(self, key: str) -> Proposals:
        props = self.get(key)
        if props is None:
            raise KeyError(f"no proposals for key {key!r} in {self.path!r}")
        return props

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._guard():
            row = self._connection().execute("SELECT 1 FROM proposals WHERE key = ?", (key,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        with self._guard():
            return int(self._connection().execute("SELECT COUNT(*) FROM proposals").fetchone()[0])

    def keys(self) -> Iterator[str]:
        """All keys, sorted (fetched at once: a list of strings even at ImageNet scale)."""
        with self._guard():
            rows = self._connection().execute("SELECT key FROM proposals ORDER BY key").fetchall()
        return iter([r[0] for r in rows])

    @property
    def meta(self) -> dict[str, str]:
        """The store's metadata (method, max_boxes, format_version, image_root, ...)."""
        if self._meta is None or self.mode == "a":
            with self._guard():
                rows = self._connection().execute("SELECT name, value FROM meta").fetchall()
            self._meta = {name: value for name, value in rows}
        return dict(self._meta)

    def unreadable(self) -> dict[str, str]:
        """``{key: error}`` of the images the proposal run could not read (none of them has an entry)."""
        return json.loads(self.meta.get(UNREADABLE, "{}"))

    # -- writing
    def record_unreadable(self, failed: dict[str, str]) -> None:
        """Adds ``failed`` (``{key: error}``) to the record of unreadable images; keys that now have an
        entry (read on a later run) leave the record."""
        record = {**self.unreadable(), **failed}
        self.update_meta({UNREADABLE: json.dumps({k: e for k, e in sorted(record.items()) if k not in self})})

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise PermissionError(f"{self.path!r} is open read-only (mode='r'); open it with mode='a' to write")

    def update_meta(self, values: dict[str, object]) -> None:
        """Sets metadata entries (values are stored as strings)."""
        self._check_writable()
        with self._guard():
            conn = self._connection()
            with conn:
                conn.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                                 [(str(k), str(v)) for k, v in values.items()])

    def put_many(self, items: Iterable[tuple[str, Proposals]]) -> None:
        """Stores (or replaces) entries, all in one transaction."""
        self._check_writable()
        rows = [_encode(key, props) for key, props in items]
        with self._guard():
            conn = self._connection()
            with conn:
                conn.executemany("INSERT OR REPLACE INTO proposals (key, height, width, boxes, scores, fallback) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", rows)

    def append_store(self, path: str) -> int:
        """Copies every entry of the store file ``path`` into this one, inside SQLite (ATTACH), in one
        transaction; a key both stores hold is a ValueError and copies nothing. Returns the entries copied.
        The metadata is not copied."""
        self._check_writable()
        with self._guard():
            conn = self._connection()
            conn.execute("ATTACH DATABASE ? AS shard", (os.path.abspath(path),))  # only read below
            try:
                clash = conn.execute("SELECT key FROM shard.proposals WHERE key IN "
                                     "(SELECT key FROM main.proposals) LIMIT 1").fetchone()
                if clash:
                    raise ValueError(f"{path} holds {clash[0]!r}, which {self.path} already has (overlapping shards?)")
                with conn:
                    cursor = conn.execute("INSERT INTO main.proposals (key, height, width, boxes, scores, "
                                          "fallback) SELECT key, height, width, boxes, scores, fallback "
                                          "FROM shard.proposals")
                return cursor.rowcount
            finally:
                conn.execute("DETACH DATABASE shard")

    def delete(self, keys: Iterable[str]) -> None:
        """Removes entries (missing keys are ignored), in one transaction."""
        self._check_writable()
        with self._guard():
            conn = self._connection()
            with conn:
                conn.executemany("DELETE FROM proposals WHERE key = ?", [(k,) for k in keys])


def _encode(key: str, props: Proposals) -> tuple:
    if not isinstance(key, str) or not key:
        raise ValueError(f"proposal keys must be non-empty strings, got {key!r}")
    boxes = np.ascontiguousarray(props.boxes, dtype=np.float32)
    scores = np.ascontiguousarray(props.scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"{key}: boxes must be (K, 4) and scores (K,), got {boxes.shape} and {scores.shape}")
    if props.fallback not in FALLBACKS:
        raise ValueError(f"{key}: unknown fallback {props.fallback!r} (expected one of {FALLBACKS})")
    return (key, int(props.height), int(props.width), boxes.tobytes(), scores.tobytes(), props.fallback)
