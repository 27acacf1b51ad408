"""Issue 7, the fidelity review of DisCo pre-training: each fix held by a test that fails on the old code."""
import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.config import LazyConfig, instantiate
from torch import nn

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.config import load_config
from disco_detr.engine import Trainer
from disco_detr.modeling.pretrain.disco import DisCoDETR
from disco_detr.modeling.pretrain.heads import CLDHeads, EncoderConsistencyHead, SyncBatchNorm1d
from disco_detr.modeling.pretrain.losses import reconstruction_loss

from conftest import REPO, tiny_config

TINY_DISCO = os.path.join(REPO, "tests", "configs", "tiny_disco.py")


# ---- 1. L_rec is 2 - 2 cos per box, summed over channels ------------------------------------
@pytest.mark.parametrize("channels", [3, 2048])
def test_reconstruction_loss_is_two_minus_two_cos_per_box(channels):
    gen = torch.Generator().manual_seed(channels)
    pred = torch.randn(2, 5, channels, generator=gen, dtype=torch.float64)
    target = torch.randn(2, 5, channels, generator=gen, dtype=torch.float64)
    expected = 0.0
    for b in range(2):
        for k in range(5):
            p, t = pred[b, k].tolist(), target[b, k].tolist()
            dot = sum(x * y for x, y in zip(p, t))
            cos = dot / math.sqrt(sum(x * x for x in p) * sum(y * y for y in t))
            expected += 2 - 2 * cos
    expected /= 10
    loss = reconstruction_loss(pred, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() > 0.5  # random vectors: cos ~ 0, so ~2 per box, not ~2 / C


def test_reconstruction_loss_by_hand():
    pred = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, -1.0, 0.0]]])
    # box 1: cos = 1/sqrt(2) -> 2 - sqrt(2); box 2: cos = -1 -> 4
    assert reconstruction_loss(pred, target).item() == pytest.approx((2 - math.sqrt(2) + 4) / 2, rel=1e-6)


# ---- 2/3. Tables 3 and 4: every row's config builds the method it is named after ------------
# config -> (DMOQF, f_proj, f_pred, lambda_3, queries, fusion, detector); None = no CLD heads
TABLE = {
    # Table 3, Conditional DETR (300 queries)
    "siamese_cond.py": (False, None, None, 0.0, 300, "add", "ConditionalDETR"),
    "ablations/disco_cond_dmoqf_only.py": (True, None, None, 0.0, 300, "add", "ConditionalDETR"),
    "ablations/disco_cond_cld_only.py": (False, True, True, 2.0, 300, "add", "ConditionalDETR"),
    "disco_cond.py": (True, True, True, 2.0, 300, "add", "ConditionalDETR"),
    # Table 4, Conditional DETR (100 queries)
    "siamese_cond_q100.py": (False, None, None, 0.0, 100, "add", "ConditionalDETR"),
    "ablations/disco_cond_q100_cld_neither.py": (True, False, False, 2.0, 100, "add", "ConditionalDETR"),
    "ablations/disco_cond_q100_cld_proj_only.py": (True, True, False, 2.0, 100, "add", "ConditionalDETR"),
    "ablations/disco_cond_q100_cld_pred_only.py": (True, False, True, 2.0, 100, "add", "ConditionalDETR"),
    "disco_cond_q100.py": (True, True, True, 2.0, 100, "add", "ConditionalDETR"),
}


def _built_row(model: DisCoDETR):
    cld = model.cld
    proj = None if cld is None else not isinstance(cld.projector, nn.Identity)
    pred = None if cld is None else not isinstance(cld.predictor, nn.Identity)
    return (model.use_dmoqf, proj, pred, model.weights["contrast"] if cld is not None else 0.0,
            model.detector.num_queries, model.fusion, type(model.detector).__name__)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_table_rows_build_what_they_are_named_after(name):
    cfg = LazyConfig.load(os.path.join(REPO, "configs", name))
    model = instantiate(cfg.model)
    assert _built_row(model) == TABLE[name]
    assert model.weights["rec"] == 5.0 and model.weights["enc"] == 10.0  # lambda_0, lambda_1 (Conditional)


def test_every_pretraining_config_is_in_the_table():
    """A new ablation config must join TABLE (so no row moves silently)."""
    names = []
    for root in ("", "ablations"):
        folder = os.path.join(REPO, "configs", root)
        for f in sorted(os.listdir(folder)):
            if f.endswith(".py") and f.split("_")[0] in ("disco", "siamese") and "_cond" in f:
                names.append(os.path.join(root, f) if root else f)
    assert sorted(names) == sorted(TABLE)


# ---- 5. a frozen backbone without weights is refused; fine-tuning without weights warns -----
def test_pretraining_without_backbone_weights_is_an_error(demo_proposals, tmp_path):
    cfg = load_config(TINY_DISCO, [f"train.output_dir={tmp_path}", "train.require_backbone_weights=True"])
    trainer = Trainer(cfg)
    assert trainer.checkpointer.require_backbone_weights is True  # the train key reaches the checkpointer
    with pytest.raises(ValueError, match="train.init_checkpoint is empty.*convert_torchvision_resnet"):
        trainer.resume_or_load(resume=False)
    # a checkpoint without the backbone's weights is refused too, naming the file
    model = instantiate(cfg.model)
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("detector.backbone.")}
    path = tmp_path / "no_backbone.pth"
    torch.save({"model": partial}, path)
    with pytest.raises(ValueError, match="no_backbone.pth.*frozen backbone"):
        DisCoCheckpointer(model, require_backbone_weights=True).load(str(path))


def test_finetuning_without_weights_warns(demo_root, tmp_path, caplog):
    trainer = Trainer(tiny_config(str(tmp_path)))
    with caplog.at_level("WARNING", logger="detectron2"):
        trainer.resume_or_load(resume=False)
    assert "No pre-trained weights" in caplog.text


# ---- 6. transfer with another query count -------------------------------------------------
def test_transfer_query_count_mismatch_is_an_error_or_fresh_on_purpose(tmp_path):
    pre = instantiate(load_config(TINY_DISCO, ["model.detector.num_queries=8"]).model)
    path = tmp_path / "pre.pth"
    torch.save({"model": pre.state_dict()}, path)
    finetune = instantiate(tiny_config(str(tmp_path)).model)  # 12 queries
    with pytest.raises(ValueError, match=r"query_embed.weight: \[8, 32\] in the checkpoint, \[12, 32\] in the model"):
        DisCoCheckpointer(finetune, str(tmp_path / "a")).load(str(path))
    before = finetune.query_embed.weight.clone()
    DisCoCheckpointer(finetune, str(tmp_path / "b"), transfer_mismatch="fresh").load(str(path))
    assert torch.equal(finetune.query_embed.weight, before)  # left as initialised
    report = json.loads((tmp_path / "b" / "transfer_report.json").read_text())
    assert report["mismatched"] == [{"key": "query_embed.weight", "checkpoint_shape": [8, 32], "model_shape": [12, 32]}]
    assert "query_embed.weight" in report["fresh"] and "query_embed.weight" not in report["kept"]
    assert "class_embed.weight" in report["fresh"] and "detector.class_embed.weight" in report["dropped"]
    assert "encoder.layers.0.self_attn.q_proj.weight" in report["kept"]
    assert any(k.startswith("cld.") for k in report["dropped"])


def test_q100_finetuning_configs_fit_q100_pretraining():
    for ds in ("voc", "coco"):
        cfg = LazyConfig.load(os.path.join(REPO, "configs", f"finetune_cond_{ds}_q100.py"))
        assert cfg.model.num_queries == 100


# ---- 7. BN per view, synchronised; hidden width; weight decay; epoch schedule -----------------
def test_cld_and_enc_heads_normalise_each_view_on_its_own():
    """Per-view BN removes a constant shift of one view entirely; one BN over both views would not."""
    torch.manual_seed(0)
    for head in (CLDHeads(16), EncoderConsistencyHead(16, hidden=256)):
        head.train()
        q1, q2 = torch.randn(6, 16), torch.randn(6, 16)
        shift = torch.randn(1, 16) * 5
        if isinstance(head, CLDHeads):  # bias-free first Linear: a constant shift is a per-channel constant
            assert torch.allclose(head(q1, q2), head(q1, q2 + shift), atol=1e-5)
        else:  # the first Linear has a bias, still a per-channel constant
            assert torch.allclose(head(q1, q2), head(q1, q2 + shift), atol=1e-5)
    enc = EncoderConsistencyHead(16)
    assert enc.projector[0].out_features == 256  # the released width
    assert all(isinstance(m, SyncBatchNorm1d) for m in enc.modules() if isinstance(m, nn.BatchNorm1d))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync_bn_worker(rank, port, x, grad_out, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        bn = SyncBatchNorm1d(x.shape[1])
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 1.5, x.shape[1]))
            bn.bias.copy_(torch.linspace(-1, 1, x.shape[1]))
        half = x.shape[0] // 2
        xi = x[rank * half:(rank + 1) * half].clone().requires_grad_(True)
        out = bn(xi)
        (out * grad_out[rank * half:(rank + 1) * half]).sum().backward()
        torch.save({"out": out.detach(), "grad": xi.grad, "running_var": bn.running_var,
                    "weight_grad": bn.weight.grad}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _reference_batchnorm():
    """nn.BatchNorm1d(5) with the affine parameters the workers give SyncBatchNorm1d."""
    ref = nn.BatchNorm1d(5)
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 1.5, 5))
        ref.bias.copy_(torch.linspace(-1, 1, 5))
    return ref


def test_sync_batchnorm_over_two_processes_equals_one_batchnorm(tmp_path):
    torch.manual_seed(1)
    x, grad_out = torch.randn(8, 5) * 3 + 1, torch.randn(8, 5)
    mp.spawn(_sync_bn_worker, args=(_free_port(), x, grad_out, str(tmp_path)), nprocs=2, join=True)
    ref = _reference_batchnorm()
    xr = x.clone().requires_grad_(True)
    out = ref(xr)
    (out * grad_out).sum().backward()
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(torch.cat([p["out"] for p in parts]), out.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([p["grad"] for p in parts]), xr.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(parts[0]["running_var"], ref.running_var, atol=1e-5, rtol=0)
    # parameter gradients are per process; DDP averages them, so their mean x 2 = the full-batch gradient
    torch.testing.assert_close(parts[0]["weight_grad"] + parts[1]["weight_grad"], ref.weight.grad, atol=1e-5, rtol=0)
    # and with one process it is exactly nn.BatchNorm1d
    single = SyncBatchNorm1d(5)
    single.load_state_dict(ref.state_dict())
    torch.testing.assert_close(single(x), ref(x))


def test_sync_batchnorm_over_two_processes_keeps_the_variance_of_offset_features(tmp_path):
    """Features whose mean is far from zero (|mean| >> std, as pooled encoder features can be): the two-pass
    statistics give BatchNorm1d's output; E[x^2] - E[x]^2 in float32 would lose the variance to rounding."""
    torch.manual_seed(2)
    x, grad_out = torch.randn(8, 5) * 3 + 1000, torch.randn(8, 5)
    mp.spawn(_sync_bn_worker, args=(_free_port(), x, grad_out, str(tmp_path)), nprocs=2, join=True)
    ref = _reference_batchnorm()
    out = ref(x)
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(torch.cat([p["out"] for p in parts]), out.detach(), atol=1e-3, rtol=0)


def test_epoch_schedule_follows_the_loaded_dataset(demo_root, tmp_path):
    from detectron2.data import DatasetCatalog

    cfg = tiny_config(str(tmp_path), "train.max_iter=null", "train.epochs=2")
    trainer = Trainer(cfg)
    num_images = len(DatasetCatalog.get("disco_demo_train"))
    assert trainer.max_iter == math.ceil(2 * num_images / cfg.dataloader.train.total_batch_size)
    disco = LazyConfig.load(os.path.join(REPO, "configs", "disco_cond.py"))
    assert disco.train.epochs == 60 and disco.train.max_iter is None
    milestones = disco.lr_multiplier.scheduler.milestones
    assert milestones[0] / milestones[1] == pytest.approx(2 / 3, abs=1e-5)
