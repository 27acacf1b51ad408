"""model.num_classes follows the training dataset: None takes its class count, a wrong count fails when the
trainer builds (before any step) and prints the line to add."""
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from disco_detr.data.datasets import DEMO_CLASSES, register_demo_datasets
from disco_detr.engine import Trainer

from conftest import tiny_config

TWENTY = [f"class{i}" for i in range(20)]


@pytest.fixture
def twenty_classes(demo_root):
    """A dataset whose metadata lists 20 classes at registration (as VOC's does): the demo's training images."""
    name = "num_classes_test_20"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: DatasetCatalog.get("disco_demo_train"))
    MetadataCatalog.get(name).set(thing_classes=TWENTY)
    return name


def test_a_count_that_disagrees_fails_at_build_time_with_the_line_to_add(twenty_classes, tmp_path):
    cfg = tiny_config(str(tmp_path), f"dataloader.train.dataset.names={twenty_classes}", "model.num_classes=5")
    with pytest.raises(ValueError, match=r"model.num_classes = 5, but the training dataset 'num_classes_test_20' has "
                                         r"20 classes \(class0, class1, .*\n    model.num_classes = 20\n"):
        Trainer(cfg)


def test_none_takes_the_count_of_the_dataset(twenty_classes, tmp_path):
    cfg = tiny_config(str(tmp_path), f"dataloader.train.dataset.names={twenty_classes}")
    cfg.model.num_classes = None
    trainer = Trainer(cfg)
    assert cfg.model.num_classes == 20
    assert trainer.model.class_embed.weight.shape[0] == 20


def test_coco_json_classes_known_only_after_loading(demo_root, tmp_path):
    """A COCO json's classes enter the metadata when it is loaded: None loads it, a wrong count fails once the
    training loader is built, still before training."""
    register_demo_datasets(demo_root)  # fresh metadata: no thing_classes until loaded
    assert not hasattr(MetadataCatalog.get("disco_demo_train"), "thing_classes")
    n = len(DEMO_CLASSES)
    with pytest.raises(ValueError, match=rf"has {n} classes .*\n    model.num_classes = {n}\n"):
        Trainer(tiny_config(str(tmp_path / "a"), f"model.num_classes={n + 1}"))
    register_demo_datasets(demo_root)
    cfg = tiny_config(str(tmp_path / "b"))
    cfg.model.num_classes = None
    assert Trainer(cfg).model.class_embed.weight.shape[0] == n


def test_deploy_builds_with_the_dataset_count(twenty_classes, tmp_path):
    """predict / export read the training config: None resolves there as in training."""
    import torch
    from detectron2.config import instantiate

    from disco_detr.deploy import build_finetuned_detector

    cfg = tiny_config(str(tmp_path), f"dataloader.train.dataset.names={twenty_classes}", "model.num_classes=20")
    weights = tmp_path / "model_final.pth"
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    cfg.model.num_classes = None
    assert build_finetuned_detector(cfg, str(weights)).class_embed.weight.shape[0] == 20
