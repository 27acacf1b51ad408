"""train.nonfinite: "raise" stops at a NaN loss as detectron2 does; "skip" skips the step on every process.

The two-process case runs this file as a script (``python tests/test_nonfinite.py WORKDIR``) under a timeout: it
launches two GLOO processes through detectron2's ``launch``, each training a toy regression model in DDP through
``DETRTrainLoop``, with a NaN loss (or a FloatingPointError in the forward) injected on rank 1 only.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from disco_detr.engine.trainer import DETRTrainLoop, NonFiniteLossError, Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ITERS = 4
POISONED = 1           # the iteration whose loss is NaN on rank 1
LR = 0.05


class Toy(nn.Module):
    """A linear regression over a batch of dicts {"x": (4,), "y": (3,), "file_name", "poison"}: two loss terms; a
    sample with ``poison="nan"`` makes the loss NaN, ``poison="raise"`` raises FloatingPointError like the
    Hungarian matcher on non-finite predictions. ``unused``: a layer the forward never uses (DDP then needs
    find_unused_parameters=True)."""

    def __init__(self, unused: bool = False):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.unused = nn.Linear(2, 2) if unused else None

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        pred = self.linear(x)
        losses = {"loss_fit": (pred - y).square().mean(), "loss_small": 0.1 * pred.abs().mean()}
        poison = {d.get("poison") for d in batch}
        if "raise" in poison:
            raise FloatingPointError("Matching cost contains NaN/inf; predictions have diverged\nmore")
        if "nan" in poison:
            losses["loss_fit"] = losses["loss_fit"] * float("nan")
        return losses


def sample(it: int, rank: int, poison_rank: int = 1, poison_iters=(POISONED,), kind: str = "nan") -> dict:
    gen = torch.Generator().manual_seed(1000 * it + rank)
    return {"x": torch.randn(4, generator=gen), "y": torch.randn(3, generator=gen), "file_name": f"img_{it}_{rank}.jpg",
            "poison": kind if (rank == poison_rank and it in poison_iters) else None}


def batches(rank: int, **kwargs):
    it = 0
    while True:
        yield [sample(it, rank, **kwargs)]
        it += 1


def reference_weights(skipped=(POISONED,), world=2) -> dict:
    """One process, no DDP: AdamW steps on the mean of the processes' losses, the ``skipped`` iterations left out."""
    torch.manual_seed(0)
    model = Toy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    for it in range(ITERS):
        if it in skipped:
            continue
        optimizer.zero_grad(set_to_none=True)
        total = sum(sum(model([sample(it, r, poison_rank=-1)]).values()) for r in range(world)) / world
        total.backward()
        optimizer.step()
    return model.state_dict()


def _worker(workdir: str) -> None:
    """One process of the two: three DDP runs under "skip" (NaN loss, find_unused_parameters False / True; an
    error in the forward), each saving its weights, skip count, stored counter and rank 0's warnings."""
    from detectron2.utils import comm

    rank = comm.get_rank()
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("detectron2").addHandler(handler)
    logging.getLogger("detectron2").setLevel(logging.INFO)
    for name, find_unused, kind in (("nan", False, "nan"), ("nan_unused", True, "nan"), ("raise", False, "raise")):
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(Toy(unused=find_unused), find_unused_parameters=find_unused)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
        loop = DETRTrainLoop(model, batches(rank, kind=kind), optimizer, clip_grad_norm=0.0,
                             nonfinite="skip", nonfinite_max_consecutive=3)
        records.clear()
        loop.train(0, ITERS)
        counter = [(it, v) for v, it in loop.storage.history("nonfinite_skipped").values()]
        torch.save({"weights": model.module.state_dict(), "skipped": loop.nonfinite_skipped, "counter": counter,
                    "warnings": list(records)}, os.path.join(workdir, f"{name}_rank{rank}.pt"))
    # both processes leave together with the process group torn down: a gloo thread still running at exit aborts
    # the process ("terminate called without an active exception")
    comm.synchronize()
    torch.distributed.destroy_process_group()


def test_a_nan_on_one_of_two_processes_skips_the_step_on_both(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [os.path.join(REPO, "projects", "DisCoDETR"), REPO, os.environ.get("PYTHONPATH", "")]))
    for _ in range(2):  # a gloo thread alive at a process's exit can abort it after its work is done: one retry
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or "terminate called without an active exception" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    want = reference_weights()
    taken = reference_weights(skipped=())
    for name, what in (("nan", "loss_fit=nan, loss_small="), ("nan_unused", "loss_fit=nan, loss_small="),
                       ("raise", "FloatingPointError in the forward: Matching cost contains NaN/inf")):
        ranks = [torch.load(tmp_path / f"{name}_rank{r}.pt", weights_only=True) for r in range(2)]
        assert set(ranks[0]["weights"]) == {"linear.weight", "linear.bias"} | (
            {"unused.weight", "unused.bias"} if name == "nan_unused" else set())
        for k in ranks[0]["weights"]:
            assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), (name, k)
        for k in want:
            assert torch.allclose(ranks[0]["weights"][k], want[k], rtol=0, atol=1e-6), (name, k)
        # the step would have changed the weights (the comparison above can tell)
        assert any(not torch.allclose(want[k], taken[k], rtol=0, atol=1e-4) for k in want)
        assert [r["skipped"] for r in ranks] == [1, 1]
        assert ranks[0]["counter"] == [(0, 0.0), (1, 1.0), (2, 1.0), (3, 1.0)], name
        warnings, others = ([w for w in r["warnings"] if "train.nonfinite" in w] for r in ranks)
        assert len(warnings) == 1 and others == [], (name, warnings, others)   # rank 0 logs for both
        assert f"non-finite loss at iteration {POISONED}" in warnings[0]
        assert f"rank 1: {what}" in warnings[0] and f"images: img_{POISONED}_1.jpg" in warnings[0], warnings[0]
        assert "rank 0" not in warnings[0]       # rank 0's loss was finite


# ------------------------------------------------------------------------------------------ one process
def _poison_from(trainer, first_iter: int):
    """NaN loss terms from iteration ``first_iter`` on, through a forward hook on the trainer's model."""

    def hook(module, inputs, losses):
        if trainer.iter < first_iter:
            return losses
        return {k: v * float("nan") for k, v in losses.items()}

    trainer.model.register_forward_hook(hook)


def test_consecutive_skips_save_a_checkpoint_and_stop(demo_root, tmp_path):
    from conftest import tiny_config

    out = tmp_path / "run"
    cfg = tiny_config(str(out), "train.max_iter=10", "train.eval_period=0", "train.log_period=1",
                      "train.checkpointer.period=100", "train.nonfinite=skip", "train.nonfinite_max_consecutive=3",
                      "dataloader.test.dataset.names=disco_demo_val")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    _poison_from(trainer, 2)
    with pytest.raises(NonFiniteLossError, match=r"NaN or inf at 3 iterations in a row \(2 to 4"):
        trainer.train()
    saved = torch.load(out / "model_0000004.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 4
    live = trainer.model.state_dict()
    assert all(torch.equal(saved["model"][k], live[k]) for k in live)
    assert not (out / "model_final.pth").exists()
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    counted = {r["iteration"]: r["nonfinite_skipped"] for r in records if "nonfinite_skipped" in r}
    assert counted == {0: 0, 1: 0, 2: 1, 3: 2, 4: 3}
    assert all(math.isfinite(r["total_loss"]) for r in records if "total_loss" in r)
    # --resume continues after the skipped batches
    resumed = Trainer(tiny_config(str(out), "train.max_iter=10", "train.nonfinite=skip"))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 5


def test_raise_stops_with_detectron2s_floating_point_error(demo_root, tmp_path):
    from conftest import tiny_config

    trainer = Trainer(tiny_config(str(tmp_path), "train.max_iter=4", "train.eval_period=0"))
    trainer.resume_or_load(resume=False)
    _poison_from(trainer, 1)
    with pytest.raises(FloatingPointError, match="Loss became infinite or NaN at iteration=1") as info:
        trainer.train()
    assert not isinstance(info.value, NonFiniteLossError)


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class _FiniteLossInfGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, batch):
        return {"loss": _InfGrad.apply(self.w).sum()}


def test_under_skip_a_finite_loss_with_inf_gradients_stays_the_grad_scalers():
    model = _FiniteLossInfGrad()
    loop = DETRTrainLoop(model, iter(lambda: [{}], None), torch.optim.SGD(model.parameters(), lr=0.1),
                         clip_grad_norm=0.0, nonfinite="skip")
    loop.grad_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)   # what float16 AMP on CUDA uses
    loop.train(0, 2)
    assert loop.nonfinite_skipped == 0
    assert loop.grad_scaler.get_scale() == 256.0                         # halved at each of the two steps
    assert torch.equal(model.w.detach(), torch.ones(3))                  # the scaler skipped both optimizer steps


def test_bad_settings_are_refused():
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="train.nonfinite must be one of"):
        DETRTrainLoop(model, iter([]), optimizer, nonfinite="ignore")
    with pytest.raises(ValueError, match="nonfinite_max_consecutive must be at least 1"):
        DETRTrainLoop(model, iter([]), optimizer, nonfinite="skip", nonfinite_max_consecutive=0)


if __name__ == "__main__":
    from detectron2.engine import launch

    launch(_worker, 2, dist_url="auto", args=(sys.argv[1],))
