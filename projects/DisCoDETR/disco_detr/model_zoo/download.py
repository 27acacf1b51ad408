"""Checked, resumable downloads into the model zoo cache.

A file is fetched to ``<dest>.part``; an interrupted download continues from the bytes already
there with an HTTP ``Range`` request (a server that ignores ``Range`` restarts it from zero). Only
a complete, checked file is renamed to ``dest`` (atomic within the folder), so a partial or
corrupt file never carries the final name and is never loaded. Checks, in order: the byte count
the server announced (``Content-Length`` / ``Content-Range``), the size the catalog gives, the
SHA-256 the catalog gives. A file that fails a check is moved to ``<dest>.corrupt`` and the
error says so. Next to the file, ``<dest>.meta.json`` records its URL, size and SHA-256
(computed while downloading), which later uses compare against (size on every use).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

__all__ = ["DownloadError", "ChecksumError", "download", "file_sha256", "read_meta", "write_meta"]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """The file could not be fetched (network, HTTP status, missing local file)."""


class ChecksumError(ValueError):
    """A fetched or cached file does not match its expected size or SHA-256."""


def file_sha256(path: str, progress: bool = False) -> str:
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {os.path.basename(path)}",
                                     disable=not progress or size < (64 << 20)) as bar:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def read_meta(path: str) -> dict | None:
    try:
        with open(path + ".meta.json") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def write_meta(path: str, meta: dict) -> None:
    tmp = path + ".meta.json.tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, path + ".meta.json")


def _reject(part: str, dest: str, why: str) -> None:
    corrupt = dest + ".corrupt"
    os.replace(part, corrupt)
    raise ChecksumError(f"{why}; the file was moved to {corrupt!r} and will not be loaded (delete it, then retry)")


def _check(part: str, dest: str, url: str, size: int | None, sha256: str | None, announced: int | None) -> str:
    got = os.path.getsize(part)
    if announced is not None and got < announced:
        raise DownloadError(f"download of {url} stopped after {got} of {announced} bytes; the partial file {part!r} "
                            "is kept and the next try resumes it")
    if announced is not None and got != announced:
        _reject(part, dest, f"{url}: {got} bytes, more than the {announced} the server announced")
    if size is not None and got != size:
        _reject(part, dest, f"{url}: {got} bytes, the catalog expects {size}")
    digest = file_sha256(part, progress=True)
    if sha256 is not None and digest != sha256:
        _reject(part, dest, f"{url}: SHA-256 {digest}, the catalog expects {sha256}")
    return digest


def _local_source(url: str) -> str | None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return urllib.request.url2pathname(parsed.path)
    if parsed.scheme == "" and os.path.exists(url):
        return url
    return None


def _total_from(resp, offset: int) -> int | None:
    content_range = resp.headers.get("Content-Range")  # "bytes <start>-<end>/<total>"
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def download(url: str, dest: str, *, size: int | None = None, sha256: str | None = None, timeout: float = 60.0,
             progress: bool = True, max_restarts: int = 1) -> dict:
    """Fetch ``url`` (``http(s)://``, ``file://`` or a local path) to ``dest``, resuming ``dest.part``.

    Args:
        size / sha256: expected byte count / SHA-256 hex digest (None: not checked).
        timeout: seconds without data before a connection is given up (the partial file stays for a resume).
        max_restarts: how often a download that cannot resume (HTTP 416 on a stale partial file) restarts.

    Returns:
        The metadata written to ``dest.meta.json``: url, size, sha256, checked (what the file was checked against).

    Raises:
        DownloadError: network or HTTP failure (the ``.part`` file is kept for the next try).
        ChecksumError: size or SHA-256 mismatch (the file is moved to ``dest.corrupt``).
    """
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    announced = None
    local = _local_source(url)
    if local is not None:
        if not os.path.isfile(local):
            raise DownloadError(f"{url}: local file {local!r} does not exist")
        shutil.copyfile(local, part)
        announced = os.path.getsize(local)
    else:
        restarts = 0
        while True:
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            request = urllib.request.Request(url, headers={"User-Agent": "disco-detr-model-zoo"})
            if offset:
                request.add_header("Range", f"bytes={offset}-")
            try:
                resp = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset and restarts < max_restarts:  # the partial file does not fit any more
                    os.remove(part)
                    restarts += 1
                    continue
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
            except (urllib.error.URLError, OSError) as e:
                raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from e
            with resp:
                if offset and resp.status != 206:  # the server ignored Range: start again
                    offset = 0
                announced = _total_from(resp, offset)
                mode = "ab" if offset else "wb"
                desc = os.path.basename(dest)
                try:
                    with open(part, mode) as f, tqdm(total=announced, initial=offset, unit="B", unit_scale=True,
                                                     desc=desc, disable=not progress) as bar:
                        while True:
                            chunk = resp.read(_CHUNK)
                            if not chunk:
                                break
                            f.write(chunk)
                            bar.update(len(chunk))
                except (OSError, TimeoutError, http.client.HTTPException) as e:
                    raise DownloadError(f"{url}: interrupted after {os.path.getsize(part)} bytes ({e}); the partial "
                                        f"file {part!r} is kept and the next try resumes it") from e
            break
    digest = _check(part, dest, url, size, sha256, announced)
    os.replace(part, dest)
    checked = ["sha256 (catalog)"] if sha256 else []
    checked += ["size (catalog)"] if size is not None else []
    checked += ["size (server)"] if announced is not None and size is None else []
    meta = {"url": url, "size": os.path.getsize(dest), "sha256": digest, "checked": checked or ["none"],
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_meta(dest, meta)
    return meta
