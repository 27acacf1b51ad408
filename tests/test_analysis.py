"""The paper's analysis: CS (eq. 13) and distances by hand, the recording hooks through the
Trainer (kill + resume), and every tools/analyze.py subcommand on the resulting run folder."""
import importlib
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.engine import HookBase
from detectron2.structures import BoxMode

from disco_detr.analysis import (
    DistanceStore,
    ReferenceStore,
    convergence_stability,
    cumulative_training_time,
    matched_centre_distances,
)
from disco_detr.analysis.hooks import evaluation_targets, load_probe_images
from disco_detr.engine import Trainer

from conftest import REPO, tiny_config


def _tool(name):
    """The module behind tools/<name>.py (tools/pretrain_budget_study.py runs disco_detr.tooling.studies)."""
    return importlib.import_module(f"disco_detr.tooling.{'studies' if name == 'pretrain_budget_study' else name}")


# ---------------------------------------------------------------------------- metrics by hand
def test_cs_of_hand_computed_paths():
    straight = [(0.0, 0.0), (0.1, 0.1), (0.3, 0.3), (0.6, 0.6)]
    back_and_forth = [(0.0, 0.0), (1.0, 0.0), (0.5, 0.0), (0.5, 0.0)]  # S = 0.5, path = 1 + 0.5
    still = [(0.4, 0.2)] * 4
    three_sides = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]  # S = 1, path = 3
    loop = [(0.2, 0.2), (0.6, 0.2), (0.2, 0.2), (0.2, 0.2)]  # back to the start: S = 0
    traj = np.array([straight, back_and_forth, still, three_sides, loop]).transpose(1, 0, 2)  # (T=4, N=5, 2)
    mean, per_query = convergence_stability(traj)
    expected = [1.0, 0.5 / 1.5, 1.0, 1.0 / 3.0, 0.0]
    assert per_query == pytest.approx(expected, abs=1e-12)
    assert mean == pytest.approx(sum(expected) / 5, abs=1e-12)
    # a single query, a single straight path, and per-image axes kept: (T, M, N, 2)
    assert convergence_stability(np.array(straight)[:, None])[0] == pytest.approx(1.0)
    assert convergence_stability(traj[:, None].repeat(3, 1))[1].shape == (3, 5)
    with pytest.raises(ValueError, match="at least 2"):
        convergence_stability(traj[:1])


def test_cs_matches_a_float64_loop_on_random_paths():
    rng = np.random.default_rng(0)
    traj = rng.random((7, 11, 2)).astype(np.float32)
    traj[:, 3] = traj[0, 3]  # one query never moves
    per_query = []
    for n in range(11):
        pts = [tuple(map(float, traj[t, n])) for t in range(7)]
        path = sum(math.dist(pts[i + 1], pts[i]) for i in range(6))
        per_query.append(1.0 if path == 0 else math.dist(pts[-1], pts[0]) / path)
    mean, got = convergence_stability(traj)
    assert got == pytest.approx(per_query, abs=1e-9)
    assert got[3] == 1.0 and mean == pytest.approx(np.mean(per_query), abs=1e-9)
    assert np.all((got >= 0) & (got <= 1 + 1e-12))


def test_matched_distances_targets_and_training_time_by_hand():
    ref = np.array([[0.5, 0.5], [0.1, 0.1], [0.9, 0.2]])
    boxes = np.array([[0.5, 0.8, 0.2, 0.2], [0.4, 0.5, 0.1, 0.1]])  # cxcywh
    d = matched_centre_distances(ref, boxes, [0, 1], [0, 1])
    assert d == pytest.approx([0.3, 0.5], abs=1e-12)  # (0, 0.3) and (0.3, 0.4)
    assert len(matched_centre_distances(ref, boxes[:0], [], [])) == 0

    dicts = [{"image_id": 7, "width": 200, "height": 100, "annotations": [
        {"bbox": [20, 10, 40, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3},
        {"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 1}]}]
    labels, cxcywh = evaluation_targets(dicts)[7]
    assert labels.tolist() == [3]  # the crowd box is left out
    assert cxcywh[0].tolist() == pytest.approx([40 / 200, 25 / 100, 40 / 200, 30 / 100])

    records = [{"iteration": 3, "time": 1.0}, {"iteration": 5, "time": 2.0}, {"iteration": 4, "bbox/AP": 1.0},
               {"iteration": 5, "time": 3.0}]  # iteration 5 re-logged after a resume: the last line counts
    iters, secs = cumulative_training_time(records)
    assert iters.tolist() == [3, 5]
    assert secs.tolist() == pytest.approx([4 * 1.0, 4 + 2 * 3.0])


# ---------------------------------------------------------------------------- hooks through the Trainer
class _Crash(HookBase):
    def __init__(self, at_iter):
        self.at_iter = at_iter

    def after_step(self):
        if self.trainer.iter == self.at_iter:
            raise RuntimeError("simulated kill")


ANALYSIS = ["train.max_iter=4", "train.checkpointer.period=2", "train.eval_period=2",
            "dataloader.test.dataset.names=disco_demo_val", "train.analysis.reference_period=2",
            "train.analysis.query_distance=True", "train.analysis.probe_size=[96,128]"]


@pytest.fixture(scope="module")
def run_dir(demo_root, tmp_path_factory):
    """A tiny fine-tuning run with analysis on, killed after 3 iterations (last checkpoint
    after 2) and resumed to 4; records planted after the kill must be replaced or dropped."""
    out = str(tmp_path_factory.mktemp("analysis_run"))
    cfg = tiny_config(out, *ANALYSIS)
    LazyConfig.save(cfg, os.path.join(out, "config.yaml"))  # as lazyconfig_train_net's default_setup does
    killed = Trainer(cfg)
    killed.register_hooks([_Crash(at_iter=2)])
    killed.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="simulated kill"):
        killed.train()
    refs, dist = ReferenceStore(out), DistanceStore(out)
    assert refs.iterations() == [0, 2] and [r["iteration"] for r in dist.records()] == [2]
    with open(refs._path(0), "rb") as f:
        first = f.read()
    refs.write(4, np.full((1, 12, 2), -1.0))  # stale: the killed run's future, must be re-recorded
    refs.write(100, np.full((1, 12, 2), -1.0))  # must be dropped
    dist.write(3, -1.0, 1, 1)  # must be dropped
    resumed = Trainer(tiny_config(out, *ANALYSIS))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    with open(refs._path(0), "rb") as f:
        assert f.read() == first  # records before the resume point are untouched
    return out


def test_records_continue_across_resume_without_gaps_or_duplicates(run_dir):
    refs, dist = ReferenceStore(run_dir), DistanceStore(run_dir)
    iters, values = refs.load()
    assert iters.tolist() == [0, 2, 4]  # first, every 2, last
    assert values.shape == (3, 1, 12, 2)  # learned queries: one probe image
    assert np.all((values >= 0) & (values <= 1))
    assert not np.any(values[2] == -1.0)  # the stale record was recomputed
    assert not np.allclose(values[0], values[-1])  # training moved the references
    meta = refs.meta()
    assert meta["references_depend_on_image"] is False and meta["num_queries"] == 12
    assert len(meta["probe_images"]) == 1

    records = dist.records()
    assert [r["iteration"] for r in records] == [2, 4]
    assert all(0 < r["distance"] < 1.5 and r["num_images"] == 6 and r["num_matched"] > 0 for r in records)
    # the same numbers went to detectron2's metrics.json through EventStorage
    logged = []
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            entry = json.loads(line)
            if "analysis/query_distance" in entry:
                logged.append(entry["analysis/query_distance"])
    assert logged[-2:] == pytest.approx([r["distance"] for r in records])


def test_last_record_is_the_final_models_references_and_distance(run_dir):
    from detectron2.data import DatasetCatalog

    from disco_detr.analysis.runs import load_run

    run = load_run(run_dir)
    det = run.detector
    _, images = load_probe_images(DatasetCatalog.get("disco_demo_train"), 1, (96, 128))
    with torch.no_grad():  # Conditional DETR's references: sigmoid(MLP(query_pos)), independent of the image
        expected = det.decoder.ref_point_head(det.query_embed.weight).sigmoid().numpy()
    _, values = ReferenceStore(run_dir).load()
    assert values[-1, 0] == pytest.approx(expected, abs=1e-5)
    assert images[0].shape[-2:] == tuple(ReferenceStore(run_dir).meta()["probe_image_sizes"][0])

    # distance: pair-weighted mean over the val set, recomputed image by image
    from detectron2.config import instantiate

    loader = instantiate(run.cfg.dataloader.test)
    gt = evaluation_targets(DatasetCatalog.get("disco_demo_val"))
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            for x in batch:
                enc = det.encode(det.preprocess_images([x["image"]]))
                init = det.initial_queries(enc)
                out = det.decode(enc, init)
                labels, boxes = gt[x["image_id"]]
                (q, t), = det.criterion.matcher(out.logits[-1], out.boxes[-1], [{"labels": labels, "boxes": boxes}])
                for qi, ti in zip(q.tolist(), t.tolist()):
                    total += math.dist(init.reference[0, qi, :2].tolist(), boxes[ti, :2].tolist())
                    count += 1
    last = DistanceStore(run_dir).records()[-1]
    assert last["num_matched"] == count
    assert last["distance"] == pytest.approx(total / count, rel=1e-5)


def test_analysis_is_off_by_default_and_rejects_unknown_keys(demo_root, tmp_path):
    from disco_detr.analysis import build_analysis_hooks

    assert build_analysis_hooks(tiny_config(str(tmp_path))) == []
    with pytest.raises(KeyError, match="probe_imgs"):
        build_analysis_hooks(tiny_config(str(tmp_path), "+train.analysis.probe_imgs=3"))


# ---------------------------------------------------------------------------- tools/analyze.py
def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5000


def test_analyze_subcommands_write_figures(run_dir, tmp_path, capsys):
    analyze = _tool("analyze")
    out = lambda name: str(tmp_path / f"{name}.png")  # noqa: E731
    analyze.main(["cs", f"A={run_dir}", f"B={run_dir}", "--out", out("cs")])
    cs = convergence_stability(ReferenceStore(run_dir).load()[1][..., :2].reshape(3, -1, 2))[0]
    assert f"A: CS = {cs:.4f}" in capsys.readouterr().out
    analyze.main(["distance", f"fine-tune={run_dir}", "--out", out("distance")])
    analyze.main(["arrows", run_dir, "--images", "0", "1", "--out", out("arrows")])
    assert "matched queries, mean distance" in capsys.readouterr().out
    analyze.main(["attention", run_dir, "--image", "1", "--top-k", "2", "--out", out("attention")])
    assert capsys.readouterr().out.count("query ") >= 2
    analyze.main(["encoder-attention", run_dir, "--out", out("encoder_attention")])
    assert "1 encoder layer(s)" in capsys.readouterr().out
    analyze.main(["ap-vs-time", f"run={run_dir}", "--include-pretraining", "--out", out("ap_vs_time")])
    analyze.main(["summary", f"run={run_dir}", "--json", str(tmp_path / "summary.json")])
    for name in ("cs", "distance", "arrows", "attention", "encoder_attention", "ap_vs_time"):
        _png(out(name))
    summary = json.load(open(tmp_path / "summary.json"))["run"]
    assert summary["cs"] == pytest.approx(cs)
    assert summary["distance"] == pytest.approx(DistanceStore(run_dir).records()[-1]["distance"])
    with pytest.raises(SystemExit):
        analyze.main(["cs", str(tmp_path / "missing"), "--out", out("x")])
    with pytest.raises(SystemExit):  # --help explains the subcommands and the record format
        analyze.main(["--help"])
    helptext = capsys.readouterr().out
    for word in ("encoder-attention", "ap-vs-time", "iter_XXXXXXXX.npz", "CS_n = 1"):
        assert word in helptext


# ---------------------------------------------------------------------------- tools/pretrain_budget_study.py
@pytest.fixture(scope="module")
def demo_proposals(demo_root):
    _tool("generate_proposals").main(["--images", os.path.join(demo_root, "images", "unlabelled"),
                                      "--out", os.path.join(demo_root, "proposals", "unlabelled.sqlite"),
                                      "--workers", "1"])
    return demo_root


def test_budget_study_tiny_runs_the_grid_and_pretraining_runs_record(demo_proposals, tmp_path, capsys):
    out = tmp_path / "study"
    study = _tool("pretrain_budget_study").main(["--tiny", "--analysis-period", "1", "--out", str(out)])
    assert set(study["results"]) == {"none", "siamese", "disco"}
    for start in ("siamese", "disco"):
        assert 0.0 <= study["results"][start]["1"]["0"]["AP"] <= 100.0
    _png(str(out / "study_AP.png"))
    printed = capsys.readouterr().out
    assert "| disco" in printed and "Pre-training health, group_agreement" in printed
    # every pre-training's health metrics (logged at its iteration 0, the only one here) are in the study
    health = study["results"]["disco"]["1"]["0"]["pretrain_health"]
    assert health["iteration"] == 0 and 0.0 <= health["group_agreement"] <= 1.0
    assert 0.0 < health["group_agreement_chance"] < 1.0 and health["reference_displacement"] == 0.0
    assert health["reference_spread"] > 0 and health["reference_offset"] >= 0
    # the pre-training runs recorded their (learned) queries' references through the wrapper ...
    pre = out / "seed0" / "budget1" / "pretrain_disco"
    iters, refs = ReferenceStore(str(pre)).load()
    assert iters.tolist() == [0, 1] and refs.shape == (2, 1, 12, 2)
    assert ReferenceStore(str(out / "seed0" / "budget1" / "finetune_disco")).iterations() == [0, 1]
    # ... and analyze.py draws a pre-training run's arrows to the proposals of a view
    _tool("analyze").main(["arrows", str(pre), "--images", "0", "--out", str(tmp_path / "pre_arrows.png")])
    assert "matched queries" in capsys.readouterr().out
    _png(str(tmp_path / "pre_arrows.png"))


def test_budget_study_steps_put_every_finetuning_after_its_own_pretraining(tmp_path):
    study_tool = _tool("pretrain_budget_study")
    from types import SimpleNamespace

    args = SimpleNamespace(budgets=[150, 600], seeds=[0, 1], finetune_iters=400, analysis_period=25,
                           query_distance=True, tiny=False, out=str(tmp_path), starts=["none", "disco", "siamese"])
    plan = {"finetune": "ft.py", "disco": ("disco.py", []), "siamese": ("siamese.py", []),
            "init_none": "w.pth", "probe_size": "[160,300]"}
    steps = study_tool.study_steps(args, plan)
    outs = [os.path.relpath(out, tmp_path) for out, *_ in steps]
    assert len(steps) == 2 + 2 * 2 * 4 and len(set(outs)) == len(outs)
    by_out = {os.path.relpath(out, tmp_path): (config, overrides, deps) for out, config, overrides, deps in steps}
    for seed in (0, 1):
        for budget in (150, 600):
            for start in ("disco", "siamese"):
                pre = f"seed{seed}/budget{budget}/pretrain_{start}"
                config, overrides, deps = by_out[f"seed{seed}/budget{budget}/finetune_{start}"]
                assert config == "ft.py" and [os.path.relpath(d, tmp_path) for d in deps] == [pre]
                assert f"train.init_checkpoint={tmp_path}/{pre}/model_final.pth" in overrides
                assert {f"train.seed={seed}", "train.max_iter=400", "train.analysis.query_distance=True"} <= set(overrides)
                assert f"train.max_iter={budget}" in by_out[pre][1] and by_out[pre][0] == f"{start}.py"
        assert "train.init_checkpoint=w.pth" in by_out[f"seed{seed}/finetune_none"][1]
    # the ablation starts are the DisCo preset with one component off
    args.starts = ["dmoqf_only", "cld_only"]
    args.variant = "cond"
    full_plan = study_tool.study_plan(args)
    assert full_plan["dmoqf_only"] == ("configs/demo/disco_cond.py", ["model.weight_contrast=0.0"])
    assert full_plan["cld_only"] == ("configs/demo/disco_cond.py", ["model.use_dmoqf=False"])
    args.starts = ["detreg"]
    assert study_tool.study_plan(args)["detreg"] == ("configs/demo/detreg_cond.py", [])
    args.starts = ["disco_ss"]
    assert study_tool.study_plan(args)["disco_ss"] == ("configs/demo/disco_cond.py",
                                                       ["dataloader.train.dataset.names=disco_demo_unlabelled_ss"])
    args.starts = ["none", "disco", "siamese"]
    # the longest pre-trainings are preferred (they bound the study's wall time)
    pretrain_order = [o for o in outs if "pretrain" in o]
    assert all("budget600" in o for o in pretrain_order[:4])
    # in-process (tiny) order: every pre-training before the fine-tuning that loads it
    args.tiny = True
    tiny_outs = [out for out, *_ in study_tool.study_steps(args, plan)]
    for out, _, _, deps in study_tool.study_steps(args, plan):
        assert all(tiny_outs.index(d) < tiny_outs.index(out) for d in deps)


def test_step_graph_runs_each_step_after_its_dependencies_and_stops_on_a_failure(tmp_path, capsys):
    run_graph = _tool("run_demo").run_graph
    flag = tmp_path / "a.done"
    wait_then_write = f"import time, pathlib; time.sleep(1); pathlib.Path({str(flag)!r}).write_text('x')"
    need_flag = f"import pathlib, sys; sys.exit(0 if pathlib.Path({str(flag)!r}).exists() else 3)"
    steps = {"b": (["-c", need_flag], str(tmp_path / "b.log"), ["a"]),  # preferred, but waits for a
             "a": (["-c", wait_then_write], str(tmp_path / "a.log"), []),
             "c": (["-c", "pass"], str(tmp_path / "c.log"), [])}
    timings = run_graph(steps, jobs=2, threads=1)
    assert set(timings) == {"a", "b", "c"} and timings["a"] >= 1.0
    assert "(3 of 3 steps done)" in capsys.readouterr().out
    flag.unlink()  # b without a's output fails, and the error names the step and its log
    with pytest.raises(SystemExit, match=r"step b failed \(exit 3\)"):
        run_graph({"b": (["-c", need_flag], str(tmp_path / "b.log"), [])}, jobs=1, threads=1)


def test_budget_study_table_and_plot_of_a_grid(tmp_path, capsys):
    study_tool = _tool("pretrain_budget_study")
    m = lambda ap: {"AP": ap, "AP50": 2 * ap, "AP75": ap / 2,  # noqa: E731
                    "pretrain_health": {"group_agreement": ap / 20}}
    study = {"starts": ["none", "siamese", "disco"], "budgets": [150, 600], "seeds": [0, 1], "finetune_iters": 500,
             "results": {
                 "none": {"0": m(6.0), "1": m(8.0)},
                 "siamese": {"150": {"0": m(3.0), "1": m(5.0)}, "600": {"0": m(7.0), "1": m(9.0)}},
                 "disco": {"150": {"0": m(5.0), "1": m(6.0)}, "600": {"0": m(9.0), "1": m(11.0)}}}}
    grid = study_tool.grid(study, "AP")
    assert grid[study_tool.LABELS["disco"]].tolist() == [[5.0, 6.0], [9.0, 11.0]]
    assert grid[study_tool.LABELS["none"]].shape == (1, 2)
    study_tool.print_table(study, "AP")
    table = capsys.readouterr().out
    assert "| disco         |    600 |  10.00 |  1.00 |   9.00 |  11.00 |" in table
    study_tool.print_table(study, "group_agreement")  # pre-training starts only, no "none" row
    table = capsys.readouterr().out
    assert "| disco         |    600 | 0.5000 | 0.0500 | 0.4500 | 0.5500 |" in table and "| none" not in table
    from disco_detr.analysis.plots import plot_budget_study

    _png(plot_budget_study(study["budgets"], grid, str(tmp_path / "grid.png")))


# ---------------------------------------------------------------------------- attention maps
def test_heatmaps_put_attention_where_it_was_given():
    from types import SimpleNamespace

    from disco_detr.analysis.runs import attention_heatmap, deformable_heatmap

    enc = SimpleNamespace(spatial_shapes=torch.tensor([[2, 4], [1, 2]]), level_start_index=torch.tensor([0, 8]),
                          image_sizes=[(16, 24)])
    weights = torch.zeros(10)
    weights[5] = 1.0  # level 0 (2 x 4 over 16 x 32 padded pixels), row 1, column 1: pixels y 8..15, x 8..15
    heat = attention_heatmap(weights, enc, 0, (16, 32))
    assert heat.shape == (16, 24)  # cropped to the un-padded image
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 8 <= y < 16 and 8 <= x < 16
    assert heat[0:4, 20:24].max() < 0.05 * heat.max()  # far cells get (almost) nothing
    locations = torch.tensor([[0.25, 0.75], [0.9, 0.1]])  # (x, y) normalised over the padded map
    heat = deformable_heatmap(locations, torch.tensor([0.8, 0.2]), enc, 0, (16, 32), cell=4)
    assert heat[12, 8] == pytest.approx(0.8) and heat[2, 23] == 0.0  # the second point is in the padding
    assert heat.sum() == pytest.approx(0.8 * 16)  # one 4 x 4 cell


def test_deformable_detector_attention_through_the_contract():
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate

    from disco_detr.analysis.runs import LoadedRun, decoder_attention, encoder_attention
    from disco_detr.modeling import build_tiny_resnet

    cfg = LazyConfig.load(os.path.join(REPO, "configs", "common", "models", "deformable_detr_r50.py"))
    model = cfg.model
    model.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                          out_features=("res3", "res4"), norm="FrozenBN")
    model.in_features = ("res3", "res4")
    for part in (model.encoder, model.decoder):
        part.update(num_layers=1, d_model=32, num_heads=4, dim_feedforward=64, num_levels=3, num_points=2)
    model.update(num_classes=5, num_queries=6, norm_groups=8)
    torch.manual_seed(0)
    det = instantiate(model).eval()
    run = LoadedRun("", None, det, det, False, "")
    image = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)
    dets = decoder_attention(run, image, top_k=2)
    assert [d["attention"].shape for d in dets] == [(48, 64)] * 2
    assert all(d["attention"].sum() > 0 and np.isfinite(d["attention"]).all() for d in dets)
    maps = encoder_attention(run, image)
    assert len(maps) == 1 and maps[0].shape == (48, 64) and maps[0].sum() > 0


def test_image_dependent_references_are_recorded_per_probe_image(demo_root, tmp_path):
    from types import SimpleNamespace

    from detectron2.config import instantiate
    from detectron2.data import DatasetCatalog

    from disco_detr.analysis import ReferenceRecorder

    det = instantiate(tiny_config(str(tmp_path)).model)
    det.references_depend_on_image = True  # as DINO / RT-DETR declare; the recorder must then keep M images
    dicts = DatasetCatalog.get("disco_demo_train")
    recorder = ReferenceRecorder(str(tmp_path), 2, lambda: dicts, probe_images=3, probe_size=(64, 96))
    recorder.trainer = SimpleNamespace(model=det)
    det.train()
    recorder.record(0)
    assert det.training and det.backbone.training  # modes restored
    iters, refs = ReferenceStore(str(tmp_path)).load()
    assert refs.shape == (1, 3, 12, 2)
    meta = ReferenceStore(str(tmp_path)).meta()
    last = len(dicts) - 1
    assert meta["probe_images"] == [dicts[i]["file_name"] for i in (0, round(last / 2), last)]
    assert all(min(hw) == 64 for hw in meta["probe_image_sizes"])
