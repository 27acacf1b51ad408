"""The model zoo: catalog, checked / resumable downloads from a local HTTP server, conversion on load by
source layout, offline use, the pickle policy, and zoo:// through the checkpointer, Trainer and the CLI."""
import argparse
import json
import os
import pickle
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from detectron2.utils.file_io import PathManager

from disco_detr import model_zoo
from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.convert.detrex import check_against
from disco_detr.convert.siamese_detr import convert_siamese_detr
from disco_detr.model_zoo import ChecksumError, MissingConverterError, ZooEntry, ZooOfflineError, catalog, resolve
from disco_detr.model_zoo.catalog import _EXTRA, LAYOUTS, builtin_entries
from disco_detr.model_zoo.download import DownloadError, download, read_meta

from conftest import REPO, tiny_config

# --------------------------------------------------------------------------- local HTTP server

class _Store:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        self.ignore_range = False


def _handler(store: _Store):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            store.requests.append((self.path, self.headers.get("Range")))
            data = store.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start, rng = 0, self.headers.get("Range")
            if rng and not store.ignore_range:
                start = int(re.match(r"bytes=(\d+)-", rng)[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = store.cut_after.pop(self.path, None)
            self.wfile.write(body if cut is None else body[:cut])
            if cut is not None:
                self.close_connection = True

        def log_message(self, *args):
            pass
    return Handler


@pytest.fixture
def server():
    """(base URL, store) of an HTTP server on 127.0.0.1 in a thread; it shuts itself down after 120 s."""
    store = _Store()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(120.0, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", store
    watchdog.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    cache = tmp_path / "zoo_cache"
    monkeypatch.setenv("DISCO_ZOO_CACHE", str(cache))
    monkeypatch.delenv("DISCO_ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("DISCO_ZOO_CATALOG", raising=False)
    yield cache
    _EXTRA.clear()


def _bytes_of(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _serve(server, path: str, obj) -> str:
    base, store = server
    store.files[path] = obj if isinstance(obj, bytes) else _bytes_of(obj)
    return base + path


# --------------------------------------------------------------------------- catalog

def test_builtin_catalog_is_consistent():
    entries = builtin_entries()
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    for e in entries:
        assert e.layout in LAYOUTS
        assert e.sha256 is None and e.size is None, f"{e.name}: no publisher gives a checksum; none may be invented"
        assert (e.url is None) == (not e.url_verified) or e.url is not None
        if e.url is None:
            assert e.page.startswith("https://") and e.note, e.name
        else:
            assert e.url.startswith("https://"), e.name
        for cfg in e.fits:
            assert os.path.isfile(os.path.join(REPO, "configs", cfg)), (e.name, cfg)
    expected = {"swav/resnet50_800ep", "rtdetr/resnet50_vd_ssld_v2", "siamese_detr/conditional_detr_r50_100q_imagenet",
                "siamese_detr/deformable_detr_ms_r50_300q_imagenet", "detrex/conditional_detr_r50_50ep",
                "detrex/dab_detr_r50_50ep", "detrex/deformable_detr_r50_50ep", "detrex/dino_r50_4scale_12ep",
                "rtdetr/rtdetr_r50vd_6x_coco"}
    assert expected <= set(names)
    assert not any(e.url_verified for e in entries if e.layout == "siamese_detr")


def test_json_catalog_and_bad_entries(zoo_cache, tmp_path, monkeypatch):
    path = tmp_path / "extra.json"
    path.write_text(json.dumps([{"name": "x/one", "url": "file:///nowhere/one.pth", "layout": "ours"}]))
    monkeypatch.setenv("DISCO_ZOO_CATALOG", str(path))
    assert catalog()["x/one"].file_name == "one.pth"
    path.write_text(json.dumps({"name": "x/two", "url": None, "layout": "made_up"}))
    with pytest.raises(ValueError, match="unknown layout 'made_up'"):
        catalog()
    path.write_text(json.dumps({"name": "x/three", "url": None, "layout": "ours", "colour": "red"}))
    with pytest.raises(ValueError, match="unknown fields.*colour"):
        catalog()
    with pytest.raises(ValueError, match="sha256"):
        ZooEntry("x/four", None, "ours", sha256="abc")
    monkeypatch.setenv("DISCO_ZOO_CATALOG", str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="DISCO_ZOO_CATALOG"):
        catalog()
    monkeypatch.delenv("DISCO_ZOO_CATALOG")
    with pytest.raises(KeyError, match="no model zoo entry 'x/none'"):
        model_zoo.get_entry("zoo://x/none")


# --------------------------------------------------------------------------- downloads

def test_download_resumes_after_interruption(server, tmp_path):
    base, store = server
    data = os.urandom(3 * (1 << 20) + 123)
    url = _serve(server, "/big.bin", data)
    store.cut_after["/big.bin"] = 1 << 20
    dest = str(tmp_path / "big.bin")
    with pytest.raises(DownloadError, match="resumes"):
        download(url, dest, progress=False, timeout=10)
    assert not os.path.exists(dest)
    assert os.path.getsize(dest + ".part") == 1 << 20
    meta = download(url, dest, progress=False, timeout=10)
    assert store.requests[-1] == ("/big.bin", f"bytes={1 << 20}-")  # resumed, not restarted
    with open(dest, "rb") as f:
        assert f.read() == data
    import hashlib

    assert meta["sha256"] == hashlib.sha256(data).hexdigest() == read_meta(dest)["sha256"]
    assert meta["size"] == len(data) and not os.path.exists(dest + ".part")


def test_server_ignoring_range_restarts_and_stale_part_is_replaced(server, tmp_path):
    base, store = server
    data = os.urandom(50_000)
    url = _serve(server, "/f.bin", data)
    dest = str(tmp_path / "f.bin")
    with open(dest + ".part", "wb") as f:
        f.write(b"garbage" * 10)
    store.ignore_range = True
    download(url, dest, progress=False)
    with open(dest, "rb") as f:
        assert f.read() == data
    # a partial file longer than the file: 416, restart from zero
    store.ignore_range = False
    os.remove(dest)
    with open(dest + ".part", "wb") as f:
        f.write(b"x" * 60_000)
    download(url, dest, progress=False)
    with open(dest, "rb") as f:
        assert f.read() == data


def test_checksum_and_size_mismatch_are_never_loaded(server, zoo_cache):
    state = {"backbone.w": torch.ones(3)}
    url = _serve(server, "/ours.pth", {"model": state})
    model_zoo.register_entry(ZooEntry("t/bad_sha", url, "ours", sha256="0" * 64))
    with pytest.raises(ChecksumError, match="SHA-256 .* the catalog expects 0{64}"):
        resolve("t/bad_sha")
    entry = model_zoo.get_entry("t/bad_sha")
    assert not os.path.exists(model_zoo.download_path(entry))
    assert os.path.exists(model_zoo.download_path(entry) + ".corrupt")
    assert not os.path.exists(model_zoo.converted_path(entry))
    model_zoo.register_entry(ZooEntry("t/bad_size", url, "ours", size=5))
    with pytest.raises(ChecksumError, match="bytes, the catalog expects 5"):
        resolve("t/bad_size")
    # a good entry, then its cached file is truncated: refused, not loaded
    model_zoo.register_entry(ZooEntry("t/good", url, "ours"))
    local = resolve("t/good")
    assert torch.equal(torch.load(local, weights_only=True)["model"]["backbone.w"], state["backbone.w"])
    original = model_zoo.download_path(model_zoo.get_entry("t/good"))
    with open(original, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ChecksumError, match="truncated"):
        resolve("t/good")


def test_offline_error_names_url_and_cache_path(server, zoo_cache, monkeypatch):
    base, store = server
    url = _serve(server, "/ours.pth", {"model": {"a": torch.zeros(2)}})
    entry = model_zoo.register_entry(ZooEntry("t/offline", url, "ours"))
    monkeypatch.setenv("DISCO_ZOO_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ZooOfflineError) as err:
        resolve("zoo://t/offline")
    assert time.perf_counter() - start < 2.0 and not store.requests  # at once, no network
    path = model_zoo.download_path(entry)
    assert url in str(err.value) and path in str(err.value)
    # the user puts the file there: offline use works (checked and recorded on first use)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(store.files["/ours.pth"])
    local = resolve("t/offline")
    assert torch.equal(torch.load(local, weights_only=True)["model"]["a"], torch.zeros(2))
    assert read_meta(path)["checked"] == ["placed by hand"] and not store.requests
    # unreachable server, no offline flag: same guidance
    monkeypatch.delenv("DISCO_ZOO_OFFLINE")
    model_zoo.register_entry(ZooEntry("t/unreachable", "http://127.0.0.1:9/none.pth", "ours"))
    with pytest.raises(ZooOfflineError, match=r"http://127\.0\.0\.1:9/none\.pth.*put the file at"):
        resolve("t/unreachable")
    # an entry without a direct URL (the Siamese DETR release) says where to get the file
    with pytest.raises(ZooOfflineError, match="releases/tag/v0.1.*put the file at .*siamese_detr"):
        resolve("siamese_detr/conditional_detr_r50_100q_imagenet")


def test_missing_converter_fails_before_download(server, zoo_cache, monkeypatch):
    base, store = server
    with pytest.raises(MissingConverterError, match="convert_rtdetr.*fits none of our configs"):
        resolve("rtdetr/rtdetr_r18vd_6x_coco")
    import disco_detr.convert.detrex as detrex

    monkeypatch.setattr(detrex, "DETREX_VARIANTS", ("conditional", "deformable"))
    url = _serve(server, "/dab.pth", {"model": {}})
    model_zoo.register_entry(ZooEntry("t/dab", url, "detrex_dab"))
    with pytest.raises(MissingConverterError, match=r"convert_detrex\(variant='dab'\).*Nothing was downloaded"):
        resolve("t/dab")
    assert not store.requests


def test_pickle_needing_file_is_refused_unless_opted_in(server, zoo_cache):
    url = _serve(server, "/pickled.pth", {"model": {"a": torch.ones(1)}, "args": argparse.Namespace(lr=1)})
    model_zoo.register_entry(ZooEntry("t/pickled", url, "ours"))
    with pytest.raises(pickle.UnpicklingError, match="weights_only=True.*checkpoint_allow_pickle=True"):
        resolve("t/pickled")
    local = resolve("t/pickled", allow_pickle=True)
    assert torch.load(local, weights_only=True)["model"]["a"].item() == 1.0  # the converted file is safe


def test_conversion_is_cached_and_pathmanager_resolves(server, zoo_cache):
    base, store = server
    url = _serve(server, "/c.pth", {"model": {"a": torch.arange(3.0)}})
    model_zoo.register_entry(ZooEntry("t/cached", url, "ours"))
    local = PathManager.get_local_path("zoo://t/cached")
    mtime = os.path.getmtime(local)
    n = len(store.requests)
    assert resolve("t/cached") == local and os.path.getmtime(local) == mtime and len(store.requests) == n
    report = model_zoo.conversion_report(local)
    assert report["kept"] == ["a"] and report["layout"] == "ours" and report["source_sha256"]
    with PathManager.open("zoo://t/cached", "rb") as f:
        assert torch.load(f, weights_only=True)["model"]["a"].tolist() == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- layouts

def _entry_for(tmp_path, name, layout, obj, **kw):
    path = tmp_path / (name.replace("/", "_") + ".pth")
    torch.save(obj, path)
    return model_zoo.register_entry(ZooEntry(name, "file://" + str(path), layout, **kw))


def test_torchvision_resnet_layout(zoo_cache, tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None).state_dict()
    swav = {f"module.{k}": v for k, v in tv.items()}
    swav["module.projection_head.0.weight"] = torch.zeros(4, 512)
    swav["module.prototypes.weight"] = torch.zeros(10, 4)
    _entry_for(tmp_path, "t/swav_like", "torchvision_resnet", swav)
    state = torch.load(resolve("t/swav_like"), weights_only=True)["model"]
    assert torch.equal(state["backbone.stem.conv1.weight"], tv["conv1.weight"])
    assert torch.equal(state["backbone.stem.conv1.norm.running_var"], tv["bn1.running_var"])
    assert torch.equal(state["backbone.res3.0.shortcut.weight"], tv["layer2.0.downsample.0.weight"])
    assert torch.equal(state["backbone.res5.1.conv2.norm.weight"], tv["layer4.1.bn2.weight"])
    counters = sum(k.endswith("num_batches_tracked") for k in tv)
    assert len(state) == len(tv) - counters - 2  # fc.weight, fc.bias
    report = model_zoo.conversion_report(resolve("t/swav_like"))
    assert "module.prototypes.weight" in report["dropped"] and "module.fc.weight" in report["dropped"]


def _to_release_resnet_vd(key: str) -> str:
    """Our ResNetVd name -> the RT-DETR release's PResNet name (independent inverse of the converter)."""
    m = re.match(r"^stem\.conv(\d)\.(weight|norm\..+)$", key)
    if m:
        return f"conv1.conv1_{m[1]}.{'conv.weight' if m[2] == 'weight' else m[2]}"
    m = re.match(r"^res(\d)\.(\d+)\.conv(\d)\.(weight|norm\..+)$", key)
    if m:
        return (f"res_layers.{int(m[1]) - 2}.blocks.{m[2]}.branch2{'abc'[int(m[3]) - 1]}."
                f"{'conv.weight' if m[4] == 'weight' else m[4]}")
    m = re.match(r"^res(\d)\.(\d+)\.shortcut\.(weight|norm\..+)$", key)
    inner = "short." if m[1] == "2" else "short.conv."  # stage 2 has no average pool
    return f"res_layers.{int(m[1]) - 2}.blocks.{m[2]}.{inner}{'conv.weight' if m[3] == 'weight' else m[3]}"


def test_resnet_vd_release_layout(zoo_cache, tmp_path):
    from disco_detr.modeling.resnet_vd import ResNetVd

    torch.manual_seed(0)
    ours = ResNetVd(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1), widths=(16, 32, 64, 128),
                    out_features=("res5",)).state_dict()
    ours = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ours.items()
            if not k.endswith("num_batches_tracked")}
    release = {_to_release_resnet_vd(k): v for k, v in ours.items()}
    _entry_for(tmp_path, "t/ssld_like", "resnet_vd_release", release)
    state = torch.load(resolve("t/ssld_like"), weights_only=True)["model"]
    assert sorted(state) == sorted(f"backbone.{k}" for k in ours)
    assert all(torch.equal(state[f"backbone.{k}"], v) for k, v in ours.items())


def test_rtdetr_layouts_call_the_rtdetr_converter_with_a_reference(zoo_cache, tmp_path, monkeypatch):
    """Wiring only (convert/rtdetr.py is tested by its own author): the EMA weights of a release file and
    our model of the entry's config go to convert_rtdetr; its output and dropped keys reach the report."""
    import disco_detr.convert.rtdetr as rtdetr
    from disco_detr.model_zoo import layouts

    calls = {}

    def fake(state, source, reference):
        calls.update(source=source, reference=reference)
        return {"backbone.x": state["w"] * 2}, ["decoder.duplicate"]

    monkeypatch.setattr(rtdetr, "convert_rtdetr", fake)
    monkeypatch.setattr(layouts, "_reference_model", lambda entry: f"model of {entry.fits[0]}")
    _entry_for(tmp_path, "t/rtdetr", "rtdetr_release",
               {"model": {"w": torch.ones(1)}, "ema": {"module": {"w": torch.full((1,), 3.0)}}},
               fits=("finetune_rtdetr_coco.py",))
    local = resolve("t/rtdetr")
    assert calls == {"source": "release", "reference": "model of finetune_rtdetr_coco.py"}
    assert torch.load(local, weights_only=True)["model"]["backbone.x"].item() == 6.0  # the EMA weights
    assert "decoder.duplicate" in model_zoo.conversion_report(local)["dropped"]


def _detrex_case(fixture_name):
    """(fixture, detrex variant, our model built to the fixture's config, its error function), from the
    detector tests' own builders (ours to check, not to re-derive)."""
    import test_reference_fixtures as ref

    from conftest import detrex_fixture_errors

    fixture = ref._fixture(fixture_name)
    if fixture_name in ref.VARIANTS:
        variant, build = ref.VARIANTS[fixture_name]
        return fixture, variant, build(fixture["config"], ref._toy_backbone(fixture["config"])), detrex_fixture_errors
    if fixture_name == "dab_detr":
        import test_dab_detr as dab

        return fixture, "dab", dab._fixture_model(fixture), detrex_fixture_errors
    import test_dino as dino

    return fixture, "dino", dino._fixture_model(fixture["config"]), dino._errors


@pytest.mark.parametrize("fixture_name", ["conditional_detr", "deformable_detr", "dab_detr", "dino"])
def test_detrex_layouts_reproduce_detrex(fixture_name, zoo_cache, tmp_path):
    """Real detrex key layouts (tests/data/reference): zoo://, conversion on load, DisCoCheckpointer with the
    load report, and the loaded model reproduces detrex's outputs."""
    from test_reference_fixtures import ATOL_BOXES, ATOL_LOGITS

    torch.manual_seed(0)
    fixture, variant, model, errors = _detrex_case(fixture_name)
    model.eval()
    _entry_for(tmp_path, f"t/detrex_{variant}", f"detrex_{variant}", {"model": fixture["state_dict"]})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # everything must come from the file
    out = tmp_path / "out"
    DisCoCheckpointer(model, str(out)).load(f"zoo://t/detrex_{variant}")
    report = json.loads((out / "zoo_report.json").read_text())
    assert report["fresh"] == [] and report["mismatched"] == [] and report["unexpected"] == []
    assert report["conversion"]["layout"] == f"detrex_{variant}" and report["conversion"]["source_sha256"]
    for key, (logits, boxes) in errors(model, fixture).items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (key, logits, boxes)


# --------------------------------------------------------------------------- Siamese DETR

_D, _FFN, _NQ = 64, 128, 20


def _rand(g, *shape):
    return torch.randn(*shape, generator=g)


def _oss_common(g, d=_D, ffn=_FFN, enc_attn="mha"):
    """Keys shared by both Siamese DETR variants, named as the release's model code names them."""
    s = {"backbone.conv1.weight": _rand(g, 8, 3, 7, 7), "backbone.layer1.0.conv1.weight": _rand(g, 8, 8, 1, 1),
         "backbone.layer1.0.downsample.0.weight": _rand(g, 16, 8, 1, 1),
         "patch2query.weight": _rand(g, d, 32), "patch2query.bias": _rand(g, d),
         "pred_head.class_embed.weight": _rand(g, 3, d), "pred_head.class_embed.bias": _rand(g, 3),
         "pred_head.feature_align.layers.0.weight": _rand(g, d, d), "pred_head.feature_align.layers.1.weight": _rand(g, 32, d),
         "pred_head.criterion.empty_weight": torch.tensor([1.0, 1.0, 0.1]),
         "enc_head.0.projector.mlp.0.weight": _rand(g, 16, d), "dec_head.0.predictor.mlp.0.weight": _rand(g, 16, 16)}
    for part in ("bn1", "layer1.0.bn1", "layer1.0.downsample.1"):
        n = 16 if "downsample" in part else 8
        for p in ("weight", "bias", "running_mean", "running_var"):
            s[f"backbone.{part}.{p}"] = _rand(g, n)
        s[f"backbone.{part}.num_batches_tracked"] = torch.tensor(7)
    for j, (o, i) in enumerate(((d, d), (d, d), (4, d))):
        s[f"pred_head.bbox_embed.layers.{j}.weight"], s[f"pred_head.bbox_embed.layers.{j}.bias"] = _rand(g, o, i), _rand(g, o)
    for i in range(2):
        p = f"transformer.encoder.layers.{i}."
        s.update({p + "linear1.weight": _rand(g, ffn, d), p + "linear1.bias": _rand(g, ffn),
                  p + "linear2.weight": _rand(g, d, ffn), p + "linear2.bias": _rand(g, d)})
        for n in ("norm1", "norm2"):
            s[p + n + ".weight"], s[p + n + ".bias"] = _rand(g, d), _rand(g, d)
        p = f"transformer.decoder.layers.{i}."
        s.update({p + "linear1.weight": _rand(g, ffn, d), p + "linear1.bias": _rand(g, ffn),
                  p + "linear2.weight": _rand(g, d, ffn), p + "linear2.bias": _rand(g, d)})
        for n in ("norm1", "norm2", "norm3"):
            s[p + n + ".weight"], s[p + n + ".bias"] = _rand(g, d), _rand(g, d)
    return s


def _oss_conditional(seed=0, d=_D):
    g = torch.Generator().manual_seed(seed)
    s = _oss_common(g)
    s.update({"input_proj.weight": _rand(g, d, 64, 1, 1), "input_proj.bias": _rand(g, d),
              "query_embed.weight": _rand(g, _NQ, d)})
    for i in range(2):
        p = f"transformer.encoder.layers.{i}.self_attn."
        s.update({p + "in_proj_weight": _rand(g, 3 * d, d), p + "in_proj_bias": _rand(g, 3 * d),
                  p + "out_proj.weight": _rand(g, d, d), p + "out_proj.bias": _rand(g, d)})
        p = f"transformer.decoder.layers.{i}."
        projs = ["sa_qcontent", "sa_qpos", "sa_kcontent", "sa_kpos", "sa_v", "ca_qcontent", "ca_kcontent", "ca_kpos",
                 "ca_v", "ca_qpos_sine"] + (["ca_qpos"] if i == 0 else [])  # later layers set ca_qpos_proj = None
        for n in projs:
            s[p + n + "_proj.weight"], s[p + n + "_proj.bias"] = _rand(g, d, d), _rand(g, d)
        for n in ("self_attn", "cross_attn"):
            s[p + n + ".out_proj.weight"], s[p + n + ".out_proj.bias"] = _rand(g, d, d), _rand(g, d)
    s["transformer.decoder.norm.weight"], s["transformer.decoder.norm.bias"] = _rand(g, d), _rand(g, d)
    for head, out in (("query_scale", d), ("ref_point_head", 2)):
        s[f"transformer.decoder.{head}.layers.0.weight"] = _rand(g, d, d)
        s[f"transformer.decoder.{head}.layers.0.bias"] = _rand(g, d)
        s[f"transformer.decoder.{head}.layers.1.weight"] = _rand(g, out, d)
        s[f"transformer.decoder.{head}.layers.1.bias"] = _rand(g, out)
    return s


def _oss_deformable(seed=0, d=_D, heads=8, levels=4, points=4, channels=(16, 32, 64)):
    g = torch.Generator().manual_seed(seed)
    s = _oss_common(g)
    for lvl, c in enumerate(channels + (channels[-1],)):
        k = 3 if lvl == len(channels) else 1
        s[f"input_proj.{lvl}.0.weight"], s[f"input_proj.{lvl}.0.bias"] = _rand(g, d, c, k, k), _rand(g, d)
        s[f"input_proj.{lvl}.1.weight"], s[f"input_proj.{lvl}.1.bias"] = _rand(g, d), _rand(g, d)
    s.update({"query_embed.weight": _rand(g, _NQ, d), "transformer.tgt_embed.weight": _rand(g, _NQ, d),
              "transformer.level_embed": _rand(g, levels, d),
              "transformer.reference_points.weight": _rand(g, 2, d), "transformer.reference_points.bias": _rand(g, 2)})
    msda = {"sampling_offsets": heads * levels * points * 2, "attention_weights": heads * levels * points,
            "value_proj": d, "output_proj": d}
    for i in range(2):
        for where, attn in (("encoder", "self_attn"), ("decoder", "cross_attn")):
            for n, rows in msda.items():
                p = f"transformer.{where}.layers.{i}.{attn}.{n}."
                s[p + "weight"], s[p + "bias"] = _rand(g, rows, d), _rand(g, rows)
        p = f"transformer.decoder.layers.{i}.self_attn."
        s.update({p + "in_proj_weight": _rand(g, 3 * d, d), p + "in_proj_bias": _rand(g, 3 * d),
                  p + "out_proj.weight": _rand(g, d, d), p + "out_proj.bias": _rand(g, d)})
    return s


def _exported(oss: dict, deform: bool) -> dict:
    """What the release's tools/convert_to_detr.py writes for an OpenSelfSup checkpoint."""
    out = {}
    for k, v in oss.items():
        if k.startswith(("transformer", "query_embed", "input_proj", "patch2query")):
            out[k] = v
        elif k.startswith("backbone"):
            out["backbone.0.body." + k[len("backbone."):]] = v
        elif k.startswith("pred_head.bbox_embed") or (deform and k.startswith("pred_head.class_embed")):
            name = k[len("pred_head."):]
            for i in range(6 if deform else 1):
                out[name.replace("_embed", f"_embed.{i}") if deform else name] = v
    return out


def _our_model(kind):
    from disco_detr.modeling import ConditionalDETR, DeformableDETR
    from disco_detr.modeling.detectors.conditional_detr import ConditionalDecoder
    from disco_detr.modeling.detectors.deformable_detr import DeformableDecoder, DeformableEncoder
    from disco_detr.modeling.layers import DETREncoder

    common = dict(num_classes=5, num_queries=_NQ, criterion=None, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3,
                  size_divisibility=0)
    if kind == "conditional":
        from test_reference_fixtures import TinyConvBackbone

        return ConditionalDETR(backbone=TinyConvBackbone({"res5": (32, 64)}), in_feature="res5",
                               encoder=DETREncoder(2, _D, 8, _FFN, 0.0), decoder=ConditionalDecoder(2, _D, 8, _FFN, 0.0),
                               **common)
    from test_reference_fixtures import TinyConvBackbone

    levels = {"res3": (8, 16), "res4": (16, 32), "res5": (32, 64)}
    return DeformableDETR(backbone=TinyConvBackbone(levels), in_features=list(levels), num_extra_levels=1,
                          encoder=DeformableEncoder(2, _D, 8, _FFN, 0.0, 4, 4),
                          decoder=DeformableDecoder(2, _D, 8, _FFN, 0.0, 4, 4), **common)


@pytest.mark.parametrize("variant", ["conditional", "deformable"])
def test_siamese_detr_layout_follows_the_release_code(variant):
    oss = _oss_conditional() if variant == "conditional" else _oss_deformable()
    ours, report = convert_siamese_detr({"module." + k: v for k, v in oss.items()}, variant)
    assert report.form == "openselfsup" and not report.unmatched
    model = _our_model(variant)
    # everything but the toy backbone (ours) and the 3-way pre-training class head lines up, key for key
    check_against({k: v for k, v in ours.items() if not k.startswith(("backbone.", "class_embed."))},
                  {k: v for k, v in model.state_dict().items() if not k.startswith(("backbone.", "class_embed."))})
    assert {"patch2query.weight", "pred_head.feature_align.layers.1.weight", "pred_head.criterion.empty_weight",
            "enc_head.0.projector.mlp.0.weight", "dec_head.0.predictor.mlp.0.weight"} <= set(report.dropped)
    assert torch.equal(ours["backbone.stem.conv1.norm.running_mean"], oss["backbone.bn1.running_mean"])
    assert torch.equal(ours["backbone.res2.0.shortcut.weight"], oss["backbone.layer1.0.downsample.0.weight"])
    assert torch.equal(ours["bbox_embed.layers.2.weight"], oss["pred_head.bbox_embed.layers.2.weight"])
    if variant == "conditional":
        w = oss["transformer.encoder.layers.1.self_attn.in_proj_weight"]
        assert torch.equal(ours["encoder.layers.1.self_attn.k_proj.weight"], w[_D:2 * _D])
        assert torch.equal(ours["encoder.layers.0.norm.weight"], oss["transformer.encoder.layers.0.norm1.weight"])
        assert torch.equal(ours["encoder.layers.0.ffn.norm.bias"], oss["transformer.encoder.layers.0.norm2.bias"])
        assert torch.equal(ours["decoder.layers.1.proj.ca_out.weight"],
                           oss["transformer.decoder.layers.1.cross_attn.out_proj.weight"])
        assert torch.equal(ours["decoder.layers.0.ffn.norm.weight"], oss["transformer.decoder.layers.0.norm3.weight"])
    else:
        # Deformable DETR's decoder: norm2 follows self-attention, norm1 cross-attention; ours: norm1, norm2
        assert torch.equal(ours["decoder.layers.0.norm1.weight"], oss["transformer.decoder.layers.0.norm2.weight"])
        assert torch.equal(ours["decoder.layers.0.norm2.weight"], oss["transformer.decoder.layers.0.norm1.weight"])
        assert torch.equal(ours["query_embed.weight"][:, :_D], oss["query_embed.weight"])  # positional first
        assert torch.equal(ours["query_embed.weight"][:, _D:], oss["transformer.tgt_embed.weight"])
        assert torch.equal(ours["level_embed"], oss["transformer.level_embed"])
    # the form tools/convert_to_detr.py writes gives the same tensors
    exported, report2 = convert_siamese_detr(_exported(oss, variant == "deformable"), variant)
    assert report2.form == "convert_to_detr"
    # deformable: 5 extra copies of each of the 8 head tensors (class weight/bias, 3 box layers x weight/bias)
    assert len(report2.merged) == (40 if variant == "deformable" else 0)
    shared = set(ours) - {"class_embed.weight", "class_embed.bias"} if variant == "conditional" else set(ours)
    assert shared <= set(exported) and all(torch.equal(ours[k], exported[k]) for k in shared)
    with pytest.raises(KeyError, match="no rule converts"):
        convert_siamese_detr({**oss, "transformer.decoder.mystery.weight": torch.zeros(1)}, variant)


def test_siamese_detr_refusals():
    with pytest.raises(ValueError, match="single-scale"):
        convert_siamese_detr({"input_proj.weight": torch.zeros(4, 4, 1, 1)}, "deformable")
    with pytest.raises(KeyError, match="two-stage"):
        convert_siamese_detr({"transformer.enc_output.weight": torch.zeros(4, 4)}, "deformable")
    with pytest.raises(KeyError, match="unknown Siamese DETR variant"):
        convert_siamese_detr({}, "dino")
    bad = _exported(_oss_deformable(), deform=True)
    bad["bbox_embed.3.layers.0.weight"] = bad["bbox_embed.3.layers.0.weight"] + 1
    with pytest.raises(ValueError, match="must be equal"):
        convert_siamese_detr(bad, "deformable")


def test_siamese_detr_entry_transfers_into_a_finetuning_detector(zoo_cache, tmp_path):
    """The pre-trained checkpoint becomes detector.* keys, so fine-tuning transfer drops its class head and
    the transfer report carries the conversion (pre-training heads dropped)."""
    oss = _oss_conditional(seed=3)
    _entry_for(tmp_path, "t/siamese_cond", "siamese_detr", {"state_dict": {"module." + k: v for k, v in oss.items()}},
               options={"variant": "conditional"})
    model = _our_model("conditional")
    out = tmp_path / "out"
    # the fixture's toy torchvision-style backbone is not the model's TinyConvBackbone: "force" loads the rest
    DisCoCheckpointer(model, str(out), transfer_mismatch="force").load("zoo://t/siamese_cond")
    report = json.loads((out / "transfer_report.json").read_text())
    assert "detector.class_embed.weight" in report["dropped"] and "class_embed.weight" in report["fresh"]
    assert "patch2query.weight" in report["conversion"]["dropped"]
    w = oss["transformer.encoder.layers.0.self_attn.in_proj_weight"]
    assert torch.equal(model.encoder.layers[0].self_attn.v_proj.weight, w[2 * _D:])
    assert torch.equal(model.query_embed.weight, oss["query_embed.weight"])


# --------------------------------------------------------------------------- end to end

def test_trainer_and_eval_only_load_zoo_checkpoint_over_http(demo_root, server, zoo_cache, tmp_path):
    base, store = server
    from disco_detr.engine import Trainer

    cfg = tiny_config(str(tmp_path / "src"))
    torch.manual_seed(1)
    published = {k: v.clone() for k, v in Trainer.build_model(cfg).state_dict().items()}
    url = _serve(server, "/tiny_cond.pth", {"model": published})
    model_zoo.register_entry(ZooEntry("t/tiny_cond", url, "ours", fits=()))

    out = tmp_path / "train"
    trainer = Trainer(tiny_config(str(out), "train.init_checkpoint=zoo://t/tiny_cond", "train.max_iter=1"))
    trainer.resume_or_load(resume=False)
    got = trainer.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in published.items())
    report = json.loads((out / "zoo_report.json").read_text())
    assert report["fresh"] == [] and len(report["kept"]) == len(published)
    n = len(store.requests)
    assert n == 1

    from disco_detr.config import load_config
    from disco_detr.engine.launch import evaluate_checkpoint  # lazyconfig_train_net.py --eval-only

    results = evaluate_checkpoint(load_config(os.path.join(REPO, "tests", "configs", "tiny_cond.py"),
                                              [f"train.output_dir={tmp_path / 'eval'}",
                                               "train.init_checkpoint=zoo://t/tiny_cond"]))
    assert "bbox" in results and set(results["bbox"]) >= {"AP", "AP50"}
    assert json.loads((tmp_path / "eval" / "zoo_report.json").read_text())["fresh"] == []
    assert len(store.requests) == n  # cached: no second download


def test_publish_tool_makes_a_loadable_entry(zoo_cache, tmp_path, monkeypatch):
    from detectron2.config import LazyConfig

    from disco_detr.tooling import publish_model as tool
    run = tmp_path / "run"
    run.mkdir()
    state = {"detector.query_embed.weight": torch.randn(4, 8), "detector.class_embed.bias": torch.zeros(2)}
    torch.save({"model": state, "iteration": 9, "optimizer": {"state": {}}}, run / "model_final.pth")
    cfg = tiny_config(str(run))
    LazyConfig.save(cfg, str(run / "config.yaml"))
    (run / "metrics.json").write_text(json.dumps({"iteration": 4, "total_loss": 3.0}) + "\n"
                                      + json.dumps({"iteration": 9, "bbox/AP": 1.5, "bbox/AP50": 4.0}) + "\n")
    monkeypatch.setenv("DISCO_ZOO_OFFLINE", "1")  # a published entry needs no network
    assert tool.main([str(run), "--name", "ours/tiny_pretrained", "--fits", "demo/cond.py", "--trained-on", "test"]) == 0
    entry = model_zoo.get_entry("ours/tiny_pretrained")
    assert entry.layout == "ours" and entry.metrics == {"bbox/AP": 1.5, "bbox/AP50": 4.0}
    assert entry.sha256 and entry.size and entry.url.startswith("file://")
    assert entry.git_commit is None or re.match(r"^[0-9a-f]{40}(-dirty)?$", entry.git_commit)
    loaded = torch.load(resolve("ours/tiny_pretrained"), weights_only=True)["model"]
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    zcfg = model_zoo.get_config("ours/tiny_pretrained")
    assert zcfg.train.init_checkpoint == "zoo://ours/tiny_pretrained"
    assert zcfg.model.num_queries == cfg.model.num_queries
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tool.publish(str(tmp_path / "nope"), "ours/x")
