"""docs/own_data.md stays true: its ```bash commands run, in order, on generated photos and a labelme-style VOC
export (tiny sizes and 2 iterations appended as overrides); plus the pieces they stand on (class-names files,
preset(), the small preset's sizes and fine-tuning counterpart, the printed hint)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog

from disco_detr.checkpoint.transfer import finetune_configs_for, matching_finetune_configs
from disco_detr.config import preset, preset_path, pretraining_config
from disco_detr.data import read_class_names, register_unlabelled_images, register_voc_dataset
from disco_detr.tooling.pretrain_on_folder import finetune_hint, folder_config
from disco_detr.variants import METHODS, VARIANTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(REPO, "docs", "own_data.md")
CLASSES = ("cat", "dog")

# appended to the page's commands so that they take seconds: 2 iterations of 2 small images, no backbone weights
_TINY_TRAIN = ["train.max_iter=2", "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
               "dataloader.train.mapper.min_sizes=[96]", "dataloader.train.mapper.max_size=128"]
_TINY_TEST = ["dataloader.test.mapper.min_sizes=[96]", "dataloader.test.mapper.max_size=128"]
TINY = {
    "tools/pretrain_on_folder.py": _TINY_TRAIN + ["dataloader.train.mapper.crop_size=32", "train.init_checkpoint=",
                                                  "train.require_backbone_weights=False"],
    "tools/lazyconfig_train_net.py": _TINY_TRAIN + _TINY_TEST + ["dataloader.train.mapper.crop_resize_sizes=[64,80]",
                                                                 "dataloader.train.mapper.crop_size=[48,80]"],
    "tools/visualize_pretrain_data.py": [],
    "tools/predict.py": _TINY_TEST,
    "tools/export_model.py": [],
}
#: options put right after the script (before the overrides, which run to the end of the line); the export runs
#: its parity check, which compares per query and pairs the top-k within tied scores (a 2-iteration model's)
OPTIONS = {"tools/pretrain_on_folder.py": ["--proposal-workers", "1"]}


def page_commands(path: str = PAGE) -> list[list[str]]:
    """The commands of the page's ```bash blocks, in order, as argument lists."""
    text = open(path, encoding="utf-8").read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line))
    return commands


def _write_photos(folder, count: int, rng) -> list[str]:
    """``count`` 120 x 160 photos of coloured boxes; returns their names."""
    os.makedirs(folder, exist_ok=True)
    names = []
    for i in range(count):
        image = np.full((120, 160, 3), rng.integers(0, 256, 3), np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, 110)), int(rng.integers(0, 80))
            cv2.rectangle(image, (x, y), (x + 40, y + 30), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        names.append(f"photo_{i}.jpg")
        cv2.imwrite(os.path.join(folder, names[-1]), image)
    return names


def _write_labelme_voc(root, rng) -> None:
    """labelme2voc.py's layout: JPEGImages/, Annotations/ and class_names.txt with _background_ first."""
    names = _write_photos(os.path.join(root, "JPEGImages"), 3, rng)
    os.makedirs(os.path.join(root, "Annotations"))
    for k, name in enumerate(names):
        objects = "".join(
            f"<object><name>{CLASSES[(k + j) % 2]}</name><bndbox><xmin>{10 + 50 * j}</xmin><ymin>10</ymin>"
            f"<xmax>{50 + 50 * j}</xmax><ymax>60</ymax></bndbox></object>" for j in range(2))
        xml = (f"<annotation><filename>{name}</filename><size><width>160</width><height>120</height><depth>3"
               f"</depth></size>{objects}</annotation>")
        with open(os.path.join(root, "Annotations", name[:-4] + ".xml"), "w") as f:
            f.write(xml)
    with open(os.path.join(root, "class_names.txt"), "w") as f:
        f.write("_background_\n" + "\n".join(CLASSES) + "\n")


def test_the_page_commands_run_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    for link in ("tools", "configs"):
        os.symlink(os.path.join(REPO, link), tmp_path / link)
    _write_photos(tmp_path / "datasets" / "my_photos", 6, rng)
    (tmp_path / "datasets" / "my_photos" / "broken.jpg").write_text("not an image")
    _write_labelme_voc(str(tmp_path / "datasets" / "my_voc"), rng)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "projects", "DisCoDETR"),
                                                         os.environ.get("PYTHONPATH", "")])}
    commands = page_commands()
    assert [c[1] if c[0] == "python" else c[0] for c in commands] == [
        "tools/pretrain_on_folder.py", "tools/visualize_pretrain_data.py", "cp", "tools/lazyconfig_train_net.py",
        "tools/predict.py", "tools/export_model.py"]
    outputs = []
    for command in commands:
        if command[0] == "python":
            script = command[1]
            command = [sys.executable, script, *OPTIONS.get(script, []), *command[2:], *TINY[script]]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        print(f"{time.perf_counter() - start:.0f} s: {' '.join(command[1:3])}")
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        outputs.append(proc.stdout)

    # pre-training: proposals, the config it used (rerunnable as it is), the checkpoint and the matching fine-tuning
    run = tmp_path / "output" / "my_pretrain"
    assert (run / "proposals_edgeboxes.sqlite").is_file() and (run / "model_final.pth").is_file()
    saved = LazyConfig.load(str(run / "pretrain_config.yaml"))
    assert saved.dataloader.train.dataset.image_root == str(tmp_path / "datasets" / "my_photos")
    assert saved.train.max_iter == 2 and saved.train.finetune_config == "configs/small/cond.py"
    assert "Matching fine-tuning config: configs/small/cond.py" in outputs[0]
    assert matching_finetune_configs(str(run / "model_final.pth")) == ["configs/small/cond.py"]
    assert len(list((tmp_path / "output" / "my_views").glob("*.png"))) == 2  # views of one's own photos
    # fine-tuning from that checkpoint, predictions and an ONNX graph of 480 x 640 (4:3) input
    assert (tmp_path / "output" / "my_finetune" / "model_final.pth").is_file()
    assert (tmp_path / "output" / "my_predictions" / "predictions.json").is_file()
    assert (tmp_path / "output" / "my_detector.onnx").is_file()
    assert "480x640" in outputs[-1]


def test_read_class_names_skips_labelme_background(tmp_path):
    path = tmp_path / "class_names.txt"
    path.write_text("_background_\ncat\n\ndog\n__ignore__\n")
    assert read_class_names(str(path)) == ["cat", "dog"]
    (tmp_path / "empty.txt").write_text("_background_\n")
    with pytest.raises(ValueError, match="names no class"):
        read_class_names(str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match="missing.txt' does not exist"):
        read_class_names(str(tmp_path / "missing.txt"))


def test_the_register_helpers_are_exported_from_disco_detr_data():
    import disco_detr.data as data

    for name in ("register_voc_dataset", "register_coco_dataset", "register_unlabelled_images",
                 "load_unlabelled_folder", "read_class_names"):
        assert name in data.__all__ and callable(getattr(data, name))
    assert register_unlabelled_images.__module__ == "disco_detr.data.pretrain_datasets"


def test_register_voc_dataset_accepts_a_class_names_file(tmp_path):
    rng = np.random.default_rng(1)
    root = str(tmp_path / "voc")
    _write_labelme_voc(root, rng)
    register_voc_dataset("own_data_test_voc", root, None, os.path.join(root, "class_names.txt"), label_splits=False)
    try:
        assert MetadataCatalog.get("own_data_test_voc").thing_classes == list(CLASSES)
        dicts = DatasetCatalog.get("own_data_test_voc")
        assert len(dicts) == 3
        assert sorted({a["category_id"] for d in dicts for a in d["annotations"]}) == [0, 1]
    finally:
        DatasetCatalog.remove("own_data_test_voc")
        MetadataCatalog.remove("own_data_test_voc")


def test_preset_loads_configs_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: names resolve under configs/ all the same
    dataloader, lr_multiplier, model, optimizer, train = preset("small/cond")
    assert model.num_classes is None and train.epochs == 50
    assert tuple(dataloader.train.mapper.min_sizes) == (320, 352, 384, 416, 448, 480)
    assert dataloader.train.mapper.max_size == 640 and tuple(dataloader.test.mapper.min_sizes) == (480,)
    assert preset("demo/cond.py", keys=None).model.num_classes == 5
    with pytest.raises(FileNotFoundError, match="no preset 'small/nope'"):
        preset_path("small/nope")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_small_preset_pretrains_the_demo_detector_and_names_its_finetuning(variant):
    cfg = pretraining_config("disco", variant, "small")
    demo = LazyConfig.load(os.path.join(REPO, VARIANTS[variant].demo_config))
    assert cfg.model.detector.backbone == demo.model.backbone  # the fine-tuning preset's backbone: transfer fits
    assert cfg.train.finetune_config == f"configs/small/{variant}.py"
    assert os.path.isfile(os.path.join(REPO, cfg.train.finetune_config))
    assert tuple(cfg.dataloader.train.mapper.min_sizes) == (320, 352, 384, 416, 448, 480)
    assert cfg.train.epochs == 100 and not cfg.train.max_iter
    assert finetune_configs_for(os.path.join(REPO, "configs", "small", f"detreg_{variant}.py")) == [
        os.path.join(REPO, "configs", "small", f"{variant}.py")]


def test_every_pretraining_preset_names_an_existing_finetuning_config():
    for preset_name in ("paper", "small", "demo"):
        for method in METHODS:
            cfg = pretraining_config(method, "cond", preset_name)
            assert os.path.isfile(os.path.join(REPO, cfg.train.finetune_config)), (preset_name, method)
    q100 = LazyConfig.load(os.path.join(REPO, "configs", "disco_cond_q100.py"))
    assert q100.train.finetune_config == "configs/finetune_cond_coco_q100.py"


def test_folder_config_points_at_the_folder_and_rejects_unknown_keys(tmp_path):
    cfg = folder_config("detreg", "dino", "small", str(tmp_path), str(tmp_path / "p.sqlite"), "out",
                        ["train.epochs=3"])
    assert cfg.dataloader.train.dataset.method == "selective_search"
    assert cfg.dataloader.train.dataset.image_root == str(tmp_path) and cfg.train.epochs == 3
    with pytest.raises(KeyError, match="train.epoch"):
        folder_config("disco", "cond", "small", str(tmp_path), "p.sqlite", "out", ["train.epoch=3"])


def test_finetune_hint_names_the_config_from_the_runs_config_yaml(tmp_path):
    (tmp_path / "config.yaml").write_text("model: {}\ntrain:\n  finetune_config: configs/small/dab.py\n")
    hint = finetune_hint(str(tmp_path / "model_final.pth"))
    assert "Matching fine-tuning config: configs/small/dab.py" in hint and 'preset("small/dab")' in hint
    assert f"train.init_checkpoint={tmp_path / 'model_final.pth'}" in hint
