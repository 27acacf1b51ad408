"""The Triton kernel of multi-scale deformable attention against the float64 references of test_ms_deform_attn.

Where the kernels run: on CUDA when it is available (``tools/gpu_check.py`` runs this file there), otherwise on
CPU tensors under Triton's interpreter. The interpreter must be switched on (``TRITON_INTERPRET=1``) before
``triton`` is first imported, which other tests of the same pytest process may already have done; so without
CUDA, ``test_kernel_cases_in_the_interpreter`` runs this same file in a fresh ``pytest`` subprocess with the
variable set, and the kernel cases of the parent process are skipped. By hand:

    TRITON_INTERPRET=1 PYTHONPATH=projects/DisCoDETR .venv/bin/python -m pytest -q tests/test_ms_deform_attn_triton.py

(about 20 s on one CPU core; the shapes are tiny because the interpreter runs each program in numpy).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_ms_deform_attn import deform_attn_by_hand, level_layout, random_inputs, randomised_module

from disco_detr.modeling.layers import ms_deform_attn as msda
from disco_detr.modeling.layers import ms_deform_attn_sample
from disco_detr.modeling.layers.ms_deform_attn_triton import (
    interpreter_enabled,
    ms_deform_attn_triton,
    triton_available,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA = torch.cuda.is_available()
INTERPRETED = interpreter_enabled() and triton_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
kernel_case = pytest.mark.skipif(not (CUDA or INTERPRETED),
                                 reason="needs CUDA or TRITON_INTERPRET=1 (run by test_kernel_cases_in_the_interpreter)")


def test_kernel_cases_in_the_interpreter():
    """Without CUDA: the kernel cases of this file in a pytest subprocess under Triton's interpreter."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if INTERPRETED or CUDA:
        pytest.skip("the kernel cases run in this process")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(
        [os.path.join(REPO, "projects", "DisCoDETR"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


def _on(device, *tensors):
    return [t.to(device) for t in tensors]


# Odd level sizes (7 x 5, 3 x 3, 1 x 2, 2 x 1, 1 x 1), one level and several, points well outside the map.
SHAPES = [[(5, 7)], [(5, 7), (3, 3), (1, 2), (2, 1)], [(1, 1), (3, 2)]]


@kernel_case
@pytest.mark.parametrize("shapes", SHAPES)
def test_forward_matches_hand_reference_float64(shapes):
    value, locations, weights = random_inputs(shapes, nq=9, spread=(-0.4, 1.4))
    spatial_shapes, starts = level_layout(shapes)
    got = ms_deform_attn_triton(*_on(DEVICE, value, spatial_shapes, starts, locations, weights))
    want = deform_attn_by_hand(value, shapes, locations, weights)
    assert got.shape == (2, 9, 6) and got.dtype == torch.float64 and got.device.type == DEVICE.type
    assert np.abs(got.cpu().numpy() - want).max() < 1e-12


@kernel_case
def test_forward_exact_values_at_pixel_centres_and_outside():
    """Hand-computed values (as in test_ms_deform_attn): centre, midway, half a pixel over the border, outside."""
    value = torch.arange(6, dtype=torch.float64).view(1, 6, 1, 1)          # [[0, 1, 2], [3, 4, 5]]
    xy = [((1 + 0.5) / 3, (1 + 0.5) / 2), (2 / 3, 0.25), (0.0, 0.75), (1.0, 0.75), (1.5, 0.5), (0.5, 1.25),
          (-0.2, -3.0)]
    locations = torch.tensor(xy, dtype=torch.float64).view(1, len(xy), 1, 1, 1, 2)
    weights = torch.ones(1, len(xy), 1, 1, 1, dtype=torch.float64)
    spatial_shapes, starts = level_layout([(2, 3)])
    got = ms_deform_attn_triton(*_on(DEVICE, value, spatial_shapes, starts, locations, weights))
    assert got.flatten().tolist() == pytest.approx([4.0, 1.5, 1.5, 2.5, 0.0, 0.0, 0.0], abs=1e-12)


def _kink_free_inputs(seed, shapes, b=2, nq=6, heads=2, head_dim=3, points=2):
    """Locations 0.2-0.8 of a pixel away from pixel-centre lines (where bilinear sampling has kinks), some inside,
    some straddling the border, some fully outside."""
    gen = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, heads, head_dim, generator=gen, dtype=torch.float64)
    size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float64)
    cells = torch.randint(-2, 1 + max(max(h, w) for h, w in shapes), (b, nq, heads, len(shapes), points, 2),
                          generator=gen).double()
    frac = 0.2 + 0.6 * torch.rand(cells.shape, generator=gen, dtype=torch.float64)
    locations = (cells + frac + 0.5) / size[None, None, None, :, None, :]
    weights = torch.rand(b, nq, heads, len(shapes), points, generator=gen, dtype=torch.float64)
    return value, locations, weights


@kernel_case
@pytest.mark.parametrize("shapes", [[(3, 4), (2, 1)], [(5, 7), (3, 3), (1, 2)]])
def test_backward_matches_autograd_of_the_pytorch_reference(shapes):
    """grad of value, locations and weights against autograd of the float64 PyTorch path (itself held to the hand
    reference and to gradcheck in test_ms_deform_attn)."""
    value, locations, weights = _kink_free_inputs(1, shapes)
    spatial_shapes, starts = level_layout(shapes)
    grad_out = torch.randn(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3], dtype=torch.float64,
                           generator=torch.Generator().manual_seed(2))
    inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
    want = torch.autograd.grad(ms_deform_attn_sample(inputs[0], spatial_shapes, starts, *inputs[1:]), inputs, grad_out)
    dev = [t.detach().to(DEVICE).requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn_triton(dev[0], spatial_shapes.to(DEVICE), starts.to(DEVICE), dev[1], dev[2])
    got = torch.autograd.grad(out, dev, grad_out.to(DEVICE))
    for name, g, w in zip(("value", "locations", "weights"), got, want):
        assert g.dtype == torch.float64 and g.shape == w.shape, name
        assert w.abs().max() > 0, name
        assert (g.cpu() - w).abs().max() < 1e-10, name
    # points fully outside the map get no location gradient
    assert any((got[1].cpu() == 0).all(-1).flatten().tolist())


@kernel_case
def test_gradcheck():
    value, locations, weights = _kink_free_inputs(3, [(3, 4), (2, 1)], b=1, nq=2, heads=1, head_dim=2)
    spatial_shapes, starts = _on(DEVICE, *level_layout([(3, 4), (2, 1)]))
    inputs = tuple(t.to(DEVICE).requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(lambda v, loc, w: ms_deform_attn_triton(v, spatial_shapes, starts, loc, w), inputs,
                                    eps=1e-6, atol=1e-8, fast_mode=True)


@kernel_case
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_value_with_float32_accumulation(dtype, tol):
    """A float16/bfloat16 value with float32 locations and weights (the AMP policy): only the value's and the
    output's rounding differ from the float64 reference, and gradients come back in each input's dtype."""
    shapes = [(5, 7), (3, 3), (1, 2)]
    value, locations, weights = random_inputs(shapes, seed=4, nq=7)
    spatial_shapes, starts = _on(DEVICE, *level_layout(shapes))
    low = value.to(dtype)
    want = deform_attn_by_hand(low.double(), shapes, locations.float().double(), weights.float().double())
    v, loc, w = (t.to(DEVICE).requires_grad_() for t in (low, locations.float(), weights.float()))
    got = ms_deform_attn_triton(v, spatial_shapes, starts, loc, w)
    assert got.dtype == dtype
    assert np.abs(got.detach().double().cpu().numpy() - want).max() < tol * max(1.0, np.abs(want).max())
    got.float().square().sum().backward()
    assert (v.grad.dtype, loc.grad.dtype, w.grad.dtype) == (dtype, torch.float32, torch.float32)
    ref = [t.detach().double().requires_grad_() for t in (low, locations.float(), weights.float())]
    ms_deform_attn_sample(ref[0], spatial_shapes.cpu(), starts.cpu(), ref[1], ref[2]).square().sum().backward()
    scale = ref[0].grad.abs().max()
    assert (v.grad.double().cpu() - ref[0].grad).abs().max() < 4 * tol * scale


@kernel_case
@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_on_the_kernel_matches_hand_reference_with_padding(ref_dim):
    """The whole module (backend forced to "triton") on a padded image and points sent well outside the maps."""
    from test_ms_deform_attn import module_by_hand

    shapes = [(5, 7), (3, 3), (1, 2)]
    spatial_shapes, starts = level_layout(shapes)
    module = randomised_module(levels=len(shapes))
    gen = torch.Generator().manual_seed(4)
    b, nq, d, s = 2, 4, 8, 46
    query = torch.randn(b, nq, d, generator=gen, dtype=torch.float64)
    value = torch.randn(b, s, d, generator=gen, dtype=torch.float64)
    reference_points = torch.rand(b, nq, len(shapes), ref_dim, generator=gen, dtype=torch.float64)
    padding = torch.zeros(b, s, dtype=torch.bool)
    pad0 = torch.zeros(5, 7, dtype=torch.bool)
    pad0[:, 5:] = True
    pad0[4:, :] = True
    padding[1, :35] = pad0.flatten()
    want = module_by_hand(module, query, reference_points, value, shapes, padding)
    previous = msda._backend["name"]
    msda.set_ms_deform_attn_backend("triton")
    try:
        module.to(DEVICE)
        got = module(*_on(DEVICE, query, reference_points, value, spatial_shapes, starts, padding))
    finally:
        msda.set_ms_deform_attn_backend(previous)
    assert np.abs(got.detach().cpu().numpy() - want).max() < 1e-10
    got.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# ------------------------------------------------------------------------------------------ dispatch (no kernel)
def test_dispatch_auto_uses_pytorch_on_cpu_and_logs_once(monkeypatch, caplog):
    import logging

    calls = []
    monkeypatch.setattr(msda, "ms_deform_attn_sample", lambda *a: calls.append("pytorch") or a[0].new_zeros(1))
    monkeypatch.setitem(msda._backend, "name", "auto")
    monkeypatch.setitem(msda._backend, "logged", set())
    value, locations, weights = random_inputs([(2, 2)], b=1, nq=1)
    spatial_shapes, starts = level_layout([(2, 2)])
    with caplog.at_level(logging.INFO, logger="detectron2"):
        for _ in range(3):
            msda.ms_deform_attn(value, spatial_shapes, starts, locations, weights)
    assert calls == ["pytorch"] * 3
    logged = [r.getMessage() for r in caplog.records if "deformable attention" in r.getMessage()]
    assert logged == ["Multi-scale deformable attention on cpu: PyTorch grid_sample path (cpu)"]


def test_dispatch_casts_half_locations_up_and_disables_autocast(monkeypatch):
    seen = {}

    def spy(value, shapes, starts, locations, weights):
        seen.update(value=value.dtype, locations=locations.dtype, weights=weights.dtype,
                    autocast=torch.is_autocast_enabled("cpu"))
        return value.new_zeros(1)

    monkeypatch.setattr(msda, "ms_deform_attn_sample", spy)
    monkeypatch.setitem(msda._backend, "name", "pytorch")
    value, locations, weights = random_inputs([(2, 2)], b=1, nq=1, dtype=torch.bfloat16)
    spatial_shapes, starts = level_layout([(2, 2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        msda.ms_deform_attn(value, spatial_shapes, starts, locations, weights)
    assert seen == {"value": torch.bfloat16, "locations": torch.float32, "weights": torch.float32, "autocast": False}


def test_dispatch_rejects_bad_settings(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        msda.set_ms_deform_attn_backend("cuda")
    monkeypatch.setitem(msda._backend, "name", "fast")   # as DISCO_MS_DEFORM_ATTN_BACKEND=fast would set it
    with pytest.raises(ValueError, match="DISCO_MS_DEFORM_ATTN_BACKEND"):
        msda.ms_deform_attn_backend(torch.device("cpu"))
    if not INTERPRETED:
        monkeypatch.setitem(msda._backend, "name", "triton")
        with pytest.raises(RuntimeError, match="cannot run on cpu"):
            msda.ms_deform_attn_backend(torch.device("cpu"))
        with pytest.raises(RuntimeError, match="kernel runs on CUDA"):
            value, locations, weights = random_inputs([(2, 2)], b=1, nq=1)
            ms_deform_attn_triton(value, *level_layout([(2, 2)]), locations, weights)


# ------------------------------------------------------------------------------------ the kernel's self-check
class _WrongLocationGrad(torch.autograd.Function):
    """The PyTorch path's forward with a backward that drops the locations' gradient (a faulty backward kernel)."""

    @staticmethod
    def forward(ctx, value, locations, weights, shapes, starts):
        ctx.save_for_backward(value, locations, weights, shapes, starts)
        return ms_deform_attn_sample(value, shapes, starts, locations, weights)

    @staticmethod
    def backward(ctx, grad):
        value, locations, weights, shapes, starts = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (value, weights)]
            out = ms_deform_attn_sample(inputs[0], shapes, starts, locations, inputs[1])
            grad_value, grad_weights = torch.autograd.grad(out, inputs, grad)
        return grad_value, torch.zeros_like(locations), grad_weights, None, None


def _scaled_forward(value, shapes, starts, locations, weights):
    return ms_deform_attn_sample(value, shapes, starts, locations, weights) * 1.01


def _dropped_location_grad(value, shapes, starts, locations, weights):
    return _WrongLocationGrad.apply(value, locations, weights, shapes, starts)


def _raises(*args):
    raise RuntimeError("PassManager::run failed (an injected compile error)\nsecond line")


def _auto_with_kernel(monkeypatch, kernel):
    """Backend "auto" on a CPU treated like CUDA with triton (so "auto" tries the kernel), ``kernel`` in place of
    the Triton kernel, no cached verdict; returns the list of the kernel's calls."""
    from disco_detr.modeling.layers import ms_deform_attn_triton as kernel_module

    calls = []

    def spy(*args):
        calls.append(args[0].dtype)
        return kernel(*args)

    monkeypatch.setattr(kernel_module, "ms_deform_attn_triton", spy)
    monkeypatch.setattr(msda, "auto_prefers_triton", lambda device: True)
    monkeypatch.setitem(msda._backend, "name", "auto")
    monkeypatch.setitem(msda._backend, "logged", set())
    monkeypatch.setitem(msda._backend, "verdicts", {})
    return calls


def _self_check_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "self-check" in r.getMessage()]


@pytest.mark.parametrize("kernel,cause", [
    (_scaled_forward, "the forward output differs from the PyTorch path by"),
    (_dropped_location_grad, "the locations gradient differs from the PyTorch path by"),
    (_raises, "the kernel raised RuntimeError: PassManager::run failed (an injected compile error)"),
])
def test_a_faulty_kernel_fails_its_self_check_once_and_the_pytorch_path_runs(monkeypatch, caplog, kernel, cause):
    import logging

    calls = _auto_with_kernel(monkeypatch, kernel)
    shapes = [(5, 7), (3, 3)]
    value, locations, weights = random_inputs(shapes, nq=6, dtype=torch.float32)
    spatial_shapes, starts = level_layout(shapes)
    inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
    with caplog.at_level(logging.INFO, logger="detectron2"):
        outs = [msda.ms_deform_attn(inputs[0], spatial_shapes, starts, inputs[1], inputs[2]) for _ in range(3)]
    warnings = _self_check_warnings(caplog)
    assert len(warnings) == 1 and cause in warnings[0] and "Using the PyTorch path" in warnings[0], warnings
    assert "on cpu (value torch.float32, locations torch.float32)" in warnings[0]
    assert calls == [torch.float32]                  # the check's problem only; the calls took the PyTorch path
    want = ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights)
    assert all(torch.equal(out, want) for out in outs)
    outs[0].sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in inputs)
    verdicts = msda._backend["verdicts"]
    assert list(verdicts) == [("cpu", torch.float32, torch.float32)] and cause in verdicts["cpu", torch.float32,
                                                                                              torch.float32]


def test_the_verdict_is_cached_per_device_and_dtype(monkeypatch):
    checks = []

    def check(device, value_dtype, locations_dtype, heads, head_dim, levels, points):
        checks.append((device.type, value_dtype, locations_dtype, heads, head_dim, levels, points))
        return "an injected mismatch"

    monkeypatch.setattr(msda, "kernel_self_check", check)
    _auto_with_kernel(monkeypatch, _raises)
    shapes = [(2, 3)]
    spatial_shapes, starts = level_layout(shapes)
    for dtype in (torch.float64, torch.float32, torch.float64, torch.float32):
        value, locations, weights = random_inputs(shapes, nq=2, heads=2, head_dim=3, points=4, dtype=dtype)
        msda.ms_deform_attn(value, spatial_shapes, starts, locations, weights)
    # one check per (device, dtypes), on the caller's H, Dh, L, P
    assert checks == [("cpu", torch.float64, torch.float64, 2, 3, 1, 4), ("cpu", torch.float32, torch.float32, 2, 3, 1, 4)]


def test_a_forced_backend_skips_the_self_check(monkeypatch):
    from disco_detr.modeling.layers import ms_deform_attn_triton as kernel_module

    monkeypatch.setattr(msda, "kernel_self_check", lambda *a: pytest.fail("the self-check ran"))
    calls = _auto_with_kernel(monkeypatch, _scaled_forward)
    monkeypatch.setattr(kernel_module, "triton_usable_on", lambda device: True)
    value, locations, weights = random_inputs([(3, 3)], nq=4)
    spatial_shapes, starts = level_layout([(3, 3)])
    want = ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights)
    msda.set_ms_deform_attn_backend("triton")
    assert torch.allclose(msda.ms_deform_attn(value, spatial_shapes, starts, locations, weights), want * 1.01)
    msda.set_ms_deform_attn_backend("pytorch")
    assert torch.equal(msda.ms_deform_attn(value, spatial_shapes, starts, locations, weights), want)
    assert calls == [torch.float64] and msda._backend["verdicts"] == {}


@kernel_case
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_real_kernel_passes_its_self_check_without_a_warning(monkeypatch, caplog, dtype):
    import logging

    calls = _auto_with_kernel(monkeypatch, ms_deform_attn_triton)
    monkeypatch.setattr(msda, "auto_prefers_triton", lambda device: True)
    shapes = [(5, 7), (3, 3), (1, 2)]
    value, locations, weights = random_inputs(shapes, seed=5, nq=7, dtype=torch.float32)
    spatial_shapes, starts = _on(DEVICE, *level_layout(shapes))
    value, locations, weights = _on(DEVICE, value.to(dtype), locations, weights)
    with caplog.at_level(logging.INFO, logger="detectron2"):
        got = msda.ms_deform_attn(value, spatial_shapes, starts, locations, weights)
    assert _self_check_warnings(caplog) == []
    assert any("passed its self-check" in r.getMessage() for r in caplog.records)
    assert calls == [dtype, dtype]                   # the check, then the call itself on the kernel
    want = ms_deform_attn_sample(value.double(), spatial_shapes, starts, locations.double(), weights.double())
    assert (got.double() - want).abs().max() < msda.SELF_CHECK_TOLERANCE[dtype] * max(1.0, want.abs().max())
