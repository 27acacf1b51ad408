"""The low-label fine-tuning configs (configs/lowlabel/): DETReg's schedules over the full-data configs, the fold
as an override key, the full val split, and a tiny training run on a demo label split that writes its split file."""
import glob
import json
import math
import os

import pytest
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog

from disco_detr.config import load_config
from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.engine import Trainer
from disco_detr.variants import VARIANTS

from conftest import REPO

LOWLABEL = os.path.join(REPO, "configs", "lowlabel")
#: the variants with low-label configs (the issue asks for these four and D-FINE)
LOWLABEL_VARIANTS = ("cond", "deformable_ms", "dino", "rtdetr", "dfine")
#: DETReg's release (configs/DETReg_fine_tune_*pct_*.sh, README): percent -> (epochs, lr drop epoch)
DETREG = {("coco", 1): (2000, 2000), ("coco", 5): (500, 500), ("coco", 10): (400, 400), ("voc", 10): (200, 150)}
POOL = {"coco": 117266, "voc": 16551}  # train2017 images with a box; VOC07+12 trainval
PARENT = {"coco": "coco_2017_train", "voc": "voc_2007_2012_trainval"}
VAL = {"coco": "coco_2017_val", "voc": "voc_2007_test"}


def _config(variant, bench, pct, *overrides):
    return load_config(os.path.join(LOWLABEL, f"finetune_{variant}_{bench}_{pct}pct.py"), list(overrides))


def test_every_variant_and_setting_has_a_config():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(LOWLABEL, "*.py"))}
    assert names == {f"finetune_{v}_{b}_{p}pct.py" for v in LOWLABEL_VARIANTS
                     for b, p in DETREG}


@pytest.mark.parametrize("variant", LOWLABEL_VARIANTS)
@pytest.mark.parametrize("bench,pct", list(DETREG))
def test_schedule_is_detregs_over_the_full_data_config(variant, bench, pct):
    cfg = _config(variant, bench, pct)
    base = LazyConfig.load(os.path.join(REPO, "configs", f"finetune_{variant}_{bench}.py"))
    epochs, drop = DETREG[(bench, pct)]
    images = math.floor(pct / 100 * POOL[bench])
    assert cfg.train.max_iter == math.ceil(epochs * images / 64)
    assert cfg.dataloader.train.total_batch_size == 64
    # the lr drops after DETReg's drop epoch, or never (a one-value schedule) when it equals the run's length
    values, milestones = list(cfg.lr_multiplier.scheduler["values"]), list(cfg.lr_multiplier.scheduler.milestones)
    if drop < epochs:
        assert values == [1.0, 0.1] and milestones[0] / milestones[1] == pytest.approx(drop / epochs, abs=1e-4)
    else:
        assert values == [1.0] and len(milestones) == 1
    # the base's warm-up, in iterations (RT-DETR's 2000), is kept
    base_warmup = base.lr_multiplier.warmup_length * base.train.max_iter
    assert cfg.lr_multiplier.warmup_length * cfg.train.max_iter == pytest.approx(base_warmup, abs=1)
    # training on fold 0 of the split, evaluation on the full val split; model and optimizer are the base's
    assert cfg.dataloader.train.dataset.names == f"{PARENT[bench]}_{pct}pct_fold0"
    assert cfg.dataloader.test.dataset.names == VAL[bench] == base.dataloader.test.dataset.names
    assert cfg.model == base.model and cfg.optimizer == base.optimizer
    assert cfg.train.eval_period == math.ceil(epochs / 10 * images / 64)


def test_fold_is_an_override_key_that_names_the_split_and_the_run():
    cfg = _config("dino", "coco", 1, "label_split.fold=3")
    assert cfg.dataloader.train.dataset.names == "coco_2017_train_1pct_fold3"
    assert cfg.train.output_dir == "./output/finetune_dino_coco_1pct_fold3"
    assert cfg.dataloader.train.dataset.split_dir == "./output/finetune_dino_coco_1pct_fold3/label_splits"


def test_low_label_config_trains_tiny_on_a_demo_split_and_writes_the_split(demo_root, tmp_path):
    """finetune_cond_coco_10pct.py with the tests' tiny detector (the variant table's shrink), on fold 0 of
    the demo's 10 % split: it trains, evaluates on the full demo val split and writes its split file."""
    out = tmp_path / "run"
    cfg = _config("cond", "coco", 10, f"train.output_dir={out}", "train.max_iter=3", "train.device=cpu",
                  "train.init_checkpoint=", "train.log_period=1", "dataloader.train.total_batch_size=2",
                  "dataloader.train.num_workers=0", "dataloader.test.num_workers=0")
    VARIANTS["cond"].shrink(cfg.model)
    cfg.model.num_classes = len(DEMO_CLASSES)
    # the split's name still reads the fold key; only the parent is the demo's
    cfg.dataloader.train.dataset.names = "disco_demo_train_10pct_fold${label_split.fold}"
    cfg.dataloader.test.dataset.names = "disco_demo_val"
    cfg.dataloader.evaluator.output_dir = str(tmp_path / "inference")
    cfg.dataloader.train.mapper.update(min_sizes=(80, 96), max_size=128, crop_resize_sizes=(80, 96), crop_size=(64, 90))
    cfg.dataloader.test.mapper.update(min_sizes=(96,), max_size=128)
    cfg.train.amp.enabled = False
    Trainer(cfg).train()

    path = out / "label_splits" / "disco_demo_train_10pct_fold0.json"
    written = json.loads(path.read_text())
    ids = [d["image_id"] for d in DatasetCatalog.get("disco_demo_train_10pct_fold0")]
    assert written["name"] == "disco_demo_train_10pct_fold0" and written["fold"] == 0
    assert sorted(written["image_ids"]) == sorted(ids) and len(ids) == max(1, math.floor(0.1 * 16))
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    assert any("bbox/AP" in r for r in records)  # evaluated at the end (on the full val split)
    assert sum(any(k.startswith("loss") for k in r) for r in records) == 3  # log_period 1: three training steps
