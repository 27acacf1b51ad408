"""Pre-training -> fine-tuning transfer: what the report counts, and which transfers are refused.

The newcomer's case: a DisCo checkpoint of the demo preset (MobileNetV2, d = 128) loaded into an
R-style detector of another width (the tiny test preset: tiny ResNet, d = 32)."""
import json
import os

import pytest
import torch
from detectron2.config import instantiate

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.checkpoint.transfer import finetune_configs_for, load_shares, module_group
from disco_detr.config import load_config

from conftest import REPO, tiny_config

DEMO_DISCO = os.path.join(REPO, "configs", "demo", "disco_cond.py")
TINY_DISCO = os.path.join(REPO, "tests", "configs", "tiny_disco.py")


def _pretraining_run(tmp_path, config, drop_prefix=None):
    """A pre-training run folder: model_final.pth of ``config``'s model and the log.txt line detectron2's
    default_setup writes (it names the run's config file)."""
    run = tmp_path / "pretrain"
    run.mkdir()
    torch.manual_seed(0)
    state = instantiate(load_config(config).model).state_dict()
    if drop_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(drop_prefix)}
    torch.save({"model": state}, run / "model_final.pth")
    (run / "log.txt").write_text(f"[d2] Command line arguments: Namespace(config_file='{config}', resume=False)\n")
    return str(run / "model_final.pth"), state


def _finetune_model():
    torch.manual_seed(1)
    return instantiate(tiny_config("unused").model)


@pytest.mark.parametrize("policy", ["error", "fresh"])
def test_other_backbone_and_width_is_refused_naming_both_and_the_matching_config(tmp_path, policy):
    path, _ = _pretraining_run(tmp_path, DEMO_DISCO)
    model = _finetune_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as e:
        DisCoCheckpointer(model, str(tmp_path / "out"), transfer_mismatch=policy).load(path)
    message = str(e.value)
    assert "pre-trained with MobileNetV2, d = 128; this config builds R8 (widths 8/16/32), d = 32" in message
    assert os.path.join("configs", "demo", "cond.py") in message
    assert "backbone 0%" in message  # what would load
    assert len(message) < 1000 and "\n" not in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


def test_force_loads_only_what_fits_and_warns_with_the_share(tmp_path, caplog):
    path, state = _pretraining_run(tmp_path, DEMO_DISCO)
    model = _finetune_model()
    model_state = model.state_dict()
    with caplog.at_level("WARNING"):
        DisCoCheckpointer(model, str(tmp_path / "out"), transfer_mismatch="force").load(path)
    assert "loads only backbone 0%" in caplog.text
    report = json.loads((tmp_path / "out" / "transfer_report.json").read_text())
    # the counts exclude the checkpoint's keys that the model lacks (every MobileNet key)
    assert set(report["kept"]) <= set(model_state)
    assert not any(k.startswith("backbone.") for k in report["kept"])
    assert len(report["unexpected"]) >= 234 and all(k.startswith("backbone.features.") for k in report["unexpected"]
                                                   if k.startswith("backbone."))
    fits = [k for k, v in model_state.items()
            if "detector." + k in state and state["detector." + k].shape == v.shape and not k.startswith("class_embed.")]
    assert sorted(report["kept"]) == sorted(fits)
    overall = report["shares"]["overall"]
    assert overall["keys_loaded"] == len(fits) and overall["keys_total"] == len(model_state)
    assert overall["numel_loaded"] == sum(model_state[k].numel() for k in fits)
    assert report["shares"]["backbone"]["share"] == 0.0
    assert report["architecture"]["checkpoint"] == {"backbone": "MobileNetV2", "d_model": 128}


def test_matching_checkpoint_loads_all_of_backbone_encoder_decoder_and_drops_the_class_head(tmp_path, caplog):
    path, state = _pretraining_run(tmp_path, TINY_DISCO)
    model = _finetune_model()
    with caplog.at_level("WARNING"):
        DisCoCheckpointer(model, str(tmp_path / "out")).load(path)
    assert "loads only" not in caplog.text
    report = json.loads((tmp_path / "out" / "transfer_report.json").read_text())
    shares = report["shares"]
    for group in ("backbone", "encoder", "decoder"):
        assert shares[group]["share"] == 1.0 and shares[group]["keys_loaded"] == shares[group]["keys_total"] > 0
    class_numel = model.class_embed.weight.numel() + model.class_embed.bias.numel()
    heads_total = class_numel + sum(p.numel() for p in model.bbox_embed.parameters())
    assert shares["heads"]["numel_total"] == heads_total
    assert shares["heads"]["numel_loaded"] == heads_total - class_numel
    assert report["fresh"] == ["class_embed.bias", "class_embed.weight"]
    assert "detector.class_embed.weight" in report["dropped"]
    assert report["unexpected"] == []
    for key, value in model.state_dict().items():
        if not key.startswith("class_embed."):
            assert torch.equal(value, state["detector." + key]), key


def test_fresh_below_the_floor_is_refused_unless_forced(tmp_path, caplog):
    """Same architecture, but a checkpoint without the backbone: "fresh" must not train it from random silently."""
    path, _ = _pretraining_run(tmp_path, TINY_DISCO, drop_prefix="detector.backbone.")
    with pytest.raises(ValueError, match=r"below the floor of 90% for the backbone"):
        DisCoCheckpointer(_finetune_model(), str(tmp_path / "a"), transfer_mismatch="fresh").load(path)
    with caplog.at_level("WARNING"):
        DisCoCheckpointer(_finetune_model(), str(tmp_path / "b"), transfer_mismatch="force").load(path)
    assert "loads only backbone 0%, encoder 100%, decoder 100%" in caplog.text
    # a floor of 0 accepts it under "fresh", still with the warning
    caplog.clear()
    with caplog.at_level("WARNING"):
        DisCoCheckpointer(_finetune_model(), str(tmp_path / "c"), transfer_mismatch="fresh",
                          transfer_min_share=0.0).load(path)
    assert "loads only backbone 0%" in caplog.text


def test_many_shape_mismatches_give_a_short_error(tmp_path):
    """Another width with the same backbone: a few example keys, not every one."""
    path, _ = _pretraining_run(tmp_path, TINY_DISCO)
    cfg = tiny_config("unused")
    for part in (cfg.model.encoder, cfg.model.decoder):
        part.update(d_model=48, dim_feedforward=96)
    with pytest.raises(ValueError) as e:
        DisCoCheckpointer(instantiate(cfg.model), str(tmp_path / "out")).load(path)
    message = str(e.value)
    assert "d = 32; this config builds R8 (widths 8/16/32), d = 48" in message and len(message) < 1000


def test_load_shares_by_hand():
    model_state = {"backbone.a": torch.zeros(10), "encoder.b": torch.zeros(2, 5), "decoder.c": torch.zeros(4),
                   "query_embed.weight": torch.zeros(6, 1), "class_embed.weight": torch.zeros(3)}
    loaded = {"backbone.a": torch.ones(10), "encoder.b": torch.ones(5, 2), "query_embed.weight": torch.ones(6, 1),
              "decoder.extra": torch.ones(100)}
    shares = load_shares(loaded, model_state)
    assert shares["backbone"] == {"keys_loaded": 1, "keys_total": 1, "numel_loaded": 10, "numel_total": 10, "share": 1.0}
    assert shares["encoder"]["numel_loaded"] == 0  # same numel, another shape: not loaded
    assert shares["decoder"] == {"keys_loaded": 1, "keys_total": 2, "numel_loaded": 6, "numel_total": 10, "share": 0.6}
    assert shares["heads"]["share"] == 0.0 and shares["other"]["share"] is None
    assert shares["overall"]["numel_loaded"] == 16 and shares["overall"]["numel_total"] == 33


DEMO_DETECTORS = sorted(f for f in os.listdir(os.path.join(REPO, "configs", "demo"))
                        if f.endswith(".py") and f.split("_")[0] not in ("disco", "siamese", "detreg"))


@pytest.mark.parametrize("config", DEMO_DETECTORS)
def test_every_detector_key_has_a_group_and_class_heads_are_heads(config):
    det = instantiate(load_config(os.path.join(REPO, "configs", "demo", config)).model)
    groups = {k: module_group(k) for k in det.state_dict()}
    assert "other" not in groups.values(), sorted(k for k, g in groups.items() if g == "other")
    assert all(groups[k] == "heads" for k in groups if k.startswith(det.transfer_drop))
    assert {"backbone", "encoder", "decoder", "heads"} <= set(groups.values())


def test_finetune_configs_follow_the_naming_convention():
    configs = os.path.join(REPO, "configs")
    assert finetune_configs_for(os.path.join(configs, "demo", "disco_cond.py")) == [
        os.path.join(configs, "demo", "cond.py")]
    assert finetune_configs_for(os.path.join(configs, "detreg_rtdetr.py")) == [
        os.path.join(configs, "finetune_rtdetr_voc.py"), os.path.join(configs, "finetune_rtdetr_coco.py")]
    assert finetune_configs_for(os.path.join(configs, "siamese_cond_q100.py")) == [
        os.path.join(configs, "finetune_cond_voc_q100.py"), os.path.join(configs, "finetune_cond_coco_q100.py")]
    assert finetune_configs_for(os.path.join(configs, "finetune_cond_voc.py")) == []
    for name in os.listdir(configs):  # every pre-training config has a counterpart that exists
        if name.split("_")[0] in ("disco", "siamese", "detreg"):
            assert finetune_configs_for(os.path.join(configs, name)), name


def test_the_run_folder_names_the_matching_config(tmp_path):
    """config.yaml's finetune_config key wins over the log.txt convention; a folder with neither names none."""
    from disco_detr.checkpoint.transfer import matching_finetune_configs

    ckpt = str(tmp_path / "model_final.pth")
    assert matching_finetune_configs(ckpt) == []
    (tmp_path / "log.txt").write_text(f"Contents of args.config_file={DEMO_DISCO}:\n")
    assert matching_finetune_configs(ckpt) == [os.path.join(REPO, "configs", "demo", "cond.py")]
    (tmp_path / "config.yaml").write_text("dataloader:\n  train: {}\nfinetune_config: configs/my_finetune.py\n")
    assert matching_finetune_configs(ckpt) == ["configs/my_finetune.py"]
