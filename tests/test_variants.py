"""The variant table (disco_detr.variants) keeps its promises for every registered variant: its config files
exist, load and build the row's detector class; DisCo's loss weights and feature levels fit the configs; the
tests' shrink builds a detector that runs; the converter takes a state dict; the pre-training entry point
(configs/common/pretrain.py) returns fresh objects. A new row that lacks any of these fails here."""
import inspect
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.config.lazy import _patch_import, _random_package_name
from omegaconf import OmegaConf

from disco_detr.tooling.module_graph import import_graph
from disco_detr.variants import METHODS, VARIANTS, config_path

from conftest import REPO, mixed_size_batch


def _pretrain_module() -> dict:
    """configs/common/pretrain.py executed as LazyConfig does (its relative imports resolved): its namespace."""
    path = config_path("configs/common/pretrain.py")
    namespace = {"__file__": path, "__package__": _random_package_name(path)}
    with _patch_import(), open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)
    return namespace


def _target(node):
    return node._target_


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_config_of_a_variant_exists_and_builds_its_class(name):
    row = VARIANTS[name]
    assert row.name == name
    for path in (row.model_config, row.demo_config, row.finetune_coco_config):
        assert _target(LazyConfig.load(config_path(path)).model) is row.detector, path
    for method in METHODS:
        for path in (row.pretrain_config(method), row.demo_pretrain_config(method)):
            assert os.path.exists(config_path(path)), path
            assert _target(LazyConfig.load(config_path(path)).model.detector) is row.detector, path


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_disco_settings_fit_the_configs(name):
    row = VARIANTS[name]
    assert set(row.disco_loss_weights) == {"weight_rec", "weight_contrast"}
    for preset, levels in (("paper", row.feature_levels), ("demo", row.demo_feature_levels)):
        cfg = _pretrain_module()["pretraining"]("disco", name, preset=preset)
        model = cfg.model
        assert tuple(model.feature_levels) == tuple(levels)
        assert set(levels) <= set(model.detector.backbone.out_features), (preset, levels)
        assert (model.weight_rec, model.weight_contrast) == (row.disco_loss_weights["weight_rec"],
                                                              row.disco_loss_weights["weight_contrast"])
        assert model.detector.num_classes == 2 and model.detector.criterion is None


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_shrunk_detector_builds_and_runs(name):
    row = VARIANTS[name]
    cfg = LazyConfig.load(config_path(row.demo_config))
    features = row.shrink(cfg.model)
    assert set(features) <= set(cfg.model.backbone.out_features)
    torch.manual_seed(0)
    detector = instantiate(cfg.model)
    assert isinstance(detector, row.detector)
    assert sum(p.numel() for p in detector.parameters()) < 1_000_000  # tiny
    detector.train()
    losses = detector(mixed_size_batch(torch.Generator().manual_seed(0)))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    assert VARIANTS[name].two_stage == any(k.endswith("_enc") for k in losses)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_converter_takes_a_state_dict_and_a_reference(name):
    row = VARIANTS[name]
    assert callable(row.converter) and row.converter_source
    inspect.signature(row.converter).bind({}, reference=None)  # converter(state, reference=model)


def test_the_entry_point_builds_fresh_objects_and_siamese_is_disco_without_dmoqf_and_cld():
    ns = _pretrain_module()
    train_before = OmegaConf.to_container(ns["_train"])
    first = ns["pretraining"]("disco", "cond")
    # the imported module-level pieces are not changed by a call
    assert OmegaConf.to_container(ns["_train"]) == train_before
    assert OmegaConf.to_container(ns["_train"]) == OmegaConf.to_container(
        LazyConfig.load(os.path.join(REPO, "configs", "common", "train.py")).train)
    first.train.output_dir = "elsewhere"
    first.model.detector.num_queries = 7
    first.dataloader.train.total_batch_size = 1
    second = ns["pretraining"]("disco", "cond")
    assert second.train.output_dir != "elsewhere" and second.model.detector.num_queries == 300
    assert second.dataloader.train.total_batch_size == 256
    siamese = OmegaConf.to_container(ns["pretraining"]("siamese", "cond").model)
    disco = OmegaConf.to_container(second.model)
    assert siamese == {**disco, "use_dmoqf": False, "weight_contrast": 0.0}
    with pytest.raises(KeyError, match="unknown pre-training method"):
        ns["pretraining"]("moco", "cond")


def test_tools_read_the_table():
    from disco_detr.tooling import demo_runs, gpu_check, studies

    assert set(gpu_check.variant_steps()) == set(VARIANTS) and set(gpu_check.PRETRAIN.values()) <= set(VARIANTS)
    assert demo_runs.variants() == sorted(VARIANTS)
    assert set(demo_runs.METHOD_OF) == set(METHODS) and set(METHODS) <= set(studies.LABELS)


def test_no_runtime_package_imports_the_table():
    """The table sits above the detectors and converters it names: nothing they run imports it."""
    graph = import_graph(os.path.join(REPO, "projects", "DisCoDETR", "disco_detr"))
    importers = sorted(m for m, targets in graph.items() if "disco_detr.variants" in targets)
    assert importers and all(m.startswith("disco_detr.tooling.") for m in importers), importers
