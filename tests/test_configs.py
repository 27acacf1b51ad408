"""Every config loads and builds its model; overrides and train keys are checked strictly."""
import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from disco_detr.config import load_config
from disco_detr.engine import Trainer

from conftest import REPO, tiny_config

EXPERIMENT_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
ALL_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))


def test_there_are_configs():
    names = {os.path.basename(p) for p in EXPERIMENT_CONFIGS}
    assert {"finetune_cond_voc.py", "finetune_cond_coco.py"} <= names
    assert os.path.exists(os.path.join(REPO, "configs", "demo", "cond.py"))  # the demo preset (configs/demo/)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_loads_and_builds_model(path, tmp_path, monkeypatch):
    if os.path.relpath(path, REPO).startswith(os.path.join("configs", "own")):  # examples: their class-names file
        monkeypatch.chdir(tmp_path)
        os.makedirs(os.path.join("datasets", "my_voc"))
        with open(os.path.join("datasets", "my_voc", "class_names.txt"), "w") as f:
            f.write("_background_\ncat\ndog\n")
    cfg = LazyConfig.load(path)
    if path in EXPERIMENT_CONFIGS:  # a runnable experiment defines every section, nothing else
        assert set(cfg.keys()) == {"model", "optimizer", "dataloader", "train", "lr_multiplier"}, path
    if "model" not in cfg:
        assert os.path.relpath(path, REPO).startswith(os.path.join("configs", "common")), path
        return
    if "num_classes" in cfg.model and cfg.model.num_classes is None:  # from the dataset when training
        cfg.model.num_classes = 3  # (engine/num_classes.py, tests/test_num_classes.py): any count builds here
    model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    if "train" in cfg:  # a schedule in iterations, or in epochs of the loaded dataset
        assert (cfg.train.max_iter or 0) > 0 or (cfg.train.epochs or 0) > 0


def test_paper_schedules():
    voc = LazyConfig.load(os.path.join(REPO, "configs", "finetune_cond_voc.py"))
    coco = LazyConfig.load(os.path.join(REPO, "configs", "finetune_cond_coco.py"))
    # 50 epochs of 16551 (VOC07+12 trainval) / 117266 (COCO train2017) images at batch 64
    assert voc.train.max_iter == 12931  # ceil(50 * 16551 / 64)
    assert coco.train.max_iter == 91615  # ceil(50 * 117266 / 64)
    for cfg in (voc, coco):
        assert cfg.dataloader.train.total_batch_size == 64
        assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 1e-4
        assert cfg.train.clip_grad_norm == 0.1
        assert cfg.model.num_queries == 300
        assert cfg.lr_multiplier.scheduler.milestones[0] / cfg.lr_multiplier.scheduler.milestones[1] == 0.8
    assert voc.model.num_classes == 20 and coco.model.num_classes == 80


def test_unknown_override_key_is_rejected():
    with pytest.raises(KeyError, match="train.max_iters"):
        load_config(os.path.join(REPO, "configs", "demo", "cond.py"), ["train.max_iters=10"])
    cfg = load_config(os.path.join(REPO, "configs", "demo", "cond.py"), ["train.max_iter=10", "+model.extra=1"])
    assert cfg.train.max_iter == 10 and cfg.model.extra == 1


def test_unknown_train_key_is_rejected(tmp_path):
    cfg = tiny_config(str(tmp_path), "+train.eval_perod=5")
    with pytest.raises(KeyError, match="train.eval_perod"):
        Trainer(cfg)


def test_missing_dataset_names_the_folder(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "finetune_cond_voc.py"), [f"train.output_dir={tmp_path}"])
    model = instantiate(cfg.model)  # building the model needs no data
    assert model.num_classes == 20
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        instantiate(cfg.dataloader.train)


def test_optimizer_groups(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "finetune_cond_coco.py"))
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr_wd = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lr_wd[id(p)] = (group["lr"], group["weight_decay"])
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(lr_wd) == len(trainable)
    assert lr_wd[id(model.backbone.res5[0].conv1.weight)] == (1e-5, 1e-4)
    assert lr_wd[id(model.query_embed.weight)] == (1e-4, 1e-4)  # queries are decayed, as in DETR and the release
    assert lr_wd[id(model.decoder.norm.weight)] == (1e-4, 0.0)
    assert lr_wd[id(model.class_embed.weight)] == (1e-4, 1e-4)
    assert not model.backbone.stem.conv1.weight.requires_grad  # freeze_at=2 freezes stem and res2


def test_cpu_device_and_amp_off_on_cpu(tmp_path, demo_root):
    cfg = tiny_config(str(tmp_path), "train.device=auto")
    trainer = Trainer(cfg)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainer.device.type == expected
    assert trainer._trainer.amp is (expected == "cuda" and cfg.train.amp.enabled)
