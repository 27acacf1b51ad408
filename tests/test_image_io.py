"""The one image reader (data/image_io.py): every path that reads images sees the same pixels, and
those pixels match an expectation computed here, for every kind of file."""
import numpy as np
import pytest
from PIL import Image

import disco_detr.data.detreg_mapper as detreg_mapper
import disco_detr.data.image_io as image_io
import disco_detr.data.pretrain_mapper as pretrain_mapper
import disco_detr.tooling.proposal_methods as proposal_methods
from disco_detr import deploy
from disco_detr.data.detr_mapper import DetrDatasetMapper
from disco_detr.data.detreg_mapper import DETRegMapper
from disco_detr.data.image_io import IMAGE_EXTENSIONS, read_rgb_image
from disco_detr.data.pretrain_datasets import list_images
from disco_detr.data.pretrain_mapper import PairedViewMapper
from disco_detr.data.proposal_store import Proposals, ProposalStore
from disco_detr.data.voc import find_voc_image, image_size
from disco_detr_runtime import image_io as runtime_image_io

H, W = 48, 64
ROTATE_90 = 6  # EXIF orientation: the stored image must be turned 90 degrees clockwise to be upright


def _smooth_rgb(seed=0):
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((W, H), Image.BICUBIC))


def _pil_rgb(path):
    """Pillow's own decode of a file's stored pixels (no EXIF handling)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _make_files(tmp_path):
    """{name: (path, expected (h, w, 3) uint8, tolerance)}: one file per kind, its expectation computed here."""
    rgb = _smooth_rgb()
    grey = rgb[..., 0]
    files = {}

    def add(name, expected, atol=0):
        files[name] = (str(tmp_path / name), expected, atol)

    Image.fromarray(rgb).save(tmp_path / "plain.jpg", quality=90)
    add("plain.jpg", _pil_rgb(tmp_path / "plain.jpg"))

    exif = Image.Exif()
    exif[0x0112] = ROTATE_90
    Image.fromarray(rgb).save(tmp_path / "exif_rotated.jpg", quality=90, exif=exif.tobytes())
    add("exif_rotated.jpg", np.rot90(_pil_rgb(tmp_path / "exif_rotated.jpg"), k=-1))     # clockwise: (W, H)

    Image.fromarray(grey).save(tmp_path / "grey.png")
    add("grey.png", np.repeat(grey[..., None], 3, axis=2))

    palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [0, 0, 0]], np.uint8)
    index = (np.arange(H)[:, None] // 12 + np.arange(W)[None] // 16) % 4
    pal = Image.fromarray(index.astype(np.uint8), mode="P")
    pal.putpalette(palette.ravel().tolist())
    pal.save(tmp_path / "palette_transparent.png", transparency=2)                    # index 2 is see-through
    add("palette_transparent.png", np.where((index == 2)[..., None], np.uint8(255), palette[index]))

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
        cmyk = np.asarray(im).astype(np.float64)
    white_part = (255 - cmyk[..., 3:]) / 255                                           # (255 - c)(255 - k) / 255
    add("cmyk.jpg", np.rint((255 - cmyk[..., :3]) * white_part).astype(np.uint8), atol=1)

    alpha = np.tile(np.linspace(0, 255, W).round().astype(np.uint8), (H, 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    a = alpha[..., None] / 255.0                                                       # over a white background
    add("rgba.png", np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8), atol=1)

    deep = (np.arange(H * W, dtype=np.int64).reshape(H, W) * 21).astype(np.uint16)     # 0 .. 64491, all residues
    Image.fromarray(deep).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode.startswith("I")
    add("grey16.png", np.repeat(np.rint(deep / 257.0).astype(np.uint8)[..., None], 3, axis=2))  # 65535 / 255 = 257
    return files


@pytest.fixture
def files(tmp_path):
    return _make_files(tmp_path)


def _upright_store(tmp_path, files):
    """A proposals store with one box per file, sized to the upright image."""
    path = str(tmp_path / "props.sqlite")
    with ProposalStore(path, mode="a") as store:
        for name, (_, expected, _) in files.items():
            h, w = expected.shape[:2]
            store.put_many([(name, Proposals(boxes=np.array([[2, 2, w - 3, h - 3]], np.float32),
                                             scores=np.ones(1, np.float32), height=h, width=w, fallback=""))])
    return path


def _spy(monkeypatch, module, name):
    """Record every image ``module.<name>`` returns while the real path runs."""
    seen = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(module, name, spy)
    return seen


def _every_path(path, expected, store, key, monkeypatch):
    """{path name: (h, w, 3) uint8} as each caller sees the file."""
    h, w = expected.shape[:2]
    seen = {}
    finetune = DetrDatasetMapper(is_train=False, num_classes=1, min_sizes=(min(h, w),), max_size=10 * max(h, w))
    image = finetune({"file_name": path, "height": h, "width": w, "image_id": 0})["image"]   # resize to its own size
    seen["finetune"] = image.permute(1, 2, 0).numpy()
    record = {"file_name": path, "image_id": 0, "proposals_file": store, "proposal_key": key}
    for label, module, mapper in (
        ("pretrain", pretrain_mapper, PairedViewMapper(min_sizes=(64,), max_size=120, crop_size=16)),
        ("detreg", detreg_mapper, DETRegMapper(scales=(64,), max_size=120, crop_resize_sizes=(64,),
                                               crop_size_range=(40, 60), crop_size=16, min_boxes=1)),
    ):
        with monkeypatch.context() as m:
            got = _spy(m, module, "read_rgb_image")
            mapper(record)
        seen[label] = got[0]
    seen["proposals"] = _proposal_tool_input(path, monkeypatch)
    seen["deploy"] = deploy.read_image(path)
    seen["runtime"] = runtime_image_io.read_rgb_image(path)   # tools/predict.py --model: the torch-free twin
    return seen


def _proposal_tool_input(path, monkeypatch):
    """The image the proposal tool computes its proposals on."""
    given = []
    with monkeypatch.context() as m:
        m.setattr(proposal_methods, "compute_proposals", lambda image, **kw: given.append(image))
        proposal_methods.proposals_for_file(path, method="edgeboxes")
    return given[0]


def test_every_path_sees_the_same_expected_pixels(tmp_path, files, monkeypatch):
    store = _upright_store(tmp_path, files)
    for name, (path, expected, atol) in files.items():
        seen = _every_path(path, expected, store, name, monkeypatch)
        assert set(seen) == {"finetune", "pretrain", "detreg", "proposals", "deploy", "runtime"}
        reference = read_rgb_image(path)
        assert reference.dtype == np.uint8 and reference.shape == expected.shape, name
        assert reference.flags.c_contiguous and reference.flags.writeable, name
        for label, image in seen.items():
            assert np.array_equal(np.asarray(image), reference), f"{name}: {label} sees other pixels"
        worst = np.abs(reference.astype(np.int64) - expected).max()
        assert worst <= atol, f"{name}: differs from the expectation by {worst}"
        assert image_size(path) == (expected.shape[1], expected.shape[0]), name   # the header-only size agrees


def test_sixteen_bit_is_scaled_not_saturated(files):
    path, expected, _ = files["grey16.png"]
    image = read_rgb_image(path)
    assert image.max() == 251 and len(np.unique(image)) == 252                        # 64491 / 257 = 250.9
    assert np.array_equal(image, expected)


@pytest.mark.parametrize("content", [b"not an image at all", b"\xff\xd8\xff\xe0 a JPEG header only", "truncated"])
def test_unreadable_files_name_the_file_on_every_path(tmp_path, files, content, monkeypatch):
    bad = tmp_path / "bad_file.jpg"
    if content == "truncated":
        data = open(files["plain.jpg"][0], "rb").read()
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    store = _upright_store(tmp_path, {"bad_file.jpg": ("", np.zeros((H, W, 3), np.uint8), 0)})
    record = {"file_name": str(bad), "image_id": 0, "proposals_file": store, "proposal_key": "bad_file.jpg"}
    calls = [
        lambda: read_rgb_image(str(bad)),
        lambda: DetrDatasetMapper(is_train=False, num_classes=1)({"file_name": str(bad), "image_id": 0}),
        lambda: PairedViewMapper()(record),
        lambda: DETRegMapper()(record),
        lambda: proposal_methods.proposals_for_file(str(bad)),
        lambda: deploy.read_image(str(bad)),
        lambda: runtime_image_io.read_rgb_image(str(bad)),
    ]
    for call in calls:
        with pytest.raises(OSError, match="bad_file.jpg"):
            call()
    for read in (read_rgb_image, runtime_image_io.read_rgb_image):
        with pytest.raises(OSError, match="missing.jpg"):
            read(str(tmp_path / "missing.jpg"))


def _plain_jpegs(tmp_path):
    """JPEGs simplejpeg may decode (Pillow mode RGB or L, no EXIF rotation), in the encodings seen in data sets."""
    rgb = Image.fromarray(_smooth_rgb(1))
    exif = Image.Exif()
    exif[0x0112] = 1
    kinds = {"rgb420.jpg": dict(quality=90), "rgb444.jpg": dict(quality=95, subsampling=0),
             "progressive.jpg": dict(quality=90, progressive=True), "exif_upright.jpg": dict(exif=exif.tobytes()),
             "jpeg_named.png": dict(format="JPEG", quality=90)}
    for name, kw in kinds.items():
        rgb.save(tmp_path / name, **kw)
    rgb.convert("L").save(tmp_path / "grey.jpg", quality=90)
    return [str(tmp_path / name) for name in [*kinds, "grey.jpg"]]


def test_simplejpeg_gives_pillows_pixels(tmp_path, files, monkeypatch):
    if image_io.simplejpeg is None:
        pytest.skip("simplejpeg is not installed: every file is decoded by Pillow")
    calls = []
    decode = image_io.simplejpeg.decode_jpeg
    monkeypatch.setattr(image_io.simplejpeg, "decode_jpeg", lambda data, **kw: calls.append(1) or decode(data, **kw))
    for path in _plain_jpegs(tmp_path):
        before = len(calls)
        assert np.array_equal(read_rgb_image(path), _pil_rgb(path)), path
        assert len(calls) == before + 1, f"{path}: simplejpeg was not used"
    for name in ("exif_rotated.jpg", "cmyk.jpg", "grey.png", "rgba.png", "grey16.png", "palette_transparent.png"):
        before = len(calls)
        read_rgb_image(files[name][0])
        assert len(calls) == before, f"{name} must go through Pillow"


def test_one_extension_list(tmp_path):
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    for ext in IMAGE_EXTENSIONS:
        (tmp_path / f"a{ext}").write_bytes(b"")
        (tmp_path / f"b{ext.upper()}").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert len(list_images(str(tmp_path))) == 2 * len(IMAGE_EXTENSIONS)
    (tmp_path / "only.TIFF").write_bytes(b"")
    assert find_voc_image(str(tmp_path), "only") == str(tmp_path / "only.TIFF")

