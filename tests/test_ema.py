"""EMA of the weights (engine/ema.py, ``train.ema``): the update rule against a hand computation, and the
trainer's use of it (evaluation and the final checkpoint see the EMA weights)."""
import math

import torch
from torch import nn

from disco_detr.engine import Trainer
from disco_detr.engine.ema import ModelEMA, ema_decay

from conftest import tiny_config


def test_decay_schedule_by_hand():
    # 0.9 * (1 - e^(-1/2)) = 0.9 * 0.3934693402873666
    assert math.isclose(ema_decay(1, 0.9, 2), 0.35412240625862994, rel_tol=1e-12)
    assert math.isclose(ema_decay(4, 0.9999, 2000), 0.9999 * (1 - math.exp(-0.002)), rel_tol=1e-12)
    assert ema_decay(7, 0.99, 0) == 0.99
    assert ema_decay(10 ** 6, 0.9999, 2000) == 0.9999


def test_update_rule_against_hand_computation():
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
        model[0].bias.fill_(0.5)
        model[1].running_mean.fill_(3.0)
    ema = ModelEMA(model, decay=0.9, warmups=2)
    steps = [(torch.tensor([[3.0, 1.0]]), -1.0, 5.0, 7), (torch.tensor([[-1.0, 4.0]]), 2.0, -3.0, 11)]
    w, b, rm = [1.0, -2.0], 0.5, 3.0
    for t, (weight, bias, mean, counter) in enumerate(steps, start=1):
        with torch.no_grad():
            model[0].weight.copy_(weight)
            model[0].bias.fill_(bias)
            model[1].running_mean.fill_(mean)
            model[1].num_batches_tracked.fill_(counter)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-t / 2))
        w = [d * a + (1 - d) * c for a, c in zip(w, weight[0].tolist())]
        b = d * b + (1 - d) * bias
        rm = d * rm + (1 - d) * mean
        state = ema.module.state_dict()
        assert torch.allclose(state["0.weight"], torch.tensor([w], dtype=torch.float64), atol=1e-14, rtol=0)
        assert math.isclose(state["0.bias"].item(), b, abs_tol=1e-14)
        assert math.isclose(state["1.running_mean"].item(), rm, abs_tol=1e-14)
        assert state["1.num_batches_tracked"].item() == counter  # integer buffers are copied
    assert ema.updates == 2
    # the EMA copy is frozen and separate from the model
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    # state round trip
    other = ModelEMA(model, decay=0.9, warmups=2)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 2 and torch.equal(other.module[0].weight, ema.module[0].weight)


def test_trainer_evaluates_and_saves_the_ema_weights(demo_root, tmp_path, monkeypatch):
    out = str(tmp_path / "ema")
    trainer = Trainer(tiny_config(out, "train.max_iter=3", "train.eval_period=0", "train.checkpointer.period=100",
                                  "train.ema.enabled=True", "train.ema.decay=0.9", "train.ema.warmups=1",
                                  "dataloader.test.dataset.names=disco_demo_val"))
    evaluated = []
    monkeypatch.setattr(Trainer, "test", classmethod(lambda cls, cfg, model, evaluators=None: evaluated.append(model)
                                                     or {}))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.ema.updates == 3
    assert evaluated and evaluated[-1] is trainer.ema.module
    final = torch.load(f"{out}/model_final.pth", map_location="cpu", weights_only=True)["model"]
    ema_state = trainer.ema.module.state_dict()
    assert all(torch.equal(final[k], ema_state[k].cpu()) for k in final)
    assert "EMAHook" in torch.load(f"{out}/model_final.pth", map_location="cpu", weights_only=True)["trainer"]["hooks"]
