"""Geometry of the paired-view pre-training mapper, checked by property over many seeds."""
import numpy as np
import pytest
import torch
from PIL import Image

from disco_detr.data.photometric import PARAM_KEYS
from disco_detr.data.pretrain_mapper import (
    PairedViewMapper,
    collate_paired_views,
    crop_and_resize,
    intersection_height,
    two_view_boxes,
)
from disco_detr.data.proposal_store import Proposals, ProposalStore
from disco_detr.modeling.layers import box_iou

NO_COLOUR = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def _iou(a, b):
    return box_iou(torch.tensor(np.asarray(a)[None], dtype=torch.float64),
                   torch.tensor(np.asarray(b)[None], dtype=torch.float64)).item()


def _store(tmp_path, entries):
    path = str(tmp_path / "props.sqlite")
    store = ProposalStore(path, mode="a")
    store.put_many(entries)
    store.close()
    return path


@pytest.fixture
def image_record(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    boxes = np.array([[10, 10, 300, 230], [60, 40, 200, 180], [100, 80, 160, 140], [150, 20, 310, 120],
                      [0, 0, 20, 20]], np.float32)
    props = Proposals(boxes=boxes, scores=np.linspace(1, 0.5, len(boxes)).astype(np.float32), height=240,
                      width=320, fallback="")
    path = _store(tmp_path, [("img.png", props)])
    return {"file_name": str(tmp_path / "img.png"), "image_id": 0, "proposals_file": path,
            "proposal_key": "img.png"}


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_quadratic_root_gives_the_iou_exactly(iou):
    rng = np.random.default_rng(1)
    for _ in range(50):
        x0, y0 = rng.uniform(0, 50, 2)
        w, h = rng.uniform(50, 500, 2)
        outer = np.array([x0, y0, x0 + w, y0 + h])
        a, b, inter = two_view_boxes(outer, iou)
        assert _iou(a, b) == pytest.approx(iou, abs=1e-9)
        for box in (a, b, inter):  # every box keeps the outer aspect ratio
            assert (box[2] - box[0]) / (box[3] - box[1]) == pytest.approx(w / h, rel=1e-9)
        assert intersection_height(w, h, iou) == pytest.approx(inter[3] - inter[1])
        assert a[:2].tolist() == pytest.approx(outer[:2].tolist()) and b[2:].tolist() == pytest.approx(outer[2:].tolist())


def test_corner_shift_raises_iou_and_keeps_the_intersection():
    outer = np.array([0.0, 0.0, 400.0, 300.0])
    _, _, inter = two_view_boxes(outer, 0.5)
    a, b, inter2 = two_view_boxes(outer, 0.5, shift_a=0.4, shift_b=0.7)
    assert np.allclose(inter, inter2)
    assert _iou(a, b) > 0.5
    assert (a[2] - a[0]) / (a[3] - a[1]) == pytest.approx(4 / 3) and (b[2] - b[0]) / (b[3] - b[1]) == pytest.approx(4 / 3)
    # both views still contain the intersection
    assert a[0] <= inter[0] and a[1] <= inter[1] and b[2] >= inter[2] and b[3] >= inter[3]


def _to_source(sample, v):
    region = sample["view_regions"][v].double()
    h, w = sample["views"].shape[-2:]
    scale = torch.stack([(region[2] - region[0]) / w, (region[3] - region[1]) / h]).repeat(2)
    return sample["boxes"][v].double() * scale + region[:2].repeat(2)


@pytest.mark.parametrize("seed", range(25))
def test_views_boxes_and_crops_geometry(image_record, seed):
    mapper = PairedViewMapper(min_sizes=(96, 112, 128), max_size=200, crop_size=32, **NO_COLOUR)
    np.random.seed(seed)
    torch.manual_seed(seed)
    s = mapper(image_record)
    n = mapper.num_boxes
    assert s["views"].dtype == torch.uint8 and s["views"].shape[:2] == (2, 3)
    assert s["boxes"].shape == (2, n, 4) and s["crops"].shape == (2, n, 3, 32, 32)
    src0, src1 = _to_source(s, 0), _to_source(s, 1)
    assert torch.allclose(src0, src1, atol=1e-2), "the two views' boxes are not the same physical boxes"
    r0, r1 = s["view_regions"].double()
    inter = torch.cat([torch.max(r0[:2], r1[:2]), torch.min(r0[2:], r1[2:])])
    assert torch.allclose(src0[0], inter, atol=1e-2), "box 0 is not the intersection of the two views"
    assert _iou(r0.numpy(), r1.numpy()) >= 0.5 - 1e-6
    assert (src0[:, :2] >= inter[:2] - 1e-2).all() and (src0[:, 2:] <= inter[2:] + 1e-2).all()
    assert ((src0[:, 2:] - src0[:, :2]) > 0).all()
    # crops are the boxes cropped from the (un-augmented) views
    for v in range(2):
        ref = crop_and_resize(s["views"][v].float(), s["boxes"][v], (32, 32))
        assert (ref - s["crops"][v].float()).abs().max() <= 3


def test_iou_is_exactly_half_without_corner_shift(image_record):
    mapper = PairedViewMapper(min_sizes=(128,), max_size=200, corner_shift_prob=0.0, crop_size=16, **NO_COLOUR)
    for seed in range(10):
        np.random.seed(seed)
        s = mapper(image_record)
        r0, r1 = s["view_regions"].double().numpy()
        assert _iou(r0, r1) == pytest.approx(0.5, abs=1e-6)


def test_crop_and_resize_reference():
    image = torch.arange(3 * 200 * 300, dtype=torch.float32).view(3, 200, 300) % 251
    crop = crop_and_resize(image, torch.tensor([[20.0, 30.0, 148.0, 158.0]]), (128, 128))[0]
    assert torch.equal(crop, image[:, 30:158, 20:148])  # same size, integer box: the pixels themselves
    doubled = crop_and_resize(image, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (8, 8))[0]
    # 2x upsampling with aligned pixel centres: output pixel j samples x = (j + 0.5) / 2 - 0.5,
    # bilinearly between its two neighbouring pixels (x < 0 clamps to pixel 0; the image
    # continues right of the box, so x = 3.25 mixes pixels 3 and 4)
    x = ((torch.arange(8) + 0.5) / 2 - 0.5).clamp(min=0)
    x0 = x.floor().long()
    x1 = x0 + 1
    fx = x - x0
    row = image[0, 0, :5]
    expected_row = row[x0] * (1 - fx) + row[x1] * fx
    assert torch.allclose(doubled[0, 0], expected_row, atol=1e-4)


def test_flip_is_shared_by_both_views(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    Image.fromarray(np.stack([ramp] * 3, -1)).save(tmp_path / "ramp.png")
    props = Proposals(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32), height=240, width=320,
                      fallback="")
    rec = {"file_name": str(tmp_path / "ramp.png"), "image_id": 0, "proposals_file": _store(tmp_path, [("ramp.png", props)]),
           "proposal_key": "ramp.png"}
    for flip_prob, sign in ((1.0, -1), (0.0, 1)):
        mapper = PairedViewMapper(min_sizes=(120,), max_size=200, flip_prob=flip_prob, crop_size=16, **NO_COLOUR)
        np.random.seed(3)
        s = mapper(rec)
        assert s["flipped"] is (flip_prob == 1.0)
        for v in range(2):
            cols = s["views"][v, 0].float().mean(0)
            assert sign * (cols[-1] - cols[0]) > 10


def test_no_valid_proposal_still_gives_a_sample(tmp_path):
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(tmp_path / "flat.png")
    props = Proposals(boxes=np.array([[0, 0, 2, 2]], np.float32), scores=np.ones(1, np.float32), height=100,
                      width=100, fallback="centre_box")
    rec = {"file_name": str(tmp_path / "flat.png"), "image_id": 0,
           "proposals_file": _store(tmp_path, [("flat.png", props)]), "proposal_key": "flat.png"}
    s = PairedViewMapper(min_sizes=(64,), max_size=100, crop_size=16, **NO_COLOUR)(rec)
    assert s["num_proposals"] == 0
    src = _to_source(s, 0)
    assert ((src[:, 2:] - src[:, :2]) > 0).all()
    assert (src[1:, :2] >= src[0, :2] - 1e-2).all() and (src[1:, 2:] <= src[0, 2:] + 1e-2).all()


def test_bad_inputs(image_record, tmp_path):
    mapper = PairedViewMapper(min_sizes=(64,), max_size=100, crop_size=16)
    with pytest.raises(KeyError, match="generate_proposals.py"):
        mapper({**image_record, "proposal_key": "other.png"})
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="does not match"):
        mapper({**image_record, "file_name": str(tmp_path / "small.png")})  # proposals were for 240x320
    with pytest.raises(FileNotFoundError, match="generate_proposals"):
        mapper({**image_record, "proposals_file": str(tmp_path / "nope.sqlite")})


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16", "RGBA", "tiny"])
def test_unusual_images(tmp_path, mode):
    size = (15, 20) if mode == "tiny" else (60, 80)
    arr = np.random.default_rng(0).integers(0, 255, (*size, 4), dtype=np.uint8)
    if mode in ("L", "tiny"):
        img = Image.fromarray(arr[..., 0])
    elif mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 200)
    elif mode == "RGBA":
        img = Image.fromarray(arr)
    else:
        img = Image.fromarray(arr).convert("CMYK")
    name = "img.jpg" if mode == "CMYK" else "img.png"
    img.save(tmp_path / name)
    props = Proposals(boxes=np.array([[2, 2, 10, 12]], np.float32), scores=np.ones(1, np.float32), height=size[0],
                      width=size[1], fallback="")
    rec = {"file_name": str(tmp_path / name), "image_id": 0, "proposals_file": _store(tmp_path, [(name, props)]),
           "proposal_key": name}
    s = PairedViewMapper(min_sizes=(64,), max_size=120, crop_size=16)(rec)
    assert s["views"].shape[1] == 3 and s["crops"].shape == (2, 10, 3, 16, 16)


def test_seeded_runs_are_reproducible_and_collate_pads(image_record):
    mapper = PairedViewMapper(min_sizes=(96, 128), max_size=200, crop_size=16)
    samples = []
    for seed in (5, 5, 6):
        np.random.seed(seed)
        torch.manual_seed(seed)
        samples.append(mapper(image_record))
    assert torch.equal(samples[0]["views"], samples[1]["views"]) and torch.equal(samples[0]["crops"], samples[1]["crops"])
    assert not torch.equal(samples[0]["boxes"], samples[2]["boxes"])
    batch = collate_paired_views([samples[0], samples[2]])
    hmax = max(s["views"].shape[-2] for s in samples)
    wmax = max(s["views"].shape[-1] for s in samples)
    assert batch.images.shape == (4, 3, hmax, wmax) and batch.num_samples == 2
    assert batch.boxes.shape == (4, 10, 4) and batch.crops.shape == (4, 10, 3, 16, 16)
    for i, s in enumerate((samples[0], samples[2])):
        h, w = s["views"].shape[-2:]
        for v in range(2):  # view-major: view v of sample i is image v * B + i
            image = batch.images[v * 2 + i]
            assert batch.image_sizes[v * 2 + i] == (h, w)
            assert torch.equal(image[:, :h, :w], s["views"][v]) and image[:, h:].sum() == 0 and image[:, :, w:].sum() == 0
            assert torch.equal(batch.boxes[v * 2 + i], s["boxes"][v]) and torch.equal(batch.crops[v * 2 + i], s["crops"][v])
            for k in PARAM_KEYS:
                assert torch.equal(batch.view_photometric[k][v * 2 + i], s["photometric"][k][v])
                assert torch.equal(batch.crop_photometric[k][(v * 2 + i) * 10: (v * 2 + i + 1) * 10],
                                   s["photometric"][k][2 + 10 * v: 12 + 10 * v])


def _reference_view_ious(num, shift_prob, max_shift, seed):
    """The corner-shift rule in closed form, float64, independent of the mapper: with the
    intersection height a fraction r of the outer height (the positive root of
    (iou + 2) r^2 - 2 iou r - iou = 0 for iou = 0.5, whatever the aspect ratio), a corner moved a
    fraction s of the way to the intersection leaves its view (r + (1 - s)(1 - r)/2) of the outer
    size, and the intersection is unchanged, so IoU = r^2 / (u_a^2 + u_b^2 - r^2)."""
    rng = np.random.default_rng(seed)
    r = (1 + np.sqrt(6.0)) / 5
    shifts = np.where(rng.random((num, 2)) < shift_prob, rng.random((num, 2)) * max_shift, 0.0)
    u = r + (1 - shifts) * (1 - r) / 2
    return r * r / (u[:, 0] ** 2 + u[:, 1] ** 2 - r * r)


def _mapper_view_ious(mapper, num, seed):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(num):
        width, height = (500, 375) if k % 2 else (333, 480)
        regions, inter, _ = mapper.sample_view_regions(width, height, rng)
        a, b = regions
        inter_area = np.prod(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]))
        out.append(inter_area / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter_area))
        assert np.allclose(np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])]), inter)
    return np.array(out)


@pytest.mark.parametrize("rule", ["released", "half_way_p05"])
def test_view_iou_distribution_follows_the_corner_shift_rule(rule):
    from scipy import stats

    prob, max_shift = (1.0, 1.0) if rule == "released" else (0.5, 0.5)
    mapper = PairedViewMapper() if rule == "released" else PairedViewMapper(corner_shift_prob=0.5, max_corner_shift=0.5)
    got = _mapper_view_ious(mapper, 4000, seed=0)
    ref = _reference_view_ious(200_000, prob, max_shift, seed=1)
    at_half = np.isclose(got, 0.5, atol=1e-9).mean()
    assert abs(got.mean() - ref.mean()) < 0.005
    assert abs(at_half - np.isclose(ref, 0.5, atol=1e-9).mean()) < 0.025
    assert stats.ks_2samp(got.round(9), ref.round(9)).pvalue > 1e-3  # rounded: the atom at 0.5 carries float noise
    assert got.min() >= 0.5 - 1e-9 and got.max() < 1
    if rule == "released":  # the default: the released code's rule
        assert abs(got.mean() - 0.69) < 0.01 and at_half == 0 and got.min() > 0.5
    else:
        assert abs(got.mean() - 0.54) < 0.01 and 0.2 < at_half < 0.3


def test_mapper_views_use_the_rule(image_record):
    """The full mapper's view regions: default rule never gives exactly 0.5."""
    mapper = PairedViewMapper(min_sizes=(96, 128), max_size=200, crop_size=16, num_boxes=3)
    ious = []
    for seed in range(12):
        np.random.seed(seed)
        r0, r1 = mapper(image_record)["view_regions"].double().numpy()
        ious.append(_iou(r0, r1))
    assert min(ious) > 0.5 + 1e-6 and np.mean(ious) > 0.55
