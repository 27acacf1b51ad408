"""tools/gpu_check.py (disco_detr.tooling.gpu_check) on a machine without CUDA: it refuses in one line; its goals
and tables from a result; its variant step on CPU."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO


def _tool():
    from disco_detr.tooling import gpu_check

    return gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
@pytest.mark.parametrize("flags", [[], ["--quick"]], ids=["full", "quick"])
def test_refuses_without_cuda_in_one_line(flags):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "projects", "DisCoDETR"))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gpu_check.py"), *flags], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "needs a CUDA device" in proc.stderr


def test_goals_and_tables_from_a_result():
    tool = _tool()
    kernel = [{"batch": b, "dtype": "bfloat16", "setting": "encoder", "nq": 22223, "pytorch_forward_ms": 10.0,
               "triton_forward_ms": 4.0, "pytorch_train_ms": 30.0, "triton_train_ms": t, "speedup_train": 30.0 / t,
               "pytorch_train_mib": 900.0, "triton_train_mib": m, "memory_ratio_train": m / 900.0,
               "max_abs_diff": 1e-3} for b, t, m in ((2, 10.0, 300.0), (8, 20.0, 950.0))]
    result = {"device": "H200", "torch": "2.x", "triton": "3.x", "peak_tflops": 989.0, "seconds": 1.0,
              "kernel": kernel,
              "variants": [{"variant": "dino", "compiled": True, "image_hw": [800, 1333], "batch": 2, "amp": "bfloat16",
                            "step_s": 0.5, "compile_fell_back": True, "compile_error": "Unsupported: x | y"}],
              "pretrain": {300: {"disco_over_siamese": 1.01, "dmoqf_share_of_disco_step": 0.002},
                           "900": {"disco_over_siamese": 1.05, "dmoqf_share_of_disco_step": 0.02}}}
    result["goals"] = tool.goals(result)
    g = result["goals"]
    assert g["kernel_speedup_train_bf16_min"] == {"value": 1.5, "target": ">= 2", "met": False}   # the worst batch
    assert g["kernel_memory_ratio_train_bf16_max"]["value"] == pytest.approx(950 / 900)
    assert g["disco_over_siamese_max"]["value"] == 1.05 and g["disco_over_siamese_max"]["met"] is False
    assert g["dmoqf_share_at_900"] == {"value": 0.02, "target": "<= 0.01", "met": False}
    text = tool.tables(result)
    assert "| 8 | bfloat16 | encoder | 22223 | 10.0 | 4.0 | 30.0 | 20.0 | 1.5 |" in text
    assert "fell back: Unsupported: x / y" in text                 # a pipe in a message does not break the table
    assert "| dmoqf_share_at_900 | 0.02 | <= 0.01 | False |" in text
    empty = {"device": "H200", "torch": "2.x", "triton": "3.x", "seconds": 0.0}
    empty["goals"] = tool.goals(empty)
    assert all(v["met"] is None for v in empty["goals"].values())
    assert "| kernel_speedup_train_bf16_min | - | >= 2 | - |" in tool.tables(empty)


def test_main_orders_the_sections_and_writes_json_and_tables(monkeypatch, tmp_path):
    """main() with every measurement replaced by a stub: eager steps, then pre-training, then compiled steps under
    the time budget; the speed-up of compiled over eager; gpu_check.json and gpu_check.md written."""
    import json

    tool = _tool()
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "stub GPU")
    monkeypatch.setattr(tool, "run_tests", lambda timeout=None: calls.append("tests") or {
        "files": ["t.py"], "returncode": 0, "summary": "3 passed", "seconds": 1.0})
    monkeypatch.setattr(tool, "kernel_figures", lambda device, args, deadline=None: calls.append("kernel") or [])

    def variants(device, args, peak, compiled, deadline=None):
        calls.append(("variants", compiled, deadline is not None))
        return [{"variant": "dino", "compiled": compiled, "image_hw": [800, 1333], "step_s": 0.5 if compiled else 1.0}]

    monkeypatch.setattr(tool, "variant_figures", variants)
    monkeypatch.setattr(tool, "pretrain_figures", lambda device, args, deadline=None: calls.append("pretrain") or {
        900: {"disco_over_siamese": 1.02, "dmoqf_share_of_disco_step": 0.004}})
    result = tool.main(["--out", str(tmp_path), "--peak-tflops", "100"])
    assert calls == ["tests", "kernel", ("variants", False, False), "pretrain", ("variants", True, True)]
    assert [r.get("speedup_over_eager") for r in result["variants"]] == [None, 2.0]
    assert result["goals"]["dmoqf_share_at_900"]["met"] is True and result["peak_tflops"] == 100
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["goals"]["disco_over_siamese_max"]["value"] == 1.02
    assert "| dino | yes | 800x1333 |" in (tmp_path / "gpu_check.md").read_text()


def test_variant_steps_run_through_the_train_loop_on_cpu(monkeypatch):
    """Section 3's measurement itself (not a stub), on CPU with the demo's small Conditional DETR at 64 x 64: one
    row per variant with a step time, a finite loss and a FLOP count; a variant that fails is recorded, not
    raised, and the others still run."""
    import types

    tool = _tool()
    monkeypatch.setattr(tool, "variant_steps", lambda: {"cond": ("configs/demo/cond.py", (64, 64), 1),
                                                        "broken": ("configs/no_such_config.py", (64, 64), 1)})
    args = types.SimpleNamespace(variants=["broken", "cond"], iters=2, warmup=1)
    rows = tool.variant_figures(torch.device("cpu"), args, None, compiled=False)
    assert [r["variant"] for r in rows] == ["broken", "cond"]
    assert "no_such_config.py" in rows[0]["error"]
    row = rows[1]
    assert "error" not in row, row
    assert row["step_s"] > 0 and row["first_step_s"] > 0 and row["loss_finite"] is True
    assert row["gflops_per_step"] > 0 and row["share_of_peak"] is None   # no peak known for a CPU
    assert row["image_hw"] == [64, 64] and row["batch"] == 1 and row["peak_memory_gib"] is None


def test_quick_is_sized_for_five_minutes_on_one_h100():
    """--quick's plan (the estimates of each unit, the tests at their timeout) fits QUICK_LIMIT_S, and so does its
    worst case: a unit that starts just before --time-budget runs out, after start-up. The full check does not fit."""
    from disco_detr.variants import VARIANTS

    tool = _tool()
    args = tool.parse_args(["--quick"])
    plan = tool.quick_plan(len(VARIANTS), args)
    assert [name for name, _ in plan][:2] == ["startup", "tests"]
    assert sum(1 for name, _ in plan if name.startswith("variant step")) == len(VARIANTS)
    assert any(name.startswith("kernel batch 2 bfloat16") for name, _ in plan)
    assert any(name.startswith("kernel batch 2 float32") for name, _ in plan)
    assert [name for name, _ in plan][-1] == "pretrain N=900"    # the DisCo / Siamese ratio, last by value
    assert sum(seconds for _, seconds in plan) <= tool.QUICK_LIMIT_S
    longest_after_tests = max(seconds for name, seconds in plan if name not in ("startup", "tests"))
    assert tool.ESTIMATE_S["startup"] + args.time_budget + longest_after_tests <= tool.QUICK_LIMIT_S
    assert args.tests_timeout < args.time_budget    # the tests cannot eat the whole budget
    full = tool.parse_args([])
    assert sum(seconds for _, seconds in tool.quick_plan(len(VARIANTS), full)) > tool.QUICK_LIMIT_S


def test_quick_options_and_overrides():
    tool = _tool()
    full, quick = tool.parse_args([]), tool.parse_args(["--quick"])
    assert {k: getattr(full, k) for k in tool.FULL} == tool.FULL and full.compile and not full.quick
    assert {k: getattr(quick, k) for k in tool.QUICK} == tool.QUICK and not quick.compile
    mixed = tool.parse_args(["--quick", "--iters", "7", "--pretrain-queries", "300", "900"])
    assert mixed.iters == 7 and mixed.pretrain_queries == [300, 900] and mixed.kernel_batches == [2]
    with pytest.raises(SystemExit):
        tool.parse_args(["--quick", "--pretrain-queries", "100"])


def test_quick_main_puts_every_unit_under_the_budget(monkeypatch, tmp_path):
    """main(--quick) with stubbed measurements: the tests get their timeout, every later section the deadline,
    no compiled steps; the same JSON and tables as the full check."""
    import json

    tool = _tool()
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "stub GPU")
    monkeypatch.setattr(tool, "run_tests", lambda timeout=None: calls.append(("tests", timeout)) or {
        "files": ["t.py"], "returncode": 0, "summary": "3 passed", "seconds": 1.0})
    monkeypatch.setattr(tool, "kernel_figures",
                        lambda device, args, deadline=None: calls.append(("kernel", deadline is not None)) or [])

    def variants(device, args, peak, compiled, deadline=None):
        calls.append(("variants", compiled, deadline is not None))
        return [{"variant": "dino", "compiled": compiled, "image_hw": [800, 1333], "step_s": 1.0}]

    monkeypatch.setattr(tool, "variant_figures", variants)
    monkeypatch.setattr(tool, "pretrain_figures", lambda device, args, deadline=None: calls.append(
        ("pretrain", args.pretrain_queries, deadline is not None)) or {900: {"disco_over_siamese": 1.02}})
    tool.main(["--quick", "--out", str(tmp_path), "--peak-tflops", "100"])
    assert calls == [("tests", tool.QUICK["tests_timeout"]), ("kernel", True), ("variants", False, True),
                     ("pretrain", [900], True)]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["args"]["quick"] is True and saved["goals"]["disco_over_siamese_max"]["value"] == 1.02
    assert "| dino | no | 800x1333 |" in (tmp_path / "gpu_check.md").read_text()


def test_sections_past_the_deadline_are_recorded_as_skipped():
    """Past the deadline, the kernel, variant and pre-training sections record each unit as skipped and build
    nothing (so this runs on CPU); the table shows why."""
    import time
    import types

    tool = _tool()
    args = types.SimpleNamespace(kernel_batches=[2], kernel_queries=900, iters=1, warmup=1, variants=["dino"],
                                 pretrain_queries=[900], peak_tflops=None)
    past = time.perf_counter() - 1.0
    kernel = tool.kernel_figures(torch.device("cpu"), args, past)
    assert len(kernel) == 4 and all(r["error"] == tool.SKIPPED for r in kernel)
    rows = tool.variant_figures(torch.device("cpu"), args, None, compiled=False, deadline=past)
    assert rows == [{"variant": "dino", "compiled": False, "error": tool.SKIPPED}]
    assert tool.pretrain_figures(torch.device("cpu"), args, past) == {900: {"error": tool.SKIPPED}}
    result = {"device": "stub", "torch": "2.x", "triton": "3.x", "seconds": 1.0, "kernel": kernel}
    result["goals"] = tool.goals(result)
    assert f"| 2 | bfloat16 | encoder | - | - | - | - | - | - | - | - | - | {tool.SKIPPED} |" in tool.tables(result)
