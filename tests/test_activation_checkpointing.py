"""train.activation_checkpointing (disco_detr.modeling.layers.checkpointing): checkpointed backbone blocks, encoder
and decoder layers give every variant the losses, gradients and buffers of the plain run, bitwise in float64 with
dropout on; each part keeps fewer activations; the trainer passes the setting to the detector."""
import copy

import pytest
import torch
from tiny_detectors import VARIANTS, tiny_detector
from torch import nn

from disco_detr.modeling.layers.checkpointing import CHECKPOINT_PARTS, LayerCheckpointing
from disco_detr.tooling.benchmarks.benchmark_activation_checkpointing import LiveTensorBytes, measure_step

from conftest import mixed_size_batch


def _with_dropout(model, p=0.2):
    """Dropout on everywhere (module and functional attention dropout), so the re-run must redraw the same masks."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = p
    return model


def _step(model, batch):
    """Losses, gradients and buffers after one seeded training forward + backward."""
    model.train()
    torch.manual_seed(123)
    losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return {k: v.detach() for k, v in losses.items()}, grads, buffers


def _assert_equal(actual: dict, expected: dict, what: str):
    assert actual.keys() == expected.keys(), what
    for name in expected:
        assert torch.equal(actual[name], expected[name]), f"{what} {name} differs"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpointing_every_part_changes_no_loss_gradient_or_buffer(variant):
    base = _with_dropout(tiny_detector(variant).double())
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    plain = _step(copy.deepcopy(base), batch)
    model = copy.deepcopy(base)
    model.set_activation_checkpointing(CHECKPOINT_PARTS)
    stacks = [m for m in model.modules() if isinstance(m, LayerCheckpointing)]
    assert stacks and all(m.activation_checkpointing for m in stacks)
    checkpointed = _step(model, batch)
    assert len(plain[1]) > 0.9 * sum(1 for p in base.parameters() if p.requires_grad)
    for got, want, what in zip(checkpointed, plain, ("loss", "gradient", "buffer")):
        _assert_equal(got, want, what)
    # off again: the plain modules run (the backbone's stages are its own nn.Sequential again)
    model.set_activation_checkpointing(())
    assert not any(m.activation_checkpointing for m in stacks)
    assert all(isinstance(s, nn.Sequential) for s in model.backbone.stages)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_part_keeps_fewer_activations(variant):
    model = tiny_detector(variant)
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    plain = measure_step(model, batch)["held"]
    for part in CHECKPOINT_PARTS:
        model.set_activation_checkpointing([part])
        assert measure_step(model, batch)["held"] < plain, part


def test_training_batchnorm_statistics_are_updated_once():
    """RT-DETR's hybrid encoder has training-mode BatchNorm in its CSP blocks: the re-run in backward must not
    move the running statistics a second time."""
    base = tiny_detector("rtdetr")
    batch = mixed_size_batch(torch.Generator().manual_seed(0))
    plain, model = copy.deepcopy(base), copy.deepcopy(base)
    model.set_activation_checkpointing(["encoder"])
    for m in (plain, model):
        m.train()
        sum(m(batch).values()).backward()
    stats = {n: b for n, b in plain.encoder.named_buffers() if "running" in n}
    assert stats and not all(torch.equal(b, base.encoder.get_buffer(n)) for n, b in stats.items())
    for n, b in stats.items():
        assert torch.equal(model.encoder.get_buffer(n), b), n


def test_unknown_part_is_rejected():
    with pytest.raises(ValueError, match="transformer"):
        tiny_detector("cond").set_activation_checkpointing(["transformer"])


def test_live_tensor_bytes_counts_a_storage_once_until_freed():
    x = torch.randn(1000)
    with LiveTensorBytes() as tracker:
        y = x * 2
        view = y.view(10, 100)
        assert tracker.live == 4000
        del y
        assert tracker.live == 4000  # the view keeps the storage
        del view
        assert tracker.live == 0 and tracker.peak == 4000


def test_trainer_passes_the_setting_to_the_detector(tmp_path):
    from disco_detr.engine import Trainer

    from conftest import tiny_config

    cfg = tiny_config(tmp_path, "train.activation_checkpointing=[encoder,decoder]")
    model = Trainer.build_model(cfg)
    assert model.encoder.activation_checkpointing and model.decoder.activation_checkpointing
    assert all(isinstance(s, nn.Sequential) for s in model.backbone.stages)  # the backbone was not named
