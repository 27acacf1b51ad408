"""The model zoo catalog: named checkpoints, where their publisher puts them, and what they fit.

An entry records the file's URL exactly as its publisher gives it (README / model code), the
*source layout* (whose key names the file uses, which picks the converter run on load), which of
our configs it fits, what it was trained on, its licence, and a size / SHA-256 only where the
publisher gives one (none of the built-in publishers does: those entries are checked against the
server's Content-Length and get a SHA-256 recorded at download, see :mod:`.download`).
``url_verified`` says whether the URL was read from the publisher's README or model code while
this catalog was written; an entry without a direct file URL (``url=None``) can still be used by
putting the file into the cache by hand (the error names the path).

Besides the built-in entries, JSON catalog files join the catalog: every ``*.json`` under
``<cache>/catalog/`` (where ``tools/publish_model.py`` writes our own checkpoints) and the files or
folders listed in ``$DISCO_ZOO_CATALOG`` (``os.pathsep``-separated). A JSON file holds one entry (an
object) or several (a list), with the field names of :class:`ZooEntry`.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LAYOUTS", "ZooEntry", "builtin_entries", "cache_root", "catalog", "get_config_file", "get_entry",
           "list_models", "register_entry"]

REPO_ROOT = Path(__file__).resolve().parents[4]

#: Source layouts: whose key names a file uses. The converter per layout is in :mod:`.layouts`.
LAYOUTS = (
    "torchvision_resnet",   # torchvision / SwAV / MoCo ResNet (conv1, bn1, layerN.b.convK, downsample.{0,1})
    "resnet_vd_release",    # the RT-DETR release's PResNet (its ImageNet SSLD files and full RT-DETR files)
    "resnet_vd_timm",       # timm resnet50d / resnet101d
    "detrex_conditional",   # detrex ConditionalDETR
    "detrex_deformable",    # detrex DeformableDETR (plain: no box refinement, not two-stage)
    "detrex_dab",           # detrex DABDETR
    "detrex_dino",          # detrex DINO
    "rtdetr_hf",            # HuggingFace transformers RTDetrForObjectDetection
    "rtdetr_release",       # lyuwenyu/RT-DETR rtdetr_pytorch checkpoints
    "dfine_hf",             # HuggingFace transformers DFineForObjectDetection
    "dfine_release",        # Peterande/D-FINE checkpoints
    "siamese_detr",         # Zx55/SiameseDETR pre-trained Conditional / Deformable DETR
    "ours",                 # this project's own checkpoints (tools/publish_model.py)
)


@dataclass(frozen=True)
class ZooEntry:
    """One named checkpoint.

    Attributes:
        name: ``<publisher>/<model>``, used as ``zoo://<name>``.
        url: the file's URL as its publisher gives it (``https://``, ``http://`` or ``file://``), or None
            when no direct file URL is known (then ``page`` says where to get the file).
        layout: one of :data:`LAYOUTS`.
        fits: our config files (relative to ``configs/``) the converted weights load into, best first.
        trained_on: data (and method) the weights come from.
        licence: the publisher's licence, as stated by the publisher (``licence_verified`` says whether it
            was read while writing the entry).
        note: anything a user must know (e.g. what stays freshly initialised).
        page: the publisher's page that lists the file (README / release page).
        url_verified: the URL was read from the publisher's README or code when the entry was written.
        size: the file size in bytes, only where the publisher gives it.
        sha256: the file's SHA-256 (hex), only where the publisher gives it.
        options: layout options (``{"variant": "deformable"}`` for Siamese DETR ...).
        filename: the cached file's name (default: the last path component of ``url``).
        config: for published entries, the config file stored with the weights (absolute path or URL).
        metrics / git_commit: for published entries, what ``tools/publish_model.py`` recorded.
    """

    name: str
    url: str | None
    layout: str
    fits: tuple[str, ...] = ()
    trained_on: str = ""
    licence: str = ""
    note: str = ""
    page: str = ""
    url_verified: bool = False
    licence_verified: bool = False
    size: int | None = None
    sha256: str | None = None
    options: dict = field(default_factory=dict)
    filename: str | None = None
    config: str | None = None
    metrics: dict = field(default_factory=dict)
    git_commit: str | None = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"zoo entry {self.name!r}: unknown layout {self.layout!r}; choose from {LAYOUTS}")
        if not self.name or self.name.startswith("/") or ".." in self.name.split("/"):
            raise ValueError(f"zoo entry name {self.name!r} must be a relative '<publisher>/<model>' name")
        if self.sha256 is not None and (len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"zoo entry {self.name!r}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        object.__setattr__(self, "fits", tuple(self.fits))

    @property
    def file_name(self) -> str:
        if self.filename:
            return self.filename
        if self.url:
            base = self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            if base:
                return base
        return self.name.rsplit("/", 1)[-1] + ".pth"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["fits"] = list(self.fits)
        return d

    @classmethod
    def from_dict(cls, d: dict, origin: str = "") -> ZooEntry:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"catalog entry {d.get('name')!r}{' in ' + origin if origin else ''} has unknown fields "
                             f"{unknown}; known: {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"catalog entry{' in ' + origin if origin else ''} is incomplete: {e}") from e


_SWAV_PAGE = "https://github.com/facebookresearch/swav#model-zoo"
_RTDETR_PAGE = "https://github.com/lyuwenyu/RT-DETR/tree/main/rtdetr_pytorch#model-zoo"
_RTDETR_STORE = "https://github.com/lyuwenyu/storage/releases/download/v0.1/"
_DETREX_STORE = "https://github.com/IDEA-Research/detrex-storage/releases/download/"
_SIAMESE_PAGE = "https://github.com/Zx55/SiameseDETR/releases/tag/v0.1"
_DFINE_PAGE = "https://github.com/Peterande/D-FINE#model-zoo"
_DFINE_STORE = "https://github.com/Peterande/storage/releases/download/dfinev1.0/"
_NO_RTDETR_CONFIG = ("its architecture differs from configs/common/models/rt_detr_r50vd.py (R50-vd, 6 decoder "
                     "layers), so it fits none of our configs and the RT-DETR converter (which checks against a "
                     "target model) refuses it")


def builtin_entries() -> list[ZooEntry]:
    """The entries this project ships (URLs as of the publishers' READMEs read on 2026-11-27)."""
    e = [
        ZooEntry(
            name="swav/resnet50_800ep", url="https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar",
            layout="torchvision_resnet", fits=("disco_cond.py", "siamese_cond.py", "disco_deformable_ms.py",
                                               "siamese_deformable_ms.py"),
            trained_on="ImageNet-1k without labels, SwAV 800 epochs, batch 4096, 2x224+6x96 multi-crop (75.3 linear top-1)",
            licence="CC BY-NC 4.0 (facebookresearch/swav LICENSE; not re-read here)", page=_SWAV_PAGE,
            url_verified=True,
            note="The paper's frozen pre-training backbone; SwAV's projection head and prototypes are dropped."),
        ZooEntry(
            name="rtdetr/resnet50_vd_ssld_v2", url=_RTDETR_STORE + "ResNet50_vd_ssld_v2_pretrained_from_paddle.pth",
            layout="resnet_vd_release", fits=("disco_rtdetr.py", "siamese_rtdetr.py"),
            trained_on="ImageNet-1k, PaddleClas SSLD distillation (converted from Paddle by the RT-DETR authors)",
            licence="Apache-2.0 (lyuwenyu/RT-DETR; not re-read here)", page=_RTDETR_PAGE, url_verified=True,
            note="The RT-DETR variant's frozen pre-training backbone (URL from the release's presnet.py)."),
        ZooEntry(
            name="siamese_detr/conditional_detr_r50_100q_imagenet", url=None, layout="siamese_detr",
            options={"variant": "conditional"}, filename="siamese_detr_conditional_detr_r50_100q_imagenet.pth",
            fits=("finetune_cond_voc_q100.py", "finetune_cond_coco_q100.py"),
            trained_on="ImageNet-1k without labels, Siamese DETR pre-training, SwAV R50 frozen, 100 queries",
            licence="Apache-2.0 (SiameseDETR README)", licence_verified=True, page=_SIAMESE_PAGE,
            note="Release v0.1 lists the files, but their names and contents could not be read here: download the "
                 "Conditional DETR file from the release page into the cache path the error names. The converter "
                 "follows the release's model code (commit b38a0c6) and accepts both the OpenSelfSup checkpoint and "
                 "the output of its tools/convert_to_detr.py; the class head and pre-training heads are dropped."),
        ZooEntry(
            name="siamese_detr/deformable_detr_ms_r50_300q_imagenet", url=None, layout="siamese_detr",
            options={"variant": "deformable"}, filename="siamese_detr_deformable_detr_ms_r50_300q_imagenet.pth",
            fits=("finetune_deformable_ms_voc.py", "finetune_deformable_ms_coco.py"),
            trained_on="ImageNet-1k without labels, Siamese DETR pre-training, SwAV R50 frozen, 4-level Deformable "
                       "DETR, 300 queries",
            licence="Apache-2.0 (SiameseDETR README)", licence_verified=True, page=_SIAMESE_PAGE,
            note="As the Conditional entry: file name and contents not verified; multi-scale only."),
        ZooEntry(
            name="detrex/conditional_detr_r50_50ep", url=_DETREX_STORE + "v0.1.0/conditional_detr_r50_50ep.pth",
            layout="detrex_conditional", fits=("finetune_cond_coco.py",),
            trained_on="COCO 2017 train, 50 epochs, detrex (box AP 41.60 per its README)",
            licence="Apache-2.0 (detrex; not re-read here)",
            page="https://github.com/IDEA-Research/detrex/tree/main/projects/conditional_detr", url_verified=True,
            note="COCO-trained detector: 80-class head; fine-tuning on VOC keeps all but the class head."),
        ZooEntry(
            name="detrex/conditional_detr_r50_50ep_converted",
            url=_DETREX_STORE + "v0.1.0/converted_conditional_detr_r50_50ep.pth",
            layout="detrex_conditional", fits=("finetune_cond_coco.py",),
            trained_on="COCO 2017 train, 50 epochs, official Conditional DETR weights converted by detrex (AP 41.02)",
            licence="Apache-2.0 (detrex / ConditionalDETR; not re-read here)",
            page="https://github.com/IDEA-Research/detrex/tree/main/projects/conditional_detr", url_verified=True),
        ZooEntry(
            name="detrex/dab_detr_r50_50ep", url=_DETREX_STORE + "v0.1.0/dab_detr_r50_50ep.pth",
            layout="detrex_dab", fits=("finetune_dab_coco.py", "finetune_dab_coco_24ep.py"),
            trained_on="COCO 2017 train, 50 epochs, detrex (box AP 43.3 per its README)",
            licence="Apache-2.0 (detrex; not re-read here)",
            page="https://github.com/IDEA-Research/detrex/tree/main/projects/dab_detr", url_verified=True,
            note="COCO-trained detector (single pattern); the class head stays fresh for VOC."),
        ZooEntry(
            name="detrex/deformable_detr_r50_50ep", url=_DETREX_STORE + "v0.1.0/converted_deformable_detr_r50.pth",
            layout="detrex_deformable", fits=("finetune_deformable_ms_coco.py",),
            trained_on="COCO 2017 train, 50 epochs, official Deformable DETR (plain) converted by detrex (AP 44.59)",
            licence="Apache-2.0 (detrex / Deformable-DETR; not re-read here)",
            page="https://github.com/IDEA-Research/detrex/tree/main/projects/deformable_detr", url_verified=True,
            note="Plain Deformable DETR only: detrex's box-refinement and two-stage files are refused by the converter."),
        ZooEntry(
            name="detrex/dino_r50_4scale_12ep", url=_DETREX_STORE + "v0.2.0/dino_r50_4scale_12ep_49_2AP.pth",
            layout="detrex_dino", fits=("finetune_dino_coco_12ep.py", "finetune_dino_coco.py"),
            trained_on="COCO 2017 train, 12 epochs, 100 denoising queries, detrex (box AP 49.2)",
            licence="Apache-2.0 (detrex; not re-read here)",
            page="https://github.com/IDEA-Research/detrex/tree/main/projects/dino", url_verified=True,
            note="COCO-trained 4-scale DINO, 900 queries; the class head and label embedding stay fresh for VOC."),
    ]
    for arch, file, ap in (("r18vd", "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth", "46.4"),
                           ("r34vd", "rtdetr_r34vd_dec4_6x_coco_from_paddle.pth", "48.9"),
                           ("r50vd_m", "rtdetr_r50vd_m_6x_coco_from_paddle.pth", "51.3"),
                           ("r50vd", "rtdetr_r50vd_6x_coco_from_paddle.pth", "53.1"),
                           ("r101vd", "rtdetr_r101vd_6x_coco_from_paddle.pth", "54.3")):
        fits = ("finetune_rtdetr_coco.py", "finetune_rtdetr_coco_50ep.py") if arch == "r50vd" else ()
        e.append(ZooEntry(
            name=f"rtdetr/rtdetr_{arch}_6x_coco", url=_RTDETR_STORE + file, layout="rtdetr_release", fits=fits,
            trained_on=f"COCO 2017 train, 6x schedule, 640 px (AP {ap} per the release README; converted from Paddle)",
            licence="Apache-2.0 (lyuwenyu/RT-DETR; not re-read here)", page=_RTDETR_PAGE, url_verified=True,
            note=("The release's COCO detector; its file layout ({'model'} or {'ema': {'module'}}) was not seen here."
                  if fits else _NO_RTDETR_CONFIG + ".")))
    for size, backbone, ap in (("s", "B0", "48.5"), ("m", "B2", "52.3"), ("l", "B4", "54.0"), ("x", "B5", "55.8")):
        e.append(ZooEntry(
            name=f"dfine/dfine_hgnetv2_{size}_coco", url=_DFINE_STORE + f"dfine_{size}_coco.pth",
            layout="dfine_release", fits=() if size == "x" else (f"finetune_dfine_hgnetv2_{size}_coco.py",),
            trained_on=f"COCO 2017 train, 640 px (AP {ap} per the release README)",
            licence="Apache-2.0 (Peterande/D-FINE; not re-read here)", page=_DFINE_PAGE,
            note=("Unverified: the URL follows the release README and scripts (some copies name the folder "
                  f"'dfinev1'); no file was downloaded here. An HGNetv2-{backbone} D-FINE"
                  + (": it fits no config of this project (its d=384 encoder needs an encoder-to-decoder projection "
                     "our D-FINE lacks)." if size == "x" else
                     f"; the D-FINE converter checks every key against "
                     f"configs/common/models/d_fine_hgnetv2_{size}.py's model."))))
    return e


_EXTRA: dict[str, ZooEntry] = {}


def register_entry(entry: ZooEntry | dict) -> ZooEntry:
    """Add (or replace) an entry for this process (tests, notebooks)."""
    entry = entry if isinstance(entry, ZooEntry) else ZooEntry.from_dict(entry)
    _EXTRA[entry.name] = entry
    return entry


def _json_files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "**", "*.json"), recursive=True))
    return [path] if os.path.isfile(path) else []


def _load_json_catalog(path: str) -> list[ZooEntry]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"model zoo catalog file {path!r} is not readable JSON: {e}") from e
    items = data if isinstance(data, list) else [data]
    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"model zoo catalog file {path!r}: each entry must be a JSON object")
        item = dict(item)
        # a published entry's config file sits next to its JSON
        if item.get("config") and "://" not in item["config"] and not os.path.isabs(item["config"]):
            item["config"] = os.path.join(os.path.dirname(os.path.abspath(path)), item["config"])
        entries.append(ZooEntry.from_dict(item, origin=path))
    return entries


def catalog_paths(cache_dir: str) -> list[str]:
    """JSON catalog files read besides the built-in entries (see the module docstring)."""
    paths = _json_files(os.path.join(cache_dir, "catalog"))
    for part in filter(None, os.environ.get("DISCO_ZOO_CATALOG", "").split(os.pathsep)):
        found = _json_files(part)
        if not found:
            raise FileNotFoundError(f"$DISCO_ZOO_CATALOG names {part!r}, which is neither a JSON file nor a folder "
                                    "holding *.json catalog files")
        paths.extend(found)
    return paths


def cache_root() -> str:
    """The model zoo cache: ``$DISCO_ZOO_CACHE``, else ``~/.cache/disco_detr``."""
    return os.path.expanduser(os.environ.get("DISCO_ZOO_CACHE") or os.path.join("~", ".cache", "disco_detr"))


def catalog(cache_dir: str | None = None) -> dict[str, ZooEntry]:
    """name -> entry: built-in entries, then JSON catalogs, then :func:`register_entry` (later ones win)."""
    out = {e.name: e for e in builtin_entries()}
    for path in catalog_paths(cache_dir or cache_root()):
        out.update({e.name: e for e in _load_json_catalog(path)})
    out.update(_EXTRA)
    return out


def list_models(cache_dir: str | None = None) -> list[str]:
    return sorted(catalog(cache_dir))


def get_entry(name: str, cache_dir: str | None = None) -> ZooEntry:
    """The entry called ``name`` (a leading ``zoo://`` is accepted); KeyError lists the known names."""
    name = name[len("zoo://"):] if name.startswith("zoo://") else name
    entries = catalog(cache_dir)
    if name not in entries:
        raise KeyError(f"no model zoo entry {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]


def get_config_file(name: str, index: int = 0) -> str:
    """Path of the config the entry fits (``fits[index]``; the stored config for published entries)."""
    entry = get_entry(name)
    if entry.config:
        return entry.config
    if not entry.fits:
        raise KeyError(f"model zoo entry {entry.name!r} fits none of our configs yet ({entry.note or 'no note'})")
    path = REPO_ROOT / "configs" / entry.fits[index]
    if not path.is_file():
        raise FileNotFoundError(f"model zoo entry {entry.name!r} names config {entry.fits[index]!r}, not found at {path}")
    return str(path)
