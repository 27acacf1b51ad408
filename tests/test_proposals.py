"""Offline proposals: generation (EdgeBoxes, selective search, fallbacks), the SQLite
store, and the tools/generate_proposals.py CLI."""
import logging
import multiprocessing
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from disco_detr.data.proposal_store import Proposals, ProposalStore
from disco_detr.tooling import generate_proposals
from disco_detr.tooling.demo_images import render_image
from disco_detr.tooling.proposal_methods import (
    compute_proposals,
    edge_boxes,
    read_image_rgb,
    selective_search,
)


def box_iou(boxes, box):
    boxes = np.asarray(boxes, dtype=np.float64)
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 2], box[2])
    y1 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


@pytest.fixture(scope="module")
def demo_images():
    rng = np.random.default_rng(0)
    return [render_image(rng, 160) for _ in range(4)]


def check_boxes(boxes, scores, height, width, max_boxes):
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
    assert 1 <= len(boxes) <= max_boxes
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0)
    assert np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all(np.diff(scores) <= 0), "scores must be sorted in descending order"


@pytest.mark.parametrize("max_boxes", [100, 512])
def test_edge_boxes_valid_and_find_objects(demo_images, max_boxes):
    found, total = 0, 0
    for image, objects in demo_images:
        boxes, scores = edge_boxes(image, max_boxes=max_boxes)
        check_boxes(boxes, scores, 160, 160, max_boxes)
        hits = [box_iou(boxes, obj["bbox_xyxy"]).max() >= 0.5 for obj in objects]
        assert any(hits), f"no proposal with IoU >= 0.5 on any of {[o['bbox_xyxy'] for o in objects]}"
        found += sum(hits)
        total += len(hits)
    assert found >= 0.75 * total


def test_selective_search_valid(demo_images):
    image, objects = demo_images[0]
    boxes, scores = selective_search(image, max_boxes=50)
    check_boxes(boxes, scores, 160, 160, 50)
    assert box_iou(boxes, objects[0]["bbox_xyxy"]).max() >= 0.5


@pytest.mark.parametrize("method", ["edgeboxes", "selective_search"])
def test_flat_image_falls_back_to_centre_box(method):
    image = np.full((80, 100, 3), 128, dtype=np.uint8)  # h = 80, w = 100
    props = compute_proposals(image, method=method)
    assert props.fallback == "centre_box"
    assert (props.height, props.width) == (80, 100)
    np.testing.assert_array_equal(props.boxes, np.array([[25, 20, 75, 60]], dtype=np.float32))
    np.testing.assert_array_equal(props.scores, np.array([1.0], dtype=np.float32))


def test_faint_object_found_by_enhanced_fallback():
    # 6 grey levels of contrast: below the edge noise floor, found once contrast is raised
    image = np.full((200, 200, 3), 120, dtype=np.uint8)
    image[60:140, 50:150] = 126
    assert len(edge_boxes(image)[0]) == 0
    props = compute_proposals(image)
    assert props.fallback == "enhanced"
    check_boxes(props.boxes, props.scores, 200, 200, 512)
    # boxes come back in original pixels (the retry ran on a 2x upscaled copy)
    assert box_iou(props.boxes, (50, 60, 150, 140)).max() >= 0.8


def test_large_image_boxes_in_original_pixels():
    image = np.full((700, 1000, 3), 40, dtype=np.uint8)  # processed at 800 px, boxes scaled back
    image[150:550, 300:800] = (200, 180, 60)
    props = compute_proposals(image, max_boxes=64)
    assert props.fallback == "" and (props.height, props.width) == (700, 1000)
    check_boxes(props.boxes, props.scores, 700, 1000, 64)
    assert box_iou(props.boxes, (300, 150, 800, 550)).max() >= 0.8


def random_props(rng, k, height=48, width=64, fallback=""):
    boxes = rng.uniform(0, 40, size=(k, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2] + 1
    scores = np.sort(rng.random(k).astype(np.float32))[::-1].copy()
    return Proposals(boxes=boxes, scores=scores, height=height, width=width, fallback=fallback)


@pytest.fixture
def store_path(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "sub" / "props.sqlite")
    store = ProposalStore(path, mode="a")
    store.update_meta({"method": "edgeboxes", "max_boxes": 512})
    items = {"b/img 1.jpg": random_props(rng, 7), "a.png": random_props(rng, 1, fallback="centre_box"),
             "c.jpg": random_props(rng, 512, height=375, width=500, fallback="enhanced")}
    store.put_many(items.items())
    store.close()
    return path, items


def assert_same(a: Proposals, b: Proposals):
    assert a.boxes.dtype == np.float32 and a.scores.dtype == np.float32
    assert a.boxes.shape == b.boxes.shape and np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.scores, b.scores)
    assert (a.height, a.width, a.fallback) == (b.height, b.width, b.fallback)


def test_store_round_trip(store_path):
    path, items = store_path
    store = ProposalStore(path)
    assert len(store) == 3
    assert list(store.keys()) == sorted(items)
    assert store.meta == {"method": "edgeboxes", "max_boxes": "512"}
    for key, props in items.items():
        assert key in store
        assert_same(store.get(key), props)
        assert_same(store[key], props)
    got = store.get("c.jpg")
    got.boxes[0, 0] = -1.0  # returned arrays are writable copies
    assert store.get("c.jpg").boxes[0, 0] == items["c.jpg"].boxes[0, 0]
    assert store.get("missing.jpg") is None
    assert "missing.jpg" not in store
    with pytest.raises(KeyError, match="missing.jpg") as info:
        store["missing.jpg"]
    assert path in str(info.value)
    with pytest.raises(PermissionError):
        store.put_many([("x.jpg", items["a.png"])])
    store.close()


def test_store_replace_and_delete(store_path):
    path, items = store_path
    store = ProposalStore(path, mode="a")
    new = random_props(np.random.default_rng(5), 3)
    store.put_many([("a.png", new)])
    store.delete(["b/img 1.jpg", "not-there"])
    assert len(store) == 2 and "b/img 1.jpg" not in store
    assert_same(store["a.png"], new)
    with pytest.raises(ValueError):
        store.put_many([("bad", Proposals(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), 1, 1))])
    assert len(store) == 2  # the failed batch wrote nothing
    store.close()


def test_store_missing_file(tmp_path):
    path = str(tmp_path / "nope.sqlite")
    with pytest.raises(FileNotFoundError, match="generate_proposals.py") as info:
        ProposalStore(path)
    assert path in str(info.value)
    assert not os.path.exists(path)


def _read_in_worker(args):
    store, key = args  # the store arrives pickled
    props = store[key]
    return os.getpid(), props.boxes, props.scores, props.fallback


def test_store_pickles_and_works_in_forked_processes(store_path):
    path, items = store_path
    store = ProposalStore(path)
    assert_same(store["c.jpg"], items["c.jpg"])  # connection now open in this process
    clone = pickle.loads(pickle.dumps(store))
    assert_same(clone["a.png"], items["a.png"])

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(_read_in_worker, [(store, k) for k in items])
    for (pid, boxes, scores, fallback), props in zip(results, items.values()):
        assert pid != os.getpid()
        assert np.array_equal(boxes, props.boxes) and np.array_equal(scores, props.scores)
        assert fallback == props.fallback

    # a child that inherits the open store (no pickling) reopens its own connection
    parent_conn = store._conn
    reader, writer = ctx.Pipe(duplex=False)

    def child():
        props = store["b/img 1.jpg"]
        writer.send((store._conn is not parent_conn, store._pid == os.getpid(), props.boxes))

    proc = ctx.Process(target=child)
    proc.start()
    reopened, own_pid, boxes = reader.recv()
    proc.join(10)
    assert proc.exitcode == 0 and reopened and own_pid
    assert np.array_equal(boxes, items["b/img 1.jpg"].boxes)
    assert_same(store["c.jpg"], items["c.jpg"])  # the parent's connection still works
    store.close()


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    pictures = [render_image(rng, 96)[0] for _ in range(5)]
    Image.fromarray(pictures[0]).save(root / "a.jpg")
    Image.fromarray(pictures[1][:, :80]).convert("L").save(root / "b_gray.png")  # 96 x 80 grey
    Image.fromarray(np.dstack([pictures[2], np.full((96, 96), 200, np.uint8)])).save(root / "d_rgba.PNG")
    Image.fromarray(pictures[3][:64]).save(root / "sub" / "e.jpg")  # 64 x 96
    Image.fromarray(pictures[4][..., 0].astype(np.uint16) * 257).save(root / "sub" / "f16.png")  # 16-bit
    full = (root / "a.jpg").read_bytes()
    (root / "c_corrupt.jpg").write_bytes(full[: len(full) // 3])  # truncated JPEG
    (root / "notes.txt").write_text("not an image")
    return root


def run_cli(root, out, *extra):
    return generate_proposals.main(["--images", str(root), "--out", str(out), "--workers", "1", *extra])


def test_read_image_rgb_formats(image_folder):
    for name, shape in [("a.jpg", (96, 96, 3)), ("b_gray.png", (96, 80, 3)), ("d_rgba.PNG", (96, 96, 3)),
                        ("sub/e.jpg", (64, 96, 3)), ("sub/f16.png", (96, 96, 3))]:
        image = read_image_rgb(str(image_folder / name))
        assert image.dtype == np.uint8 and image.shape == shape, name
    assert read_image_rgb(str(image_folder / "sub" / "f16.png")).max() > 128  # 16-bit scaled, not clipped
    with pytest.raises(OSError):
        read_image_rgb(str(image_folder / "c_corrupt.jpg"))


def test_cli_generates_resumes_and_skips_corrupt(image_folder, tmp_path, caplog, monkeypatch):
    out = tmp_path / "props.sqlite"
    caplog.set_level(logging.INFO)
    assert generate_proposals.main(["--images", str(image_folder), "--out", str(out), "--workers", "2"]) == 0
    expected = ["a.jpg", "b_gray.png", "d_rgba.PNG", "sub/e.jpg", "sub/f16.png"]
    with ProposalStore(str(out)) as store:
        assert list(store.keys()) == expected
        assert (store["b_gray.png"].height, store["b_gray.png"].width) == (96, 80)
        assert (store["sub/e.jpg"].height, store["sub/e.jpg"].width) == (64, 96)
        for key in expected:
            props = store[key]
            check_boxes(props.boxes, props.scores, props.height, props.width, 512)
        meta = store.meta
        first = store["a.jpg"]
    assert meta["method"] == "edgeboxes" and meta["max_boxes"] == "512" and meta["format_version"] == "1"
    assert os.path.realpath(meta["image_root"]) == os.path.realpath(image_folder)
    assert "c_corrupt.jpg" in caplog.text and "failed=1" in caplog.text and "done=5" in caplog.text

    calls = []
    real = generate_proposals.proposals_for_file

    def counting(path, **kwargs):
        calls.append(os.path.relpath(path, image_folder).replace(os.sep, "/"))
        return real(path, **kwargs)

    monkeypatch.setattr(generate_proposals, "proposals_for_file", counting)
    caplog.clear()
    assert run_cli(image_folder, out) == 0  # resume: only the corrupt file is tried again
    assert calls == ["c_corrupt.jpg"]
    assert "done=0 skipped_existing=5 failed=1" in caplog.text
    with ProposalStore(str(out)) as store:
        assert len(store) == 5
        assert_same(store["a.jpg"], first)

    with ProposalStore(str(out), mode="a") as store:
        store.delete(["sub/e.jpg"])
    calls.clear()
    assert run_cli(image_folder, out) == 0
    assert sorted(calls) == ["c_corrupt.jpg", "sub/e.jpg"]
    with ProposalStore(str(out)) as store:
        assert list(store.keys()) == expected


def test_pretraining_tells_unreadable_images_from_missing_ones(image_folder, tmp_path, caplog):
    """The store names the files its run could not read; the dataset's warning says that rerunning fails them
    again, and gives the command that adds them only for the images not computed yet."""
    from disco_detr.data.pretrain_datasets import load_unlabelled_images

    out = tmp_path / "props.sqlite"
    assert run_cli(image_folder, out) == 0
    (image_folder / "z_new.jpg").write_bytes((image_folder / "a.jpg").read_bytes())  # added after the run
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="disco_detr.data.pretrain_datasets"):
        assert len(load_unlabelled_images("x", str(image_folder), str(out))) == 5
    unreadable, missing = [r.getMessage() for r in caplog.records if r.name == "disco_detr.data.pretrain_datasets"]
    assert "1 of 7 images are left out" in unreadable and "c_corrupt.jpg" in unreadable
    assert "fails them again" in unreadable and "generate_proposals.py --images" not in unreadable
    assert "1 of 7 images have no proposals" in missing and "generate_proposals.py --images" in missing

    assert run_cli(image_folder, out) == 0  # adds z_new.jpg; the corrupt file fails again and stays named
    with ProposalStore(str(out)) as store:
        assert "z_new.jpg" in store and list(store.unreadable()) == ["c_corrupt.jpg"]
    (image_folder / "c_corrupt.jpg").write_bytes((image_folder / "a.jpg").read_bytes())  # repaired
    assert run_cli(image_folder, out) == 0
    with ProposalStore(str(out)) as store:
        assert len(store) == 7 and store.unreadable() == {}


def test_cli_limit_and_selective_search(image_folder, tmp_path):
    out = tmp_path / "ss.sqlite"
    assert run_cli(image_folder, out, "--method", "selective_search", "--max-boxes", "20", "--limit", "2") == 0
    with ProposalStore(str(out)) as store:
        assert list(store.keys()) == ["a.jpg", "b_gray.png"]
        assert store.meta["method"] == "selective_search"
        assert all(len(store[k].boxes) <= 20 for k in store.keys())


def test_cli_refuses_mismatched_store(image_folder, tmp_path, capsys):
    out = tmp_path / "props.sqlite"
    assert run_cli(image_folder, out, "--limit", "1") == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(image_folder, out, "--method", "selective_search")
    assert info.value.code != 0
    assert "method" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(image_folder, out, "--max-boxes", "100")
    assert "max_boxes" in capsys.readouterr().err
    other = tmp_path / "other_images"
    other.mkdir()
    with pytest.raises(SystemExit):
        run_cli(other, out)
    assert "image_root" in capsys.readouterr().err
    with ProposalStore(str(out)) as store:
        assert len(store) == 1 and store.meta["method"] == "edgeboxes"


def test_two_shards_merged_equal_one_unsharded_run(image_folder, tmp_path, capsys):
    from disco_detr.tooling import merge_proposals as merge_tool
    from disco_detr.tooling.proposal_methods import shard_of

    (image_folder / "more").mkdir()
    for i in range(6):  # 11 images in all: both shards of 2 get some
        (image_folder / "more" / f"m{i}.jpg").write_bytes((image_folder / "a.jpg").read_bytes())
    assert run_cli(image_folder, tmp_path / "all.sqlite") == 0
    shards = [tmp_path / f"shard{i}.sqlite" for i in range(2)]
    for i, path in enumerate(shards):
        assert run_cli(image_folder, path, "--shard", f"{i}/2") == 0
    with ProposalStore(str(tmp_path / "all.sqlite")) as full:
        keys = list(full.keys())
        for i, path in enumerate(shards):  # each shard holds exactly its files, by file name
            with ProposalStore(str(path)) as store:
                assert list(store.keys()) == [k for k in keys if shard_of(k, 2) == i] and len(store) > 0
                assert store.meta["shard"] == f"{i}/2"
    # merge in the "wrong" order: the result does not depend on it
    assert merge_tool.main(["--out", str(tmp_path / "merged.sqlite"), str(shards[1]), str(shards[0])]) == 0
    assert "merged 11 entries from 2 stores" in capsys.readouterr().out
    with ProposalStore(str(tmp_path / "all.sqlite")) as full, ProposalStore(str(tmp_path / "merged.sqlite")) as merged:
        assert list(merged.keys()) == keys
        for key in keys:
            assert_same(merged[key], full[key])
        assert {k: merged.meta[k] for k in ("method", "max_boxes", "image_root")} == \
            {k: full.meta[k] for k in ("method", "max_boxes", "image_root")}
        assert "shard" not in merged.meta
        assert list(merged.unreadable()) == list(full.unreadable()) == ["c_corrupt.jpg"]  # from its shard
    # a missing shard, a shard twice, a store made with other settings: refused, naming the stores
    with pytest.raises(SystemExit):
        merge_tool.main(["--out", str(tmp_path / "partial.sqlite"), str(shards[0])])
    assert "not all shards of one run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        merge_tool.main(["--out", str(tmp_path / "merged.sqlite"), str(shards[0]), str(shards[1])])
    assert "already has" in capsys.readouterr().err
    assert run_cli(image_folder, tmp_path / "other.sqlite", "--max-boxes", "7") == 0
    with pytest.raises(SystemExit):
        merge_tool.main(["--out", str(tmp_path / "x.sqlite"), str(tmp_path / "all.sqlite"), str(tmp_path / "other.sqlite")])
    assert "other.sqlite was made with other settings" in capsys.readouterr().err
    # a shard store cannot be continued as another shard, or unsharded
    with pytest.raises(SystemExit):
        run_cli(image_folder, shards[0], "--shard", "1/2")
    with pytest.raises(SystemExit):
        run_cli(image_folder, shards[0])
    with pytest.raises(SystemExit):
        run_cli(image_folder, tmp_path / "bad.sqlite", "--shard", "2/2")


def test_an_images_warnings_are_logged_with_its_path(image_folder, tmp_path, caplog, monkeypatch):
    """A warning raised while one image is processed comes back from the worker and is logged naming the image."""
    import warnings

    real = generate_proposals.proposals_for_file

    def warning(path, **kwargs):
        if path.endswith("a.jpg"):
            warnings.warn("odd EXIF", UserWarning, stacklevel=1)
        return real(path, **kwargs)

    monkeypatch.setattr(generate_proposals, "proposals_for_file", warning)
    caplog.set_level(logging.WARNING)
    assert run_cli(image_folder, tmp_path / "p.sqlite", "--limit", "2") == 0
    lines = [r.getMessage() for r in caplog.records if "odd EXIF" in r.getMessage()]
    assert lines == [f"{image_folder / 'a.jpg'}: UserWarning: odd EXIF"]
