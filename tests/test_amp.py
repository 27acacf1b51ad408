"""The mixed-precision policy (modeling/precision.py, engine/trainer.py): under autocast the matrix products run in
the autocast dtype while matching, DMOQF, the criteria, the pre-training losses and deformable attention's
sampling see float32 with autocast off. On CPU under ``torch.autocast("cpu", bfloat16)``; the CUDA cases (the
trainer's own dtype, bf16 or fp16) run where CUDA is available (tools/gpu_check.py runs them)."""
from __future__ import annotations

import itertools
import os

import pytest
import torch
from detectron2.config import instantiate
from torch import nn
from torch.nn import functional as F

from disco_detr.config import load_config
from disco_detr.engine import trainer as trainer_module
from disco_detr.engine.trainer import DETRTrainLoop
from disco_detr.modeling.criterion import set_criterion as criterion_module
from disco_detr.modeling.layers import ms_deform_attn as msda
from disco_detr.modeling.matching import HungarianMatcher
from disco_detr.modeling.pretrain import disco as disco_module
from disco_detr.modeling.pretrain import losses as pretrain_losses

from conftest import REPO, mixed_size_batch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def _dtype(device: str) -> torch.dtype:
    return trainer_module.amp_dtype() if device == "cuda" else torch.bfloat16


class Spies:
    """Records (autocast on?, dtypes) seen inside the float32 parts, and the output dtype of every nn.Linear."""

    def __init__(self, monkeypatch, device_type):
        self.device_type = device_type
        self.seen: dict[str, list] = {}
        self.linear_dtypes: set = set()

        def spy(name, fn):
            def wrapped(*args, **kwargs):
                tensors = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
                self.seen.setdefault(name, []).append(
                    (torch.is_autocast_enabled(device_type), tuple(t.dtype for t in tensors)))
                return fn(*args, **kwargs)
            return wrapped

        monkeypatch.setattr(msda, "ms_deform_attn_sample", spy("deformable sampling", msda.ms_deform_attn_sample))
        monkeypatch.setattr(HungarianMatcher, "cost_matrix", spy("matching", HungarianMatcher.cost_matrix))
        monkeypatch.setattr(criterion_module, "box_losses", spy("criterion box losses", criterion_module.box_losses))
        monkeypatch.setattr(criterion_module, "sigmoid_focal_loss",
                            spy("criterion focal loss", criterion_module.sigmoid_focal_loss))
        monkeypatch.setattr(pretrain_losses, "box_losses", spy("pre-training box losses", pretrain_losses.box_losses))
        monkeypatch.setattr(disco_module, "assign_queries_to_proposals",
                            spy("DMOQF", disco_module.assign_queries_to_proposals))
        monkeypatch.setattr(F, "cosine_similarity", spy("cosine losses", F.cosine_similarity))

    def hook_linears(self, model):
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.register_forward_hook(lambda _m, _i, out: self.linear_dtypes.add(out.dtype))

    def assert_float32(self, *names):
        for name in names:
            assert self.seen.get(name), f"{name} was not called"
            for autocast_on, dtypes in self.seen[name]:
                assert not autocast_on, f"{name} ran under autocast"
                assert all(d == torch.float32 for d in dtypes), f"{name} saw {dtypes}"


def _tiny_dino():
    from test_dino import _tiny

    return _tiny()


@pytest.mark.parametrize("device", DEVICES)
def test_finetuning_policy_under_autocast(monkeypatch, device):
    """Tiny DINO (deformable attention, denoising, Hungarian matching, focal criterion) in training."""
    spies = Spies(monkeypatch, device)
    model = _tiny_dino().to(device).train()
    spies.hook_linears(model)
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    with torch.autocast(device, dtype=_dtype(device)):
        losses = model(batch)
    assert _dtype(device) in spies.linear_dtypes          # the matrix products did run in the autocast dtype
    spies.assert_float32("matching", "criterion box losses", "criterion focal loss")
    # deformable attention: value in the autocast dtype, locations and weights in float32, autocast off
    for autocast_on, (value, locations, weights) in spies.seen["deformable sampling"]:
        assert not autocast_on and (value, locations, weights) == (_dtype(device), torch.float32, torch.float32)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def _benchmark_gpu():
    from disco_detr.tooling.benchmarks import benchmark_gpu

    return benchmark_gpu


@pytest.mark.parametrize("device", DEVICES)
def test_pretraining_policy_under_autocast(monkeypatch, device, tmp_path):
    """Tiny DisCo DETR around DINO on a synthetic paired-view batch (benchmark_gpu's)."""
    spies = Spies(monkeypatch, device)
    cfg = load_config(os.path.join(REPO, "tests", "configs", "tiny_disco_dino.py"), [f"train.output_dir={tmp_path}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    spies.hook_linears(model)
    mapper = cfg.dataloader.train.mapper
    batch = _benchmark_gpu().paired_view_batch(2, int(mapper.num_boxes), 64, 80, 32,
                                               bool(mapper.get("crops_on_device", False)))
    batch = instantiate(cfg.dataloader.batch_transform)(batch.to(device))  # as the training loop does
    with torch.autocast(device, dtype=_dtype(device)):
        losses = model(batch)
    assert _dtype(device) in spies.linear_dtypes
    spies.assert_float32("matching", "pre-training box losses", "DMOQF", "cosine losses")
    assert {"loss_contrast", "loss_enc", "loss_rec"} <= set(losses)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, batch):
        return {"loss_a": self.linear(batch).square().mean(), "loss_b": self.linear(batch).abs().mean()}


@pytest.mark.parametrize("dtype,scaler", [(torch.bfloat16, False), (torch.float16, True)])
def test_loss_scaler_only_for_float16(monkeypatch, dtype, scaler):
    monkeypatch.setattr(trainer_module, "amp_dtype", lambda: dtype)
    model = _Toy()
    loop = DETRTrainLoop(model, itertools.repeat(torch.ones(2, 4)), torch.optim.SGD(model.parameters(), lr=0.1),
                         amp=True)
    assert loop.amp_dtype == dtype
    assert (loop.grad_scaler is not None) == scaler
    eager = DETRTrainLoop(model, [], torch.optim.SGD(model.parameters(), lr=0.1), amp=False)
    assert eager.amp_dtype is None and eager.grad_scaler is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_train_step_sums_losses_in_float32():
    """One DETRTrainLoop step of the tiny DINO on CUDA under the trainer's AMP dtype: finite float32 loss."""
    model = _tiny_dino().cuda().train()
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    loop = DETRTrainLoop(model, itertools.repeat(batch), torch.optim.AdamW(model.parameters(), lr=1e-4), amp=True)
    loss_dict, loss = loop.forward_losses(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(v.dtype == torch.float32 for v in loss_dict.values())
