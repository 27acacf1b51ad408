"""DisCo DETR pre-training: fusion, losses, weights, transfer, a short run."""
import os

import pytest
import torch
from detectron2.config import instantiate

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.config import load_config

from conftest import REPO, train_on_one_batch

TINY_DISCO = os.path.join(REPO, "tests", "configs", "tiny_disco.py")


def _model(*overrides):
    cfg = load_config(TINY_DISCO, list(overrides))
    torch.manual_seed(0)
    return instantiate(cfg.model), cfg


def _batch(cfg):
    """The first batch of the config's loader, through its batch transform (as the training loop does)."""
    batch = next(iter(instantiate(cfg.dataloader.train)))
    transform = instantiate(cfg.dataloader.batch_transform)
    return batch if transform is None else transform(batch)


def _bare_queries(model, m):
    from disco_detr.modeling.detectors.base import QueryInit

    det = model.detector
    pos = det.query_embed.weight[None].expand(m, -1, -1)
    return QueryInit(torch.zeros_like(pos), pos, det.decoder.reference_points(pos))


def test_fusion_gives_each_query_its_own_proposal_feature():
    model, _ = _model("model.fusion=add")
    n, num_queries, d = 4, model.detector.num_queries, model.detector.d_model
    features = torch.arange(2 * n, dtype=torch.float32).view(2, n, 1).expand(2, n, d).contiguous()
    owner = torch.randint(0, n, (2, num_queries))
    queries = _bare_queries(model, 2)
    fused = model.fuse(queries, features, owner).position - queries.position
    assert torch.allclose(fused[..., 0], features[torch.arange(2)[:, None], owner, 0])
    assert len(torch.unique(fused[0, :, 0])) == len(torch.unique(owner[0]))  # not all proposal 0
    buggy, _ = _model("model.fusion=add_first_proposal")
    queries = _bare_queries(buggy, 2)
    fused_bug = buggy.fuse(queries, features, owner).position - queries.position
    assert torch.allclose(fused_bug[..., 0], features[:, :1, 0].expand(2, num_queries))


def test_matched_outputs_pair_the_same_box():
    from disco_detr.modeling.pretrain.disco import DisCoDETR

    hs = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)
    indices = [(torch.tensor([4, 1, 3]), torch.tensor([2, 0, 1])), (torch.tensor([0, 5, 2]), torch.tensor([0, 1, 2]))]
    out = DisCoDETR.matched_outputs(hs, indices, 3)
    assert out[0, :, 0].tolist() == [1.0, 3.0, 4.0]  # box 0 <- query 1, box 1 <- query 3, box 2 <- query 4
    assert out[1, :, 0].tolist() == [6.0, 11.0, 8.0]


def test_losses_finite_and_decrease_and_zero_weights_remove_them(demo_proposals):
    model, cfg = _model()
    batch = _batch(cfg)
    model.train()
    losses = model(batch)
    for name in ("loss_loc_class", "loss_loc_bbox", "loss_loc_giou", "loss_rec", "loss_enc", "loss_contrast",
                 "loss_rec_0", "loss_loc_bbox_0"):
        assert name in losses and torch.isfinite(losses[name]), name
    totals = train_on_one_batch(model, batch, 25)
    assert totals[-1] < totals[0]

    off, _ = _model("model.weight_contrast=0", "model.weight_enc=0", "model.weight_rec=0")
    assert off.cld is None and off.enc_head is None and off.rec_head is None
    off.train()
    names = set(off(batch))
    assert not any(n.startswith(("loss_contrast", "loss_enc", "loss_rec")) for n in names)
    assert "loss_loc_bbox" in names


def test_backbone_is_frozen_and_siamese_groups_are_fixed(demo_proposals):
    model, cfg = _model("model.use_dmoqf=False")
    assert not any(p.requires_grad for p in model.detector.backbone.parameters())
    centres = torch.rand(3, 4, 2)
    owner = model.assign(centres, _bare_queries(model, 3))
    assert torch.equal(owner[0], owner[2])  # independent of the proposals
    assert owner[0].bincount().tolist() == [3, 3, 3, 3]


def test_transfer_keeps_and_drops_the_documented_keys(tmp_path, caplog):
    from disco_detr.checkpoint.checkpointer import pretrained_to_finetune

    model, _ = _model()
    pre = model.state_dict()
    kept, dropped = pretrained_to_finetune(pre)
    assert set(dropped) == {k for k in pre if not k.startswith("detector.") or k.startswith("detector.class_embed.")}
    assert {k.split(".")[0] for k in dropped} >= {"object_proj", "rec_head", "enc_head", "cld", "detector"}
    path = tmp_path / "pre.pth"
    torch.save({"model": pre}, path)
    torch.manual_seed(1)
    finetune = instantiate(load_config(os.path.join(REPO, "tests", "configs", "tiny_cond.py")).model)
    fresh_class = {k: v.clone() for k, v in finetune.state_dict().items() if k.startswith("class_embed.")}
    with caplog.at_level("INFO"):
        DisCoCheckpointer(finetune).load(str(path))
    after = finetune.state_dict()
    for key, value in after.items():
        if key.startswith("class_embed."):
            assert torch.equal(value, fresh_class[key])  # a new class head, not the object/no-object one
        else:
            assert torch.equal(value, pre["detector." + key]), key
    assert "freshly initialised 2 (class_embed.bias, class_embed.weight)" in caplog.text


def test_disco_config_trains_a_few_iterations(demo_proposals, tmp_path):
    from disco_detr.engine import Trainer

    cfg = load_config(TINY_DISCO, [f"train.output_dir={tmp_path}", "train.max_iter=3"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert os.path.exists(tmp_path / "model_final.pth")
    assert trainer.iter == 3


def test_paper_disco_config_runs_on_cpu(demo_proposals, tmp_path):
    """configs/disco_cond.py itself (R50, 300 queries, n = 10, all four losses) for two
    iterations on the demo's unlabelled images, with small views and a batch of 2."""
    from disco_detr.engine import Trainer

    cfg = load_config(os.path.join(REPO, "configs", "disco_cond.py"), [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "dataloader.train.dataset.names=disco_demo_unlabelled", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.train.mapper.min_sizes=[160]",
        "dataloader.train.mapper.max_size=200", "dataloader.train.mapper.crop_size=64",
        "train.require_backbone_weights=False",  # no SwAV weights here: the random R50 on purpose
    ])
    trainer = Trainer(cfg)
    assert sum(p.numel() for p in trainer.model.cld.parameters()) == 724_480
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(tmp_path / "metrics.json") as f:
        last = [line for line in f if "loss_contrast" in line][-1]
    for name in ("loss_loc_bbox", "loss_rec", "loss_enc", "loss_contrast"):
        assert f'"{name}"' in last


def test_pretraining_kill_and_resume_is_bit_exact(demo_proposals, tmp_path):
    """DisCo pre-training with the colour augmentation and crops on the training device (the paper
    config's pipeline: parameters drawn in the workers from each sample's seed): a run killed in
    iteration 3 and resumed from its checkpoint after iteration 2 ends with the uninterrupted run's weights."""
    from test_trainer import _Crash, assert_same_final_weights

    from disco_detr.engine import Trainer

    extra = ["train.max_iter=4", "train.checkpointer.period=2", "dataloader.train.mapper.photometric=device",
             "dataloader.train.mapper.crops_on_device=True"]
    ref = Trainer(load_config(TINY_DISCO, [f"train.output_dir={tmp_path / 'ref'}", *extra]))
    ref.resume_or_load(resume=False)
    ref.train()
    out = str(tmp_path / "killed")
    killed = Trainer(load_config(TINY_DISCO, [f"train.output_dir={out}", *extra]))
    killed.register_hooks([_Crash(at_iter=2)])
    killed.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="simulated kill"):
        killed.train()
    resumed = Trainer(load_config(TINY_DISCO, [f"train.output_dir={out}", *extra]))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    assert_same_final_weights(tmp_path / "ref", out)


# ---- pre-training health metrics -----------------------------------------------------------------------
def _health_case(model, agree: bool):
    """Bare references, the references two decoder layers used, DMOQF groups and one image's loss matching.
    Groups: query i belongs to proposal i % 3. The matching pairs queries 0, 4, 5 with boxes 0, 1, 0
    (agree=False: owners 0, 1, 2 -> 2 of 3 in their box's group) or 0, 1, 2 (agree=True: 3 of 3)."""
    from disco_detr.modeling.detectors.base import QueryInit

    num_queries = model.detector.num_queries
    gen = torch.Generator().manual_seed(0)
    bare_xy = torch.rand(1, num_queries, 2, generator=gen) * 0.8 + 0.1
    bare = QueryInit(torch.zeros(1, num_queries, 4), torch.zeros(1, num_queries, 4), bare_xy)
    used = torch.stack([bare_xy + torch.tensor([0.03, 0.04]), bare_xy])  # layer 0 moved by 0.05, layer 1 not
    owner = (torch.arange(num_queries) % 3)[None]
    boxes = torch.tensor([0, 1, 2]) if agree else torch.tensor([0, 1, 0])
    return bare, used, owner, [(torch.tensor([0, 4, 5]), boxes)]


def test_health_metrics_by_hand():
    import numpy as np

    model, _ = _model()
    bare, used, owner, indices = _health_case(model, agree=False)
    num_queries = model.detector.num_queries
    m = model.health_metrics(bare, used, owner, indices)
    assert m["group_agreement"] == pytest.approx(2 / 3)
    sizes = np.bincount(np.arange(num_queries) % 3)  # group sizes of boxes 0, 1, 0
    assert m["group_agreement_chance"] == pytest.approx((sizes[0] + sizes[1] + sizes[0]) / (3 * num_queries))
    assert m["reference_offset"] == pytest.approx((0.05 + 0.0) / 2, abs=1e-6)
    xy = bare.reference[0].double().numpy()
    assert m["reference_spread"] == pytest.approx(np.std(xy, axis=0, ddof=1).mean(), rel=1e-5)
    assert m["reference_displacement"] == 0.0  # the first call is the start
    moved = bare.replace(reference=bare.reference + torch.tensor([0.3, 0.4]))
    assert model.health_metrics(moved, used, owner, indices)["reference_displacement"] == pytest.approx(0.5, abs=1e-6)
    # the start survives a checkpoint (a resumed run measures from the same start)
    state = model.state_dict()["health_start_reference"]
    assert torch.equal(state, bare.reference[0])


def test_health_is_logged_at_its_period_and_warns_once_when_groups_sit_at_chance(caplog):
    from detectron2.utils.events import EventStorage

    model, _ = _model("model.health_period=5")
    at_chance = _health_case(model, agree=False)  # 2/3 with chance 1/3 at N = 12 is healthy...
    inert = (at_chance[0], at_chance[1], at_chance[2], [(torch.tensor([1, 2, 4]), torch.tensor([0, 0, 2]))])
    with EventStorage(0) as storage, caplog.at_level("WARNING"):
        for it in range(40):
            storage.iter = it
            model.log_health(*at_chance)
        assert "DMOQF looks inert" not in caplog.text
        logged = [i for _, i in storage.history("pretrain_health/group_agreement").values()]
        assert logged == [0, 4, 9, 14, 19, 24, 29, 34, 39]
        for it in range(40, 80):  # ... queries 1, 2, 4 matched to boxes 0, 0, 2: none in its group
            storage.iter = it
            model.log_health(*inert)
    assert caplog.text.count("DMOQF looks inert") == 1
    # Siamese DETR's groups are fixed on purpose: no warning for them
    siamese, _ = _model("model.use_dmoqf=False", "model.health_period=5")
    caplog.clear()
    with EventStorage(0) as storage, caplog.at_level("WARNING"):
        for it in range(80):
            storage.iter = it
            siamese.log_health(*inert)
    assert "DMOQF looks inert" not in caplog.text
