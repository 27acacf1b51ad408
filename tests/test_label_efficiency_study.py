"""The label-efficiency study (tools/label_efficiency_study.py, disco_detr/tooling/label_efficiency_study.py): its grid of
runs, the split each fine-tuning trains on, resuming, the cells' mean +- std, the tables and the plot."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from disco_detr.tooling import label_efficiency_study as label_study

from conftest import REPO


def test_steps_train_each_start_on_every_split_after_its_own_pretraining(tmp_path):
    args = SimpleNamespace(starts=["none", "disco", "detreg"], fractions=[0.25, 0.05, 1.0], folds=[0, 2],
                           pretrain_iters=300, finetune_iters=400, tiny=False, out=str(tmp_path))
    plan = {"finetune": "configs/demo/cond.py", "init_none": "w.pth", "disco": ("disco.py", ["a=1"]),
            "detreg": ("detreg.py", [])}
    steps = label_study.study_steps(args, plan)
    by_out = {os.path.relpath(out, tmp_path): (config, overrides, deps) for out, config, overrides, deps in steps}
    assert len(steps) == len(by_out) == 2 + 3 * 2 * 3
    for start, config in (("disco", "disco.py"), ("detreg", "detreg.py")):
        assert by_out[f"pretrain_{start}"][0] == config and "train.max_iter=300" in by_out[f"pretrain_{start}"][1]
    assert "a=1" in by_out["pretrain_disco"][1]
    for token, fraction in (("5pct", 0.05), ("25pct", 0.25), ("100pct", 1.0)):
        for fold in (0, 2):
            dataset = "disco_demo_train" if fraction == 1 else f"disco_demo_train_{token}_fold{fold}"
            for start in ("none", "disco", "detreg"):
                config, overrides, deps = by_out[f"{token}/fold{fold}/finetune_{start}"]
                assert config == "configs/demo/cond.py"
                assert {f"train.seed={fold}", "train.max_iter=400",
                        f"dataloader.train.dataset.names={dataset}"} <= set(overrides)
                init = "w.pth" if start == "none" else f"{tmp_path}/pretrain_{start}/model_final.pth"
                assert f"train.init_checkpoint={init}" in overrides
                assert [os.path.relpath(d, tmp_path) for d in deps] == ([] if start == "none" else [f"pretrain_{start}"])
    # in-process (tiny) order: every pre-training before the fine-tunings that load it
    args.tiny = True
    outs = [out for out, *_ in label_study.study_steps(args, plan)]
    for out, _, _, deps in label_study.study_steps(args, plan):
        assert all(outs.index(d) < outs.index(out) for d in deps)


def _study():
    results = {start: {t: {str(k): {"AP": ap + k, "AP50": 2 * ap, "AP75": 0.0} for k in (0, 1, 2)}
                       for t, ap in (("5pct", base), ("100pct", base + 10))}
               for start, base in (("none", 1.0), ("disco", 3.0))}
    return {"starts": ["none", "disco"], "fractions": [0.05, 1.0], "folds": [0, 1, 2], "finetune_iters": 400,
            "pretrain_iters": 300, "results": results,
            "pretrain_health": {"disco": {"group_agreement": 0.5, "iteration": 299}}}


def test_cells_tables_and_plot_of_a_grid(tmp_path, capsys):
    study = _study()
    grid = label_study.grid(study, "AP")
    assert grid[label_study.studies.LABELS["disco"]].tolist() == [[3.0, 4.0, 5.0], [13.0, 14.0, 15.0]]
    cells = label_study.cells(study, "AP")
    assert cells["disco"]["5pct"]["mean"] == pytest.approx(4.0)
    assert cells["disco"]["5pct"]["std"] == pytest.approx(np.sqrt(2 / 3))  # population std of 3, 4, 5
    assert cells["none"]["100pct"] == {"mean": pytest.approx(12.0), "std": pytest.approx(np.sqrt(2 / 3)), "n": 3}
    label_study.print_tables(study, "AP")
    printed = capsys.readouterr().out
    assert "| start | 5 % | 100 % |" in printed and "| disco | 4.00 +- 0.82 | 14.00 +- 0.82 |" in printed
    assert "| disco | 0.5000 | -" in printed  # health: the logged metric, "-" for those not logged
    from disco_detr.analysis.plots import plot_label_efficiency

    path = plot_label_efficiency([5, 100], grid, str(tmp_path / "le.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_fraction_without_a_registered_split_is_refused(capsys):
    with pytest.raises(SystemExit):
        label_study.main(["--tiny", "--fractions", "0.3"])
    assert "a fraction must have a registered split" in capsys.readouterr().err


def test_tiny_study_runs_the_grid_writes_splits_and_resumes(demo_proposals, tmp_path, capsys):
    out = tmp_path / "study"
    study = label_study.main(["--tiny", "--out", str(out)])
    assert set(study["results"]) == {"none", "siamese", "disco"}
    for start in study["starts"]:
        assert set(study["results"][start]) == {"25pct", "100pct"}
        for row in (r for cell in study["results"][start].values() for r in cell.values()):
            assert 0.0 <= row["AP"] <= 100.0
        assert study["cells"]["AP"][start]["25pct"]["n"] == 2
    # each 25 % fine-tuning wrote the split it trained on (4 of the 16 demo images); the folds differ
    ids = []
    for fold in (0, 1):
        path = out / "25pct" / f"fold{fold}" / "finetune_disco" / "label_splits" / f"disco_demo_train_25pct_fold{fold}.json"
        ids.append(json.loads(path.read_text())["image_ids"])
        assert len(ids[-1]) == 4
    assert ids[0] != ids[1]
    assert not (out / "100pct" / "fold0" / "finetune_disco" / "label_splits").exists()  # the whole set: no split
    health = study["pretrain_health"]["disco"]
    assert health["iteration"] == 0 and 0.0 <= health["group_agreement"] <= 1.0
    assert os.path.getsize(out / "study_AP.png") > 5000
    assert "| disco |" in capsys.readouterr().out
    assert json.loads((out / "study.json").read_text())["cells"] == study["cells"]
    # resumable: a second call runs nothing and reads the same results
    again = label_study.main(["--tiny", "--out", str(out)])
    assert again["timings_s"] == {} and again["results"] == study["results"]


def test_entry_point_is_the_module():
    with open(os.path.join(REPO, "tools", "label_efficiency_study.py")) as f:
        assert "from disco_detr.tooling.label_efficiency_study import main" in f.read()


def _rule_study(per_fraction):
    """A study whose (start, fraction) AP values over folds 0-2 are given; AP50 = 10 x the AP mean."""
    starts = ["none", "siamese", "disco"]
    results = {s: {} for s in starts}
    for t, values in per_fraction.items():
        for s in starts:
            aps = values[s]
            results[s][t] = {str(k): {"AP": ap, "AP50": 10 * float(np.mean(aps)), "AP75": 0.0}
                             for k, ap in enumerate(aps)}
    return {"starts": starts, "fractions": [0.05, 0.1, 1.0], "folds": [0, 1, 2], "results": results}


def test_demo_rule_gap_spread_and_choice_by_hand():
    study = _rule_study({
        # none 2 +- 0; siamese 1 (gap 1, downwards); disco 5 +- sqrt(2/3) (gap 3): separated (0.816 < 1.5)
        "5pct": {"none": [2, 2, 2], "siamese": [1, 1, 1], "disco": [4, 5, 6]},
        # gap 0.5 against a spread of 0.816: not separated
        "10pct": {"none": [4, 4, 4], "siamese": [3.5, 3.5, 3.5], "disco": [3, 4, 5]},
        # the largest gap points down (none above the pre-trained arms) and is separated too, but AP50 < 40
        "100pct": {"none": [3.9, 3.9, 3.9], "siamese": [0, 0, 0], "disco": [0.1, 0.1, 0.1]},
    })
    rows = label_study.separation(study)
    assert rows["5pct"]["gap"] == pytest.approx(3.0) and rows["5pct"]["spread"] == pytest.approx(np.sqrt(2 / 3))
    assert rows["5pct"]["separated"] and rows["5pct"]["eligible"] and rows["5pct"]["best_ap50"] == pytest.approx(50)
    assert rows["10pct"]["gap"] == pytest.approx(0.5) and not rows["10pct"]["separated"]
    assert rows["100pct"]["gap"] == pytest.approx(3.9) and rows["100pct"]["spread"] == pytest.approx(0, abs=1e-12)
    assert rows["100pct"]["separated"] and not rows["100pct"]["eligible"]  # best AP50 39
    assert label_study.demo_fraction(study) == ("5pct", True)
    # nothing separated: the eligible fraction with the largest gap / spread, flagged as not separated
    study = _rule_study({t: {"none": [4, 4, 4], "siamese": [4, 4, 4], "disco": d}
                         for t, d in (("5pct", [3, 4, 5]), ("10pct", [3.5, 4, 5.5]), ("100pct", [4, 4.3, 4.4]))})
    assert label_study.demo_fraction(study) == ("100pct", False)
    study = _rule_study({t: {"none": [1, 1, 1], "siamese": [1, 1, 1], "disco": [1, 2, 3]}
                         for t in ("5pct", "10pct", "100pct")})
    with pytest.raises(ValueError, match="AP50"):
        label_study.demo_fraction(study)
