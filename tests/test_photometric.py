"""Device-side photometric augmentation: same output as torchvision's per-image ops given the
same parameters, padding that never leaks, and the same parameter distributions as the
all-on-CPU path (torchvision transforms inside the mapper)."""
import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2 as TV
from torchvision.transforms.v2 import functional as TF

from disco_detr.data.photometric import (
    PARAM_KEYS,
    PairedViewPhotometric,
    apply_photometric,
    blur_kernel_size,
    draw_photometric_params,
)
from disco_detr.data.pretrain_mapper import PairedViewMapper, collate_paired_views, crop_and_resize

_TV_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _reference(img: torch.Tensor, p: dict, i: int) -> torch.Tensor:
    """torchvision's per-image functional ops (what the CPU path runs) with image i's parameters."""
    if p["jitter"][i]:
        for op in p["order"][i].tolist():
            img = _TV_OPS[op](img, float(p["factors"][i, op]))
    if p["grayscale"][i]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if p["blur"][i]:
        sigma = float(p["sigma"][i])
        k = blur_kernel_size(sigma)
        img = TF.gaussian_blur(img, [k, k], [sigma, sigma])
    return img


def _photo_like(m, h, w, seed):
    """Smooth colour images (like photos, unlike noise, they exercise hue and blur realistically)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(m, 3, 6, 6, generator=g) * 255
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return (img + torch.rand(m, 3, h, w, generator=g) * 20).clamp(0, 255).to(torch.uint8)


def _assert_close_to_reference(out, ref):
    # Tolerance: the ops truncate to integers after each step (and round after the blur) as
    # torchvision does, with the same float32 operations, so on CPU the colour operations agree
    # exactly (checked below); the blur sums in another order (two 1-d passes instead of one 2-d
    # kernel), so a blurred pixel whose exact value sits on a .5 boundary can round the other way:
    # one level. Another device (CUDA) may round any float32 step differently, and a one-level
    # difference can grow by the later factors (<= 1.4 each) to 2. Such pixels must be rare.
    diff = (out.int() - ref.int()).abs()
    assert diff.max() <= 2
    assert (diff > 0).float().mean() < 1e-3
    assert diff.float().mean() < 2e-3


def test_batched_ops_equal_torchvision_per_image():
    images = _photo_like(96, 37, 45, seed=0)
    p = draw_photometric_params(96, np.random.default_rng(1), color_jitter_prob=0.9, blur_prob=0.6)
    out = apply_photometric(images, p)
    ref = torch.stack([_reference(images[i], p, i) for i in range(len(images))])
    _assert_close_to_reference(out, ref)
    assert torch.equal(out[~p["blur"]], ref[~p["blur"]])  # colour operations: bit-exact on CPU
    assert (out[p["blur"]].int() - ref[p["blur"]].int()).abs().max() <= 1
    changed = (out != images).flatten(1).any(1)
    touched = p["jitter"] | p["grayscale"] | p["blur"]
    assert torch.equal(changed, touched)  # untouched images are returned as they were


@pytest.mark.parametrize("op", range(4))
def test_each_colour_op_alone_at_its_extremes(op):
    images = _photo_like(4, 20, 24, seed=op)
    lo_hi = {0: (0.6, 1.4), 1: (0.6, 1.4), 2: (0.6, 1.4), 3: (-0.1, 0.1)}[op]
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 4)
    factors[:, op] = torch.tensor([lo_hi[0], lo_hi[1], (lo_hi[0] + lo_hi[1]) / 2, lo_hi[1] * 0.3])
    order = torch.tensor([[op] + [k for k in range(4) if k != op]] * 4)
    p = {"jitter": torch.ones(4, dtype=torch.bool), "factors": factors, "order": order,
         "grayscale": torch.zeros(4, dtype=torch.bool), "blur": torch.zeros(4, dtype=torch.bool),
         "sigma": torch.ones(4)}
    out = apply_photometric(images, p)
    ref = torch.stack([_reference(images[i], p, i) for i in range(4)])
    _assert_close_to_reference(out, ref)
    assert not torch.equal(out[1], images[1])


def test_padding_does_not_leak_and_stays_zero():
    """Views of different sizes in one padded batch: the image region equals the per-image
    result on the unpadded image (contrast mean and blur reflection use the image's own pixels),
    whatever the padding holds, and the padding of the output is zero."""
    sizes = [(30, 41), (41, 30), (17, 50), (50, 50), (8, 12)]
    m = len(sizes)
    images = [_photo_like(1, h, w, seed=10 + i)[0] for i, (h, w) in enumerate(sizes)]
    p = draw_photometric_params(m, np.random.default_rng(3), color_jitter_prob=1.0, blur_prob=1.0)
    p["sigma"] = torch.tensor([2.0, 1.3, 0.1, 0.7, 1.9])  # 13-px kernels on an 8 x 12 image too
    outputs = []
    for fill in (0, 255):
        batch = torch.full((m, 3, 50, 50), fill, dtype=torch.uint8)
        for i, (h, w) in enumerate(sizes):
            batch[i, :, :h, :w] = images[i]
        outputs.append(apply_photometric(batch, p, torch.tensor(sizes)))
    assert torch.equal(outputs[0], outputs[1]), "the padding's content reached the images"
    for i, (h, w) in enumerate(sizes):
        out = outputs[0][i]
        pad = torch.ones(50, 50, dtype=torch.bool)
        pad[:h, :w] = False
        assert (out[:, pad] == 0).all()
        if max(blur_kernel_size(float(p["sigma"][i])) // 2, 0) < min(h, w):  # torchvision's reflect pad needs it
            _assert_close_to_reference(out[:, :h, :w][None], _reference(images[i], p, i)[None])


def _record_cpu_path(mapper: PairedViewMapper, images: torch.Tensor) -> dict:
    """Run the CPU path's colour_augment and record the parameters torchvision drew for it. The
    operations themselves are skipped (only the random draws matter here, and they do not
    depend on the pixels), which keeps this fast."""
    rec = {"factors": [], "order": [], "grayscale": 0, "sigma": []}
    jitter = mapper.color_jitter.transforms[0]
    make_params = jitter.make_params

    def jitter_params(flat_inputs):
        params = make_params(flat_inputs)
        rec["factors"].append([params["brightness_factor"], params["contrast_factor"], params["saturation_factor"],
                               params["hue_factor"]])
        rec["order"].append(params["fn_idx"].tolist())
        return params

    gray_params = mapper.grayscale.make_params

    def grayscale_params(flat_inputs):
        rec["grayscale"] += 1
        return gray_params(flat_inputs)

    def spy_blur(img, kernel_size, sigma):
        rec["sigma"].append(sigma[0])
        assert kernel_size[0] == blur_kernel_size(sigma[0])
        return img

    jitter.make_params = jitter_params
    mapper.grayscale.make_params = grayscale_params
    jitter.transform = mapper.grayscale.transform = lambda inpt, params: inpt
    mp = pytest.MonkeyPatch()
    mp.setattr(TV.functional, "gaussian_blur", spy_blur)
    try:
        torch.manual_seed(0)
        mapper.colour_augment(images)
    finally:
        mp.undo()
    return rec


def test_parameter_distributions_match_the_cpu_path():
    num = 4000
    cpu_mapper = PairedViewMapper(photometric="cpu")
    old = _record_cpu_path(cpu_mapper, torch.randint(0, 256, (num, 3, 4, 4), dtype=torch.uint8))
    new = draw_photometric_params(num, np.random.default_rng(0), **PairedViewMapper().photometric_kwargs)

    def rate_agrees(count_old, count_new, p):
        sd = np.sqrt(num * p * (1 - p))
        assert abs(count_old - num * p) < 4 * sd and abs(count_new - num * p) < 4 * sd

    rate_agrees(len(old["factors"]), int(new["jitter"].sum()), 0.8)
    rate_agrees(old["grayscale"], int(new["grayscale"].sum()), 0.2)
    rate_agrees(len(old["sigma"]), int(new["blur"].sum()), 0.5)
    applied = new["jitter"]
    old_f = np.array(old["factors"])
    new_f = new["factors"][applied].numpy()
    for k, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1)]):
        assert stats.ks_2samp(old_f[:, k], new_f[:, k]).pvalue > 1e-3, f"factor {k}"
        for f in (old_f[:, k], new_f[:, k]):
            assert lo <= f.min() and f.max() <= hi and f.min() < lo + 0.01 and f.max() > hi - 0.01
    # the order: each operation at each slot a quarter of the time, in both paths
    for orders in (np.array(old["order"]), new["order"][applied].numpy()):
        counts = np.stack([(orders == op).sum(0) for op in range(4)])  # (op, slot)
        assert stats.chisquare(counts.flatten()).pvalue > 1e-3
        assert (np.sort(orders, 1) == np.arange(4)).all()  # permutations
    old_s, new_s = np.array(old["sigma"]), new["sigma"][new["blur"]].numpy()
    assert stats.ks_2samp(old_s, new_s).pvalue > 1e-3
    for s in (old_s, new_s):
        assert 0.1 <= s.min() < 0.12 and 1.98 < s.max() <= 2.0


def _tiny_records(tmp_path):
    from PIL import Image

    from disco_detr.data.proposal_store import Proposals, ProposalStore

    store = ProposalStore(str(tmp_path / "p.sqlite"), mode="a")
    records = []
    for i in range(3):
        arr = _photo_like(1, 90 + 10 * i, 120, seed=i)[0].permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(tmp_path / f"{i}.jpg", quality=95)
        boxes = np.array([[5, 5, 100, 80], [20, 10, 70, 60], [40, 30, 110, 85]], np.float32)
        store.put_many([(f"{i}.jpg", Proposals(boxes=boxes, scores=np.ones(3, np.float32), height=90 + 10 * i,
                                                width=120))])
        records.append({"file_name": str(tmp_path / f"{i}.jpg"), "image_id": i,
                        "proposals_file": str(tmp_path / "p.sqlite"), "proposal_key": f"{i}.jpg"})
    store.close()
    return records


def test_mapper_to_model_end_to_end(tmp_path):
    """The device path: same geometry as the CPU path for the same seed (parameters are drawn
    last), parameters reproducible from the seed, and the batch transform applies each
    sample's own parameters to its views and crops (checked against torchvision per image)."""
    records = _tiny_records(tmp_path)
    kwargs = dict(min_sizes=(64, 80), max_size=128, crop_size=16, num_boxes=4)
    device_mapper, cpu_mapper = PairedViewMapper(**kwargs), PairedViewMapper(photometric="cpu", **kwargs)
    samples = []
    for seed, record in enumerate(records):
        np.random.seed(seed)
        torch.manual_seed(seed)
        s = device_mapper(record)
        np.random.seed(seed)
        torch.manual_seed(seed)
        old = cpu_mapper(record)
        assert torch.equal(s["boxes"], old["boxes"]) and torch.equal(s["view_regions"], old["view_regions"])
        assert "photometric" not in old
        np.random.seed(seed)
        again = device_mapper(record)
        for k in PARAM_KEYS:
            assert torch.equal(s["photometric"][k], again["photometric"][k])
            assert len(s["photometric"][k]) == 2 + 2 * 4
        samples.append(s)
    batch = collate_paired_views(samples)
    b = len(samples)
    assert batch.photometric_pending and batch.view_photometric["factors"].shape == (2 * b, 4)
    assert batch.crop_photometric["factors"].shape == (2 * b * 4, 4)
    out = PairedViewPhotometric()(batch)
    assert not out.photometric_pending and out.view_photometric is None and out.crop_photometric is None
    for i, s in enumerate(samples):  # view v of sample i is image v * B + i
        h, w = s["views"].shape[-2:]
        imgs = [*s["views"], *s["crops"].flatten(0, 1)]
        got = [out.images[i, :, :h, :w], out.images[b + i, :, :h, :w], *out.crops[i], *out.crops[b + i]]
        for j in range(len(imgs)):
            _assert_close_to_reference(got[j][None], _reference(imgs[j], s["photometric"], j)[None])
        for v in (i, b + i):
            assert (out.images[v, :, h:, :] == 0).all() and (out.images[v, :, :, w:] == 0).all()


def test_a_batch_transform_that_does_not_fit_the_batches_is_refused(tmp_path):
    """PairedViewPhotometric refuses batches with nothing left to apply (or of another kind), and the training
    loop refuses a batch that still carries photometric parameters when no transform is configured; both name
    the config key."""
    from disco_detr.engine.trainer import DETRTrainLoop
    from disco_detr.structures import SingleViewBatch

    records = _tiny_records(tmp_path)[:2]
    kwargs = dict(min_sizes=(64,), max_size=96, crop_size=16, num_boxes=3)
    np.random.seed(0)
    pending = collate_paired_views([PairedViewMapper(crops_on_device=True, **kwargs)(r) for r in records])
    done = collate_paired_views([PairedViewMapper(photometric="cpu", **kwargs)(r) for r in records])
    assert pending.photometric_pending and pending.crops is None and not done.photometric_pending
    with pytest.raises(ValueError, match="dataloader.batch_transform=None"):
        PairedViewPhotometric()(done)
    single = SingleViewBatch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [(8, 8)], torch.zeros(1, 1, 4), [1],
                             torch.zeros(1, 1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="dataloader.batch_transform=None"):
        PairedViewPhotometric()(single)
    model = torch.nn.Linear(1, 1)
    loop = DETRTrainLoop(model, [], torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    with pytest.raises(ValueError, match="dataloader.batch_transform is None"):
        loop.prepare_batch(pending)
    assert loop.prepare_batch(done) is not None and loop.prepare_batch(single) is not None
    loop.batch_transform = PairedViewPhotometric()
    out = loop.prepare_batch(pending)
    assert not out.photometric_pending and out.crops.shape == (4, 3, 3, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images = _photo_like(32, 33, 47, seed=5)
    p = draw_photometric_params(32, np.random.default_rng(5), color_jitter_prob=1.0)
    sizes = torch.tensor([[33, 47], [20, 30]] * 16)
    cpu = apply_photometric(images, p, sizes)
    gpu = apply_photometric(images.cuda(), p, sizes.cuda()).cpu()
    _assert_close_to_reference(gpu, cpu)


def test_autocast_does_not_change_the_result():
    images = _photo_like(8, 24, 24, seed=7)
    p = draw_photometric_params(8, np.random.default_rng(7), blur_prob=1.0)
    plain = apply_photometric(images, p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = apply_photometric(images, p)
    assert torch.equal(plain, auto)


def _tool(name):
    """The module behind tools/benchmarks/<name>.py."""
    import importlib

    return importlib.import_module(f"disco_detr.tooling.benchmarks.{name}")


def test_benchmark_gpu_tiny_cpu_mode(capsys):
    """tools/benchmarks/benchmark_gpu.py runs end to end on CPU (demo configs, tiny inputs, one step each):
    DisCo and Siamese steps, the DMOQF timer found the assignment, FLOPs were counted."""
    import disco_detr.modeling.matching as matching
    from disco_detr.modeling.pretrain import disco

    original = matching.assign_queries_to_proposals
    result = _tool("benchmark_gpu").main(["--device", "cpu", "--tiny", "--view-size", "48", "64",
                                          "--finetune-size", "64", "96"])
    pre, ft = result["pretrain"], result["finetune"]
    assert pre["disco_step_s"] > 0 and pre["siamese_step_s"] > 0 and pre["disco_over_siamese"] > 0
    assert pre["dmoqf_wrapped_references"] >= 1 and 0 < pre["dmoqf_share_of_disco_step"] < 1
    assert pre["tflops_per_step"]["disco"] > 0 and ft["gflops_forward_per_image_fvcore"] > 0 and ft["step_s"] > 0
    assert result["amp"] == "off" and result["peak_tflops"] is None
    assert getattr(disco, "assign_queries_to_proposals", original) is original  # the timer was removed
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")


def test_benchmark_pretrain_mapper_runs(capsys):
    result = _tool("benchmark_pretrain_mapper").main(["--num-images", "3", "--num", "2", "--batch-per-gpu", "2"])
    assert result["old"]["ms_per_sample"] > 0 and result["new"]["ms_per_sample"] > 0
    assert result["new_device_crops"]["cpu_ms_per_sample"] > 0 and result["device_augment_ms_per_sample"]["cpu_1_thread"] > 0
    assert result["simplejpeg_same_pixels_as_pil"] is True and result["first_image_hw"] == [375, 500]
    assert set(result["decode_ms_per_image"]) == {"pil_read_rgb_image", "pil_bytes", "torchvision_decode_jpeg",
                                                  "simplejpeg"}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")


def test_crops_cut_on_the_device_equal_the_cpu_crops(tmp_path):
    """crops_on_device: the crops cut from the padded uint8 batch equal the mapper's CPU crops
    (cut from its float views) within one level; boxes on a view's right/bottom edge of a padded
    view (the case where RoIAlign would otherwise read the padding) included."""
    from disco_detr.data.photometric import cut_crops

    records = _tiny_records(tmp_path)
    kwargs = dict(min_sizes=(64, 96), max_size=160, crop_size=16, num_boxes=5)
    on_cpu, on_device = PairedViewMapper(**kwargs), PairedViewMapper(crops_on_device=True, **kwargs)
    with pytest.raises(ValueError, match="photometric"):
        PairedViewMapper(photometric="cpu", crops_on_device=True)
    cpu_samples, dev_samples = [], []
    for seed, record in enumerate(records):
        for mapper, out in ((on_cpu, cpu_samples), (on_device, dev_samples)):
            np.random.seed(seed)
            out.append(mapper(record))
    assert "crops" not in dev_samples[0] and dev_samples[0]["crop_size"] == 16
    batch = collate_paired_views(dev_samples)
    assert batch.crops is None and batch.crop_size == 16
    cut = cut_crops(batch.images, batch.boxes, torch.tensor(batch.image_sizes), 16)
    cpu_crops = collate_paired_views(cpu_samples).crops  # not colour-augmented yet either
    diff = (cut.int() - cpu_crops.int()).abs()
    # the device cuts from views already rounded to integers (+-0.5), the CPU from the float views:
    # a crop pixel moves by less than 0.5 before its own rounding, so by at most one level
    assert diff.max() <= 1 and diff.float().mean() < 0.15
    out = PairedViewPhotometric()(batch)
    assert out.crops.shape == (6, 5, 3, 16, 16)
    assert torch.equal(out.crops, apply_photometric(cut.flatten(0, 1), batch.crop_photometric).view(cut.shape))
    # an edge box on padded views: against the crop of the unpadded view (view-major: image v * 2 + b)
    sizes = torch.tensor([[20, 30], [32, 40]])
    images = torch.zeros(4, 3, 32, 40, dtype=torch.uint8)
    singles = []
    for b, (h, w) in enumerate(sizes.tolist()):
        img = _photo_like(2, h, w, seed=b)
        images[b, :, :h, :w], images[2 + b, :, :h, :w] = img
        singles.append(img)
    edge = torch.tensor([[[[10.0, 8.0, 30.0, 20.0]], [[0.0, 0.0, 6.0, 5.0]]],
                         [[[25.0, 20.0, 40.0, 32.0]], [[3.0, 3.0, 39.5, 31.5]]]])  # (B, 2, 1, 4)
    got = cut_crops(images, edge.transpose(0, 1).flatten(0, 1), sizes.repeat(2, 1), 8)
    for b in range(2):
        for v in range(2):
            ref = crop_and_resize(singles[b][v].float(), edge[b, v], (8, 8)).round().clamp(0, 255)
            assert torch.equal(got[v * 2 + b].float(), ref), (b, v)
