"""Publish a training run folder as a model zoo entry (``zoo://<name>``).

    python tools/publish_model.py output/demo/pretrain_disco --name ours/demo_disco_cond \\
        --fits demo/cond.py --trained-on "demo unlabelled split, DisCo DETR, 150 iterations"
    python tools/lazyconfig_train_net.py --config-file configs/demo/cond.py \\
        train.init_checkpoint=zoo://ours/demo_disco_cond

From the run folder it takes the weights (``model_final.pth`` unless ``--weights``; only the model
tensors are kept, so the file loads with ``weights_only=True``), the config detectron2 saved there
(``config.yaml``), the last value of every AP metric in ``metrics.json``, and the git commit of this
checkout (``-dirty`` when the tree has changes). It writes

    <out>/<name>/model.pth, config.yaml        the published files (``--out``, default <cache>/published)
    <catalog>/<name>.json                      the catalog entry (``--catalog``, default <cache>/catalog)

and records the weights' size and SHA-256, so the entry is checked like any download. The entry's URL
is ``--url`` (where you will upload model.pth) or the published file itself (``file://``); with
``--url`` the file is also put into the download cache, so the name works here at once.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import torch

from disco_detr.analysis.records import read_metrics_json
from disco_detr.model_zoo import ZooEntry, cache_root, download_path
from disco_detr.model_zoo.download import file_sha256, write_meta
from disco_detr.tooling.paths import REPO


def _git_commit(repo: str) -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def read_metrics(run_dir: str) -> dict:
    """The last value of every AP metric (keys containing 'AP') in the run's detectron2 metrics.json; {} without one."""
    metrics = {}
    if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
        return metrics
    for record in read_metrics_json(run_dir):
        metrics.update({k: v for k, v in record.items() if "AP" in k and isinstance(v, (int, float))})
    return metrics


def _model_state(path: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is reported with the file name
        raise ValueError(f"{path}: not a readable checkpoint with weights_only=True ({e})") from e
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: no model state dict found")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def publish(run_dir: str, name: str, *, weights: str | None = None, url: str | None = None, out: str | None = None,
            catalog: str | None = None, fits: tuple[str, ...] = (), trained_on: str = "", licence: str = "",
            note: str = "") -> str:
    """Publish ``run_dir`` as catalog entry ``name``; returns the path of the entry's JSON file."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir!r} does not exist")
    weights = weights or os.path.join(run_dir, "model_final.pth")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights {weights!r} not found (pass --weights)")
    out = out or os.path.join(cache_root(), "published")
    catalog = catalog or os.path.join(cache_root(), "catalog")
    entry_dir = os.path.join(out, *name.split("/"))
    os.makedirs(entry_dir, exist_ok=True)

    state = _model_state(weights)
    model_path = os.path.join(entry_dir, "model.pth")
    torch.save({"model": state, "__author__": f"disco_detr published model {name}"}, model_path)
    size, digest = os.path.getsize(model_path), file_sha256(model_path)

    config = None
    src_config = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(src_config):
        config = os.path.join(entry_dir, "config.yaml")
        shutil.copyfile(src_config, config)
    entry = ZooEntry(
        name=name, url=url or "file://" + os.path.abspath(model_path), layout="ours", fits=tuple(fits),
        trained_on=trained_on, licence=licence, note=note, page=os.path.abspath(entry_dir), url_verified=True,
        licence_verified=bool(licence), size=size, sha256=digest, filename="model.pth", config=config,
        metrics=read_metrics(run_dir), git_commit=_git_commit(REPO))
    entry_path = os.path.join(catalog, *name.split("/")) + ".json"
    os.makedirs(os.path.dirname(entry_path), exist_ok=True)
    with open(entry_path + ".tmp", "w") as f:
        json.dump(entry.to_dict(), f, indent=1)
    os.replace(entry_path + ".tmp", entry_path)
    if url:  # the upload location may not exist yet: seed the download cache with the local copy
        cached = download_path(entry)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        shutil.copyfile(model_path, cached)
        write_meta(cached, {"url": url, "size": size, "sha256": digest, "checked": ["published here"]})
    return entry_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="training output folder (model_final.pth, config.yaml, metrics.json)")
    parser.add_argument("--name", required=True, help="catalog name, e.g. ours/demo_disco_cond")
    parser.add_argument("--weights", help="checkpoint inside or outside the run folder (default model_final.pth)")
    parser.add_argument("--url", help="where model.pth will be downloadable (default: the published local file)")
    parser.add_argument("--out", help="folder for the published files (default <cache>/published)")
    parser.add_argument("--catalog", help="folder for the catalog entry (default <cache>/catalog)")
    parser.add_argument("--fits", nargs="*", default=[], help="configs (relative to configs/) the weights load into")
    parser.add_argument("--trained-on", default="", help="data and method, in words")
    parser.add_argument("--licence", default="", help="licence of the weights")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    try:
        path = publish(args.run_dir, args.name, weights=args.weights, url=args.url, out=args.out, catalog=args.catalog,
                       fits=tuple(args.fits), trained_on=args.trained_on, licence=args.licence, note=args.note)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(path) as f:
        entry = json.load(f)
    print(f"published {entry['name']}: {entry['url']} ({entry['size']} bytes, sha256 {entry['sha256']}), "
          f"commit {entry['git_commit']}, {len(entry['metrics'])} metrics; catalog entry {path}")
    if args.catalog:
        print(f"add {os.path.abspath(args.catalog)} to $DISCO_ZOO_CATALOG to use it from another cache")
    return 0
