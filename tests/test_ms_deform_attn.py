"""Multi-scale deformable attention against a float64 reference that samples every point by hand."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from disco_detr.modeling.layers import MultiScaleDeformableAttention, ms_deform_attn_sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------- reference
def bilinear_by_hand(level: np.ndarray, x: float, y: float) -> np.ndarray:
    """level (h, w, C); (x, y) normalised with pixel centres at (col + 0.5) / w. Zero outside the map."""
    h, w, _ = level.shape
    px, py = x * w - 0.5, y * h - 0.5          # continuous pixel coordinates, centres on integers
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    out = np.zeros(level.shape[-1])
    for row, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for col, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            if 0 <= row < h and 0 <= col < w:
                out += wy * wx * level[row, col]
    return out


def deform_attn_by_hand(value, shapes, locations, weights) -> np.ndarray:
    """value (B, S, H, Dh), shapes [(h, w)], locations (B, Nq, H, L, P, 2), weights (B, Nq, H, L, P) -> (B, Nq, H*Dh)."""
    value, locations, weights = (np.asarray(t, dtype=np.float64) for t in (value, locations, weights))
    b, _, heads, head_dim = value.shape
    nq, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    out = np.zeros((b, nq, heads, head_dim))
    for i in range(b):
        for q in range(nq):
            for h in range(heads):
                start = 0
                for lvl in range(levels):
                    lh, lw = shapes[lvl]
                    level = value[i, start:start + lh * lw, h].reshape(lh, lw, head_dim)  # row-major tokens
                    for p in range(points):
                        x, y = locations[i, q, h, lvl, p]
                        out[i, q, h] += weights[i, q, h, lvl, p] * bilinear_by_hand(level, x, y)
                    start += lh * lw
    return out.reshape(b, nq, heads * head_dim)


def module_by_hand(module: MultiScaleDeformableAttention, query, reference_points, value, shapes, padding_mask=None):
    """The module's forward written out in numpy float64 from its parameters (Deformable DETR's equations)."""
    par = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    query, reference_points, value = (t.detach().double().numpy() for t in (query, reference_points, value))
    heads, levels, points = module.num_heads, module.num_levels, module.num_points
    b, nq, d = query.shape
    v = value @ par["value_proj.weight"].T + par["value_proj.bias"]
    if padding_mask is not None:
        v[padding_mask.numpy()] = 0.0
    v = v.reshape(b, -1, heads, d // heads)
    offsets = (query @ par["sampling_offsets.weight"].T + par["sampling_offsets.bias"]).reshape(b, nq, heads, levels,
                                                                                                  points, 2)
    logits = (query @ par["attention_weights.weight"].T + par["attention_weights.bias"]).reshape(b, nq, heads, -1)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = (weights / weights.sum(-1, keepdims=True)).reshape(b, nq, heads, levels, points)
    locations = np.zeros((b, nq, heads, levels, points, 2))
    for lvl, (lh, lw) in enumerate(shapes):
        ref = reference_points[:, :, None, lvl, None, :]                                    # (B, Nq, 1, 1, 2|4)
        off = offsets[:, :, :, lvl]
        if reference_points.shape[-1] == 2:
            locations[:, :, :, lvl] = ref + off / np.array([lw, lh])
        else:
            locations[:, :, :, lvl] = ref[..., :2] + off / points * ref[..., 2:] * 0.5
    sampled = deform_attn_by_hand(v, shapes, locations, weights)
    return sampled @ par["output_proj.weight"].T + par["output_proj.bias"]


def level_layout(shapes):
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    areas = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def random_inputs(shapes, b=2, nq=5, heads=2, head_dim=3, points=3, seed=0, dtype=torch.float64, spread=(-0.3, 1.3)):
    gen = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, heads, head_dim, generator=gen, dtype=dtype)
    lo, hi = spread
    locations = (torch.rand(b, nq, heads, len(shapes), points, 2, generator=gen, dtype=dtype) * (hi - lo) + lo)
    weights = torch.rand(b, nq, heads, len(shapes), points, generator=gen, dtype=dtype)
    return value, locations, weights


# ------------------------------------------------------------------------------------------ core function
@pytest.mark.parametrize("shapes", [[(5, 7)], [(3, 3), (1, 2)], [(5, 7), (3, 3), (1, 2), (2, 1)], [(1, 1)]])
def test_core_matches_hand_reference_float64(shapes):
    value, locations, weights = random_inputs(shapes)
    spatial_shapes, starts = level_layout(shapes)
    got = ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights)
    want = deform_attn_by_hand(value, shapes, locations, weights)
    assert got.shape == (2, 5, 6) and got.dtype == torch.float64
    assert np.abs(got.numpy() - want).max() < 1e-10


def test_core_exact_values_at_pixel_centres_and_outside():
    """Hand-computed: a pixel centre returns the pixel, midway between two returns the mean, the border fades."""
    shapes = [(2, 3)]
    value = torch.arange(6, dtype=torch.float64).view(1, 6, 1, 1)          # row-major: [[0, 1, 2], [3, 4, 5]]
    xy = [((1 + 0.5) / 3, (1 + 0.5) / 2),   # centre of row 1, col 1 -> 4
          (2 / 3, 0.25),                    # between cols 1 and 2 of row 0 -> 1.5
          (0.0, 0.75),                      # left edge of pixel (1, 0): half of it (zero padding) -> 1.5
          (1.0, 0.75),                      # right edge of pixel (1, 2): half of 5 -> 2.5
          (1.5, 0.5),                       # far outside -> 0
          (0.5, 1.25)]                      # half a pixel below the map: both rows outside -> 0
    locations = torch.tensor(xy, dtype=torch.float64).view(1, len(xy), 1, 1, 1, 2)
    weights = torch.ones(1, len(xy), 1, 1, 1, dtype=torch.float64)
    spatial_shapes, starts = level_layout(shapes)
    got = ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights).flatten().tolist()
    assert got == pytest.approx([4.0, 1.5, 1.5, 2.5, 0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_core_low_precision_dtypes(dtype, tol):
    shapes = [(5, 7), (3, 3), (1, 2)]
    value, locations, weights = random_inputs(shapes, seed=1)
    spatial_shapes, starts = level_layout(shapes)
    want = deform_attn_by_hand(value, shapes, locations, weights)
    got = ms_deform_attn_sample(value.to(dtype), spatial_shapes, starts, locations.to(dtype), weights.to(dtype))
    assert got.dtype == dtype
    # float16/bfloat16 also round the locations (a fraction of a pixel on these small maps) and the sum.
    assert np.abs(got.double().numpy() - want).max() < tol * max(1.0, np.abs(want).max())


def test_core_float32_locations_with_half_value_sample_in_float32():
    shapes = [(5, 7), (3, 3)]
    value, locations, weights = random_inputs(shapes, seed=2)
    spatial_shapes, starts = level_layout(shapes)
    half = value.half()
    want = deform_attn_by_hand(half.double(), shapes, locations.float().double(), weights.float().double())
    got = ms_deform_attn_sample(half, spatial_shapes, starts, locations.float(), weights.float())
    assert got.dtype == torch.float16
    assert np.abs(got.double().numpy() - want).max() < 5e-3   # only the final cast to float16 rounds


def test_core_gradcheck():
    """Gradients w.r.t. value, locations and weights. Bilinear interpolation has kinks where a location crosses
    a pixel-centre line (its derivative jumps there), so every location sits 0.2-0.8 of a pixel away from
    those lines, some inside, some straddling the border and some fully outside the map (zero gradient)."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, 4), (2, 1)]
    spatial_shapes, starts = level_layout(shapes)
    b, nq, heads, head_dim, points = 1, 2, 2, 2, 2
    value = torch.randn(b, 12 + 2, heads, head_dim, generator=gen, dtype=torch.float64)
    size = torch.tensor([[4.0, 3.0], [1.0, 2.0]], dtype=torch.float64)                     # (w, h) per level
    cells = torch.randint(-2, 4, (b, nq, heads, len(shapes), points, 2), generator=gen).double()
    frac = 0.2 + 0.6 * torch.rand(cells.shape, generator=gen, dtype=torch.float64)
    locations = (cells + frac + 0.5) / size[None, None, None, :, None, :]   # pixel coordinate cells + frac
    weights = torch.rand(b, nq, heads, len(shapes), points, generator=gen, dtype=torch.float64)
    inputs = (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_sample(v, spatial_shapes, starts, loc, w), inputs, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("points", [1, 4])
def test_weighted_point_sum_equals_the_broadcast_product(points):
    """The per-point weighted sum (its own autograd Function, for speed) against autograd of
    ``(sampled * weights).sum(-2)`` in float64: value, both gradients, and a second derivative."""
    from disco_detr.modeling.layers.ms_deform_attn import _weighted_point_sum, _WeightedPointSum

    gen = torch.Generator().manual_seed(5)
    sampled = torch.randn(3, 5, points, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(3, 1, points, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)
    got = _weighted_point_sum(sampled, weights)
    want = (sampled * weights).sum(-2)
    assert got.shape == (3, 5, 7)
    assert torch.allclose(got, want, rtol=0, atol=1e-14)
    got_grads = torch.autograd.grad(got, (sampled, weights), grad)
    want_grads = torch.autograd.grad(want, (sampled, weights), grad)
    for g, w in zip(got_grads, want_grads):
        assert g.shape == w.shape and torch.allclose(g, w, rtol=0, atol=1e-14)
    assert torch.autograd.gradgradcheck(_WeightedPointSum.apply, (sampled, weights))
    with torch.no_grad():   # inference runs the loop outside the Function
        assert torch.allclose(_weighted_point_sum(sampled, weights), want, rtol=0, atol=1e-14)


# -------------------------------------------------------------------------------------------------- module
def randomised_module(d=8, heads=2, levels=3, points=3, seed=0):
    torch.manual_seed(seed)
    module = MultiScaleDeformableAttention(d, heads, levels, points).double()
    with torch.no_grad():
        for p in module.parameters():   # the init has zero weights: randomise so every term matters
            p.normal_(0.0, 0.5)
        module.sampling_offsets.bias.mul_(4.0)   # send some points well outside the maps
    return module


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_matches_hand_reference_with_padding(ref_dim):
    shapes = [(5, 7), (3, 3), (1, 2)]
    spatial_shapes, starts = level_layout(shapes)
    module = randomised_module(levels=len(shapes))
    gen = torch.Generator().manual_seed(4)
    b, nq, d = 2, 4, 8
    s = sum(h * w for h, w in shapes)
    query = torch.randn(b, nq, d, generator=gen, dtype=torch.float64)
    value = torch.randn(b, s, d, generator=gen, dtype=torch.float64)
    reference_points = torch.rand(b, nq, len(shapes), ref_dim, generator=gen, dtype=torch.float64)
    # image 1 is padded: its right 2 columns / bottom row of level 0 and its right column of level 1
    padding = torch.zeros(b, s, dtype=torch.bool)
    pad0 = torch.zeros(5, 7, dtype=torch.bool)
    pad0[:, 5:] = True
    pad0[4:, :] = True
    pad1 = torch.zeros(3, 3, dtype=torch.bool)
    pad1[:, 2:] = True
    padding[1] = torch.cat([pad0.flatten(), pad1.flatten(), torch.zeros(2, dtype=torch.bool)])
    got = module(query, reference_points, value, spatial_shapes, starts, padding)
    want = module_by_hand(module, query, reference_points, value, shapes, padding)
    assert got.shape == (b, nq, d)
    assert np.abs(got.detach().numpy() - want).max() < 1e-10
    # the mask matters: without it image 1 reads the padded values, image 0 is unchanged
    unmasked = module(query, reference_points, value, spatial_shapes, starts, None)
    assert torch.allclose(unmasked[0], got[0], atol=1e-12)
    assert (unmasked[1] - got[1]).abs().max() > 1e-3


def test_module_float32_matches_float64_reference():
    shapes = [(5, 7), (3, 3), (1, 2)]
    spatial_shapes, starts = level_layout(shapes)
    module = randomised_module(levels=len(shapes), seed=5)
    gen = torch.Generator().manual_seed(5)
    query = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)
    value = torch.randn(2, 46, 8, generator=gen, dtype=torch.float64)
    reference_points = torch.rand(2, 4, 3, 2, generator=gen, dtype=torch.float64)
    want = module_by_hand(module, query, reference_points, value, shapes)
    got = module.float()(query.float(), reference_points.float(), value.float(), spatial_shapes, starts)
    assert got.dtype == torch.float32
    assert np.abs(got.detach().double().numpy() - want).max() < 1e-4


def test_init_offsets_point_in_the_documented_directions():
    heads, levels, points = 8, 4, 4
    module = MultiScaleDeformableAttention(32, heads, levels, points)
    # head h looks at angle 2*pi*h/8, scaled so the largest coordinate is 1: the 8 neighbours of a pixel
    directions = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    bias = module.sampling_offsets.bias.detach().view(heads, levels, points, 2)
    for h, (dx, dy) in enumerate(directions):
        for lvl in range(levels):
            for p in range(points):
                assert bias[h, lvl, p].tolist() == pytest.approx([dx * (p + 1), dy * (p + 1)], abs=1e-6)
    assert module.sampling_offsets.weight.abs().max() == 0
    assert module.attention_weights.weight.abs().max() == 0 and module.attention_weights.bias.abs().max() == 0
    assert module.value_proj.bias.abs().max() == 0 and module.output_proj.bias.abs().max() == 0
    bound = math.sqrt(6.0 / (32 + 32))   # xavier-uniform bound
    assert 0 < module.value_proj.weight.abs().max() <= bound and module.value_proj.weight.std() > bound / 4
    # 6 heads: head 1 at 60 degrees is (cos, sin) / sin = (1 / sqrt(3), 1), times p + 1 for point p
    six = MultiScaleDeformableAttention(12, 6, 1, 3).sampling_offsets.bias.detach().view(6, 1, 3, 2)
    assert six[1, 0].flatten().tolist() == pytest.approx([3 ** -0.5, 1, 2 * 3 ** -0.5, 2, 3 ** 0.5, 3], abs=1e-6)
    assert six[3, 0].flatten().tolist() == pytest.approx([-1, 0, -2, 0, -3, 0], abs=1e-6)


def test_init_forward_samples_at_the_grid_with_uniform_weights():
    """At init the output is output_proj(mean over levels/points of value_proj samples at ref + bias / (w, h))."""
    shapes = [(5, 7), (3, 3)]
    spatial_shapes, starts = level_layout(shapes)
    torch.manual_seed(6)
    module = MultiScaleDeformableAttention(8, 2, 2, 2).double()
    query = torch.randn(1, 3, 8, dtype=torch.float64)
    value = torch.randn(1, 44, 8, dtype=torch.float64)
    reference_points = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    want = module_by_hand(module, query, reference_points, value, shapes)
    got = module(query, reference_points, value, spatial_shapes, starts)
    assert np.abs(got.detach().numpy() - want).max() < 1e-10
    # the query does not matter at init (zero offset/weight matrices)
    other = module(torch.randn(1, 3, 8, dtype=torch.float64), reference_points, value, spatial_shapes, starts)
    assert torch.allclose(got, other, atol=1e-12)


def test_module_backward_reaches_every_parameter():
    shapes = [(5, 7), (3, 3), (1, 2)]
    spatial_shapes, starts = level_layout(shapes)
    module = randomised_module(levels=3, seed=7).float()
    query = torch.randn(2, 4, 8)
    value = torch.randn(2, 46, 8, requires_grad=True)
    out = module(query, torch.rand(2, 4, 3, 4), value, spatial_shapes, starts)
    out.square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert value.grad.abs().sum() > 0


def test_module_emits_its_sampling_for_the_recorder():
    from disco_detr.modeling.layers.recording import record_attention

    shapes = [(5, 7), (3, 3)]
    spatial_shapes, starts = level_layout(shapes)
    module = randomised_module(levels=2, seed=8)
    holder = torch.nn.Sequential(module)
    query, value, ref = torch.randn(1, 3, 8).double(), torch.randn(1, 44, 8).double(), torch.rand(1, 3, 2, 2).double()
    module(query, ref, value, spatial_shapes, starts)            # nothing open: nothing recorded, no error
    with record_attention(holder) as records:
        module(query, ref, value, spatial_shapes, starts)
    assert [(r.site, r.module) for r in records] == [("deformable", "0")]
    locations, weights = records[0].tensors["locations"], records[0].tensors["weights"]
    assert locations.shape == (1, 3, 2, 2, 3, 2) and weights.shape == (1, 3, 2, 2, 3)
    assert torch.allclose(weights.sum((-1, -2)), torch.ones(1, 3, 2, dtype=torch.float64))
    # the recorded locations are the ones sampled: feeding them to the core reproduces the module's output
    v = module.value_proj(value).view(1, 44, 2, 4)
    again = module.output_proj(ms_deform_attn_sample(v, spatial_shapes, starts, locations, weights))
    assert torch.allclose(again, module(query, ref, value, spatial_shapes, starts), atol=1e-12)
    assert records[0].tensors["spatial_shapes"].tolist() == [[5, 7], [3, 3]]


# ------------------------------------------------------------------------------------------------- errors
def test_shape_errors_raise():
    shapes = [(5, 7), (3, 3)]
    spatial_shapes, starts = level_layout(shapes)
    value, locations, weights = random_inputs(shapes, heads=2, points=2)
    with pytest.raises(ValueError, match="sum"):
        ms_deform_attn_sample(value[:, :-1], spatial_shapes, starts, locations, weights)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn_sample(value, spatial_shapes, torch.tensor([0, 34]), locations, weights)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights[..., :1])
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn_sample(value[:, :35], spatial_shapes[:1], starts[:1], locations, weights)
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn_sample(value, spatial_shapes, starts, locations[..., 0], weights)
    with pytest.raises(ValueError, match="value"):
        ms_deform_attn_sample(value[..., 0], spatial_shapes, starts, locations, weights)

    module = MultiScaleDeformableAttention(8, 2, 2, 2)
    query, v, ref = torch.randn(2, 3, 8), torch.randn(2, 44, 8), torch.rand(2, 3, 2, 2)
    assert module(query, ref, v, spatial_shapes, starts).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="sum"):
        module(query, ref, v[:, :40], spatial_shapes, starts)
    with pytest.raises(ValueError, match="reference_points"):
        module(query, torch.rand(2, 3, 2, 3), v, spatial_shapes, starts)
    with pytest.raises(ValueError, match="reference_points"):
        module(query, torch.rand(2, 3, 1, 2), v, spatial_shapes, starts)
    with pytest.raises(ValueError, match="spatial_shapes"):
        module(query, ref, v, spatial_shapes[:1], starts[:1])
    with pytest.raises(ValueError, match="query"):
        module(torch.randn(2, 3, 6), ref, v, spatial_shapes, starts)
    with pytest.raises(ValueError, match="padding_mask"):
        module(query, ref, v, spatial_shapes, starts, torch.zeros(2, 43, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding_mask"):
        module(query, ref, v, spatial_shapes, starts, torch.zeros(2, 44))
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(10, 3)


# ---------------------------------------------------------------------------------------------- benchmark
def test_benchmark_tool_quick(capsys):
    from disco_detr.tooling.benchmarks import benchmark_ms_deform_attn as tool

    tool.main(["--quick", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["benchmark"] == "ms_deform_attn"
    names = {(r["layer"], r["setting"]) for r in result["results"]}
    assert names == {(layer, setting) for layer in ("deformable", "dense") for setting in ("encoder", "decoder")}
    for row in result["results"]:
        assert row["forward_ms"] > 0 and row["train_ms"] > 0
        assert row["peak_mem_train_mib"] is not None and row["peak_mem_train_mib"] >= 0
