"""The LazyConfig trainer: short runs, kill + resume, evaluation on the demo val split."""
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.structures import Boxes, BoxMode, Instances

from disco_detr.engine import Trainer

from conftest import tiny_config, train_on_one_batch


class _Crash(HookBase):
    def __init__(self, at_iter):
        self.at_iter = at_iter

    def after_step(self):
        if self.trainer.iter == self.at_iter:
            raise RuntimeError("simulated kill")


def _final_weights(output_dir):
    return torch.load(f"{output_dir}/model_final.pth", map_location="cpu", weights_only=True)["model"]


def assert_same_final_weights(reference_dir, run_dir, what="resumed weights"):
    """The two runs' model_final.pth hold bit-identical tensors; returns the second run's."""
    expected, got = _final_weights(str(reference_dir)), _final_weights(str(run_dir))
    assert expected.keys() == got.keys()
    differing = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differing, f"{what} differ from the uninterrupted run: {differing[:5]}"
    return got


def _started(output_dir, extra, *hooks):
    """A trainer of the tiny preset with ``hooks`` registered, loaded for a fresh start (not trained yet)."""
    trainer = Trainer(tiny_config(str(output_dir), *extra))
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=False)
    return trainer


def test_kill_and_resume_gives_identical_weights(demo_root, tmp_path):
    extra = ["train.max_iter=6", "train.checkpointer.period=3", "train.eval_period=0",
             "dataloader.test.dataset.names=disco_demo_val"]
    # uninterrupted
    ref = _started(tmp_path / "ref", extra)
    ref.train()
    assert ref.iter == 6  # detectron2 leaves iter at max_iter after training

    # killed after iteration 4 (last checkpoint: iteration 2), then resumed
    out = str(tmp_path / "killed")
    killed = _started(out, extra, _Crash(at_iter=4))
    with pytest.raises(RuntimeError, match="simulated kill"):
        killed.train()
    resumed = Trainer(tiny_config(out, *extra))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    resumed.train()
    assert resumed.iter == 6

    got = assert_same_final_weights(tmp_path / "ref", out)
    # and training did change the weights
    first = torch.load(f"{out}/model_0000002.pth", map_location="cpu", weights_only=True)["model"]
    assert any(not torch.equal(first[k], got[k]) for k in got)


class _Oracle(torch.nn.Module):
    """Returns the ground truth of each image, in original pixels, as detections."""

    def __init__(self, dataset_name):
        super().__init__()
        self.gt = {d["image_id"]: d for d in DatasetCatalog.get(dataset_name)}

    def forward(self, batched_inputs):
        results = []
        for inp in batched_inputs:
            record = self.gt[inp["image_id"]]
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]]
            inst = Instances((inp["height"], inp["width"]))
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.ones(len(boxes))
            inst.pred_classes = torch.tensor([a["category_id"] for a in record["annotations"]], dtype=torch.int64)
            results.append({"instances": inst})
        return results


def test_evaluation_on_demo_val(demo_root, tmp_path):
    cfg = tiny_config(str(tmp_path))
    oracle = _Oracle("disco_demo_val")
    results = Trainer.test(cfg, oracle)["bbox"]
    assert results["AP"] == pytest.approx(100.0)
    assert results["AP50"] == pytest.approx(100.0)

    # and a real (untrained) model gives finite, low numbers through the same path
    model = Trainer.build_model(cfg)
    model.eval()
    results = Trainer.test(cfg, model)["bbox"]
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= results[key] < 50.0


def test_short_training_lowers_the_loss(demo_root, tmp_path):
    """Overfitting a fixed batch of 4 images: the total loss must drop clearly."""
    cfg = tiny_config(str(tmp_path), "optimizer.lr=1e-3")
    trainer = Trainer(cfg)
    batch = next(iter(trainer._trainer.data_loader))
    losses = train_on_one_batch(trainer.model, batch, 30, optimizer=trainer._trainer.optimizer)
    assert losses[-1] < 0.7 * losses[0], losses


def test_kill_and_resume_with_ema_gives_identical_weights(demo_root, tmp_path):
    """As above with ``train.ema`` on: the EMA weights (restored from the checkpoint's hook state) and hence the
    final checkpoint, which holds them, are bit-identical to the uninterrupted run's."""
    extra = ["train.max_iter=6", "train.checkpointer.period=3", "train.eval_period=0",
             "dataloader.test.dataset.names=disco_demo_val", "train.ema.enabled=True", "train.ema.decay=0.9",
             "train.ema.warmups=2"]
    ref = _started(tmp_path / "ref", extra)
    ref.train()
    out = str(tmp_path / "killed")
    killed = _started(out, extra, _Crash(at_iter=4))
    with pytest.raises(RuntimeError, match="simulated kill"):
        killed.train()
    resumed = Trainer(tiny_config(out, *extra))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3 and resumed.ema.updates == 3
    resumed.train()
    assert resumed.ema.updates == ref.ema.updates == 6
    assert_same_final_weights(tmp_path / "ref", out, "resumed EMA weights")
    # the checkpoint at iteration 2 held raw weights that differ from its own EMA weights
    ckpt = torch.load(f"{out}/model_0000002.pth", map_location="cpu", weights_only=True)
    ema_state = ckpt["trainer"]["hooks"]["EMAHook"]["module"]
    assert any(not torch.equal(ckpt["model"][k], ema_state[k]) for k in ema_state if ema_state[k].is_floating_point())


# ---- preemption-safe checkpoints ------------------------------------------------------------------------
class _Signal(HookBase):
    """Sends this process a real signal during iteration ``at_iter`` (as a cluster would before a kill)."""

    def __init__(self, at_iter, signum):
        self.at_iter, self.signum = at_iter, signum

    def before_step(self):
        if self.trainer.iter == self.at_iter:
            import os

            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_signal_saves_stops_and_resume_is_bit_exact(demo_root, tmp_path, signame):
    import os
    import signal

    from disco_detr.engine.preemption import TrainingStopped

    extra = ["train.max_iter=6", "train.checkpointer.period=100", "train.eval_period=0",
             "dataloader.test.dataset.names=disco_demo_val"]
    _started(tmp_path / "ref", extra).train()
    out = str(tmp_path / "stopped")
    stopped = _started(out, extra, _Signal(at_iter=3, signum=getattr(signal, signame)))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match=f"Received {signame}: saved model_0000003.pth after iteration 3") as e:
        stopped.train()
    assert e.value.code == 128 + getattr(signal, signame)
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000003.pth"
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    resumed = Trainer(tiny_config(out, *extra))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    assert_same_final_weights(tmp_path / "ref", out)


def test_resume_skips_a_truncated_checkpoint_and_names_it(demo_root, tmp_path, caplog):
    import os

    from disco_detr.checkpoint.checkpointer import UnreadableCheckpoint

    out = str(tmp_path / "run")
    extra = ["train.max_iter=4", "train.checkpointer.period=2", "train.eval_period=0",
             "dataloader.test.dataset.names=disco_demo_val"]
    _started(out, extra).train()
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000001.pth", "model_0000003.pth",
                                                                      "model_final.pth"]
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # atomic writes leave no temporary file
    final = os.path.join(out, "model_final.pth")
    with open(final, "r+b") as f:  # what a kill during a plain write would have left
        f.truncate(os.path.getsize(final) // 2)
    os.utime(final, (2e9, 2e9))  # still the newest file
    resumed = Trainer(tiny_config(out, *extra))
    with caplog.at_level("WARNING"):
        resumed.resume_or_load(resume=True)
    assert "Cannot resume from" in caplog.text and "model_final.pth" in caplog.text
    assert resumed.start_iter == 4  # model_0000003.pth: the newest one that loads
    for name in ("model_0000001.pth", "model_0000003.pth"):
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"not a checkpoint")
    with pytest.raises(UnreadableCheckpoint, match="no checkpoint in .* can be read") as e:
        Trainer(tiny_config(out, *extra)).resume_or_load(resume=True)
    for name in ("model_final.pth", "model_0000001.pth", "model_0000003.pth"):
        assert name in str(e.value)
