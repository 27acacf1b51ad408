"""The gather-based bilinear sampling of deformable attention (``bilinear_sample_gather``, sampling "gather")
against ``F.grid_sample`` (zero padding, align_corners=False) in float64: forward and backward to 1e-12, with
points inside, across the border and outside the map, on odd and one-pixel level sizes."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from disco_detr.modeling.layers import ms_deform_attn_sample
from disco_detr.modeling.layers.ms_deform_attn import (
    bilinear_sample_gather,
    ms_deform_attn_sampling,
    set_ms_deform_attn_sampling,
)

TOL = 1e-12
#: odd, non-square and one-pixel sides
LEVELS = [(5, 7), (3, 3), (1, 2), (2, 1), (4, 9)]


def _points(gen, n, ho, wo):
    """A grid (N, Ho, Wo, 2) in [-1.6, 1.6]: about a third of the points outside the map, none on a pixel centre
    line but by chance of measure zero (where the two paths could take different one-sided derivatives)."""
    return torch.rand(n, ho, wo, 2, generator=gen, dtype=torch.float64) * 3.2 - 1.6


def _grad_compare(f_ref, f_got, inputs, grad_out):
    ref_in = [t.detach().clone().requires_grad_() for t in inputs]
    got_in = [t.detach().clone().requires_grad_() for t in inputs]
    ref, got = f_ref(*ref_in), f_got(*got_in)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, rtol=0, atol=TOL)
    for g, r in zip(torch.autograd.grad(got, got_in, grad_out), torch.autograd.grad(ref, ref_in, grad_out)):
        torch.testing.assert_close(g, r, rtol=0, atol=TOL)
        assert r.abs().max() > 0          # a gradient that is all zeros would compare trivially


@pytest.mark.parametrize("hw", LEVELS)
def test_gather_equals_grid_sample_forward_and_backward(hw):
    gen = torch.Generator().manual_seed(hw[0] * 31 + hw[1])
    image = torch.randn(3, 4, *hw, generator=gen, dtype=torch.float64)
    grid = _points(gen, 3, 2, 11)
    grad_out = torch.randn(3, 4, 2, 11, generator=gen, dtype=torch.float64)
    outside = (grid.abs() > 1).any(-1)
    assert outside.any() and (~outside).any()
    grid_sample = lambda im, g: F.grid_sample(im, g, mode="bilinear", padding_mode="zeros",  # noqa: E731
                                               align_corners=False)
    _grad_compare(grid_sample, bilinear_sample_gather, [image, grid], grad_out)


def test_gather_zero_padding_near_and_far_outside_the_map():
    """Half a pixel outside the border keeps half of the border pixel; a whole pixel outside gives zero."""
    image = torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 1, 2, 3)       # h=2, w=3
    # x in [-1, 1] over 3 pixels: pixel width 2/3; centre of column 0 at -2/3
    xs = torch.tensor([-2 / 3, -1.0, -4 / 3, 1 + 2 / 3], dtype=torch.float64)
    grid = torch.stack([xs, torch.full_like(xs, -0.5)], -1).view(1, 1, 4, 2)   # y on the centre of row 0
    out = bilinear_sample_gather(image, grid).view(-1)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64), rtol=0, atol=TOL)


@pytest.mark.parametrize("four_levels", [False, True])
def test_the_sampling_setting_switches_the_pytorch_path(four_levels):
    """ms_deform_attn_sample under "gather" equals it under "grid_sample" (forward, all three gradients), on
    a multi-level layout with odd sizes; the setting is restored after the context manager."""
    gen = torch.Generator().manual_seed(7)
    shapes = torch.tensor(LEVELS[:4] if four_levels else LEVELS[:2])
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    b, nq, heads, dh, points = 2, 9, 2, 3, 3
    value = torch.randn(b, int(areas.sum()), heads, dh, generator=gen, dtype=torch.float64)
    locations = torch.rand(b, nq, heads, len(shapes), points, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.3
    weights = torch.rand(b, nq, heads, len(shapes), points, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(b, nq, heads * dh, generator=gen, dtype=torch.float64)

    def run(sampling):
        def f(v, loc, w):
            with ms_deform_attn_sampling(sampling):
                return ms_deform_attn_sample(v, shapes, starts, loc, w)
        return f

    _grad_compare(run("grid_sample"), run("gather"), [value, locations, weights], grad_out)
    with pytest.raises(ValueError, match="sampling must be one of"):
        set_ms_deform_attn_sampling("nearest")


def test_gather_keeps_the_value_dtype_and_runs_in_float32():
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(2, 5, 7, 4, generator=gen)
    grid = torch.rand(2, 3, 6, 2, generator=gen) * 2.4 - 1.2
    got = bilinear_sample_gather(image, grid)
    assert got.dtype == torch.float32
    ref = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
