"""train.compile: torch.compile of the training forward gives the eager losses and gradients, and a variant that
fails to compile falls back to eager with a message naming it.

The equality cases use torch.compile's ``aot_eager`` backend: it traces and compiles through Dynamo and AOTAutograd
(where graph breaks and unsupported code show up) but needs no C++ compiler and compiles in seconds on CPU. The
pre-training case (about 100 s) is marked ``slow`` (deselected in ``make test``; run it with
``pytest tests/test_compile.py -m slow``). The inductor case runs on CUDA only (tools/gpu_check.py runs it; on
this CPU inductor's backward aborted the process), and tools/gpu_check.py measures inductor for every variant.
"""
from __future__ import annotations

import itertools
import logging
import os

import pytest
import torch
from detectron2.config import instantiate

from disco_detr.config import load_config
from disco_detr.engine.trainer import DETRTrainLoop, compile_options

from conftest import REPO, mixed_size_batch, tiny_config


def _tiny_cond(tmp_path):
    cfg = tiny_config(str(tmp_path))
    torch.manual_seed(0)
    return instantiate(cfg.model).train()


def _losses(loop, batch, seed=0):
    torch.manual_seed(seed)
    loss_dict, loss = loop.forward_losses(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in loop.model.named_parameters() if p.grad is not None}
    loop.model.zero_grad(set_to_none=True)
    return {k: v.item() for k, v in loss_dict.items()}, loss.item(), grads


def _assert_same(eager, compiled):
    assert set(eager[0]) == set(compiled[0])
    for name in eager[0]:
        assert compiled[0][name] == pytest.approx(eager[0][name], rel=1e-5, abs=1e-6), name
    assert set(eager[2]) == set(compiled[2])
    for name, g in eager[2].items():
        torch.testing.assert_close(compiled[2][name], g, rtol=1e-4, atol=1e-6, msg=name)


def _loop(model, compile_kwargs):
    return DETRTrainLoop(model, itertools.repeat(None), torch.optim.SGD(model.parameters(), lr=0.0),
                         compile_kwargs=compile_kwargs)


def test_compiled_finetuning_forward_matches_eager(tmp_path):
    torch._dynamo.reset()
    model = _tiny_cond(tmp_path)
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    eager = _losses(_loop(model, None), batch)
    loop = _loop(model, {"backend": "aot_eager"})
    compiled = _losses(loop, batch)
    assert loop.compiled_forward is not None and loop.compile_error is None   # it did compile, no fallback
    _assert_same(eager, compiled)


@pytest.mark.slow
def test_compiled_pretraining_forward_matches_eager(tmp_path):
    """Tiny DisCo DETR (Conditional DETR) on a synthetic paired-view batch. About 100 s on 2 shared CPU cores: slow."""
    from test_amp import _benchmark_gpu

    torch._dynamo.reset()
    cfg = load_config(os.path.join(REPO, "tests", "configs", "tiny_disco.py"), [f"train.output_dir={tmp_path}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    mapper = cfg.dataloader.train.mapper
    batch = _benchmark_gpu().paired_view_batch(2, int(mapper.num_boxes), 64, 80, 32,
                                               bool(mapper.get("crops_on_device", False)))
    batch = instantiate(cfg.dataloader.batch_transform)(batch)  # as the training loop does, before the forward
    eager = _losses(_loop(model, None), batch)
    loop = _loop(model, {"backend": "aot_eager"})
    compiled = _losses(loop, batch)
    assert loop.compiled_forward is not None and loop.compile_error is None
    _assert_same(eager, compiled)


def test_a_failing_compile_falls_back_to_eager_with_a_message(tmp_path, caplog):
    torch._dynamo.reset()

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("this backend cannot compile anything")

    model = _tiny_cond(tmp_path)
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    eager = _losses(_loop(model, None), batch)
    loop = _loop(model, {"backend": broken_backend})
    with caplog.at_level(logging.WARNING, logger="detectron2"):
        fallback = _losses(loop, batch)
        again = _losses(loop, batch)            # later steps stay eager, without a second message
    messages = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and "train.compile" in r.getMessage()]
    assert len(messages) == 1
    assert "ConditionalDETR does not compile" in messages[0] and "cannot compile anything" in messages[0]
    assert loop.compiled_forward is None and "BackendCompilerFailed" in loop.compile_error
    _assert_same(eager, fallback)
    _assert_same(eager, again)


def test_model_errors_are_not_swallowed_by_the_fallback(tmp_path):
    """A ValueError raised by the model itself (not by the compiler) reaches the caller."""
    torch._dynamo.reset()
    model = _tiny_cond(tmp_path)
    loop = _loop(model, {"backend": "eager"})               # Dynamo alone: the error comes from tracing the model
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    batch[0]["instances"].gt_classes[:] = 10_000            # out of range class
    with pytest.raises(Exception) as info:
        loop.forward_losses(batch)
    assert not isinstance(info.value, torch._dynamo.exc.BackendCompilerFailed)
    assert loop.compile_error is None


def test_compile_options_from_the_config():
    assert compile_options({"enabled": False, "backend": "inductor", "mode": None}) is None
    assert compile_options({"enabled": True, "backend": "inductor", "mode": None}) == {"backend": "inductor"}
    assert compile_options({"enabled": True, "backend": "inductor", "mode": "max-autotune"}) == {
        "backend": "inductor", "mode": "max-autotune"}
    with pytest.raises(KeyError, match="fullgraph"):
        compile_options({"enabled": True, "fullgraph": True})
    cfg = load_config(os.path.join(REPO, "configs", "demo", "cond.py"), [])
    assert compile_options(cfg.train.compile) is None          # off by default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (inductor on this CPU aborts, see below)")
def test_inductor_compiles_the_tiny_detector_on_cuda(tmp_path):
    """The default backend (inductor, Triton code on CUDA) on the tiny detector: no fallback, the eager loss.
    On CPU (2026-12-02, torch 2.14.1) this case aborted the whole process (``Fatal Python error: Aborted``) in
    ``aten.convolution_backward`` called from inductor's generated backward with channels-last strides: a crash
    in PyTorch that no fallback can catch, so the case runs on CUDA only (tools/gpu_check.py runs it)."""
    torch._dynamo.reset()
    model = _tiny_cond(tmp_path).cuda()
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    eager = _losses(_loop(model, None), batch)
    loop = _loop(model, {"backend": "inductor"})
    compiled = _losses(loop, batch)
    assert loop.compile_error is None and loop.compiled_forward is not None
    assert compiled[1] == pytest.approx(eager[1], rel=1e-4)
