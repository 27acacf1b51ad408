"""tools/benchmarks/benchmark_data_scale.py at a tiny scale: every stage runs and reports what it measured."""
import json


def test_data_scale_benchmark_runs_every_stage(tmp_path):
    from disco_detr.tooling.benchmarks import benchmark_data_scale as tool
    report = tool.main(["--entries", "300", "--boxes", "8", "--readers", "2", "--reads", "20", "--workers", "1",
                        "--batches", "3", "--work-dir", str(tmp_path)])
    assert report["store"]["entries"] == 300 and report["store"]["size_bytes"] > 300 * 8 * 20
    assert report["read"]["readers"] == 2 and 0 < report["read"]["p50_ms"] <= report["read"]["max_ms"]
    assert report["registration"]["images"] == 300  # every synthetic image file has its proposals
    memory = report["memory"]
    assert len(memory["worker_private_bytes"]) == 1 and memory["serialized_list_bytes"] > 300 * 50
    saved = json.loads((tmp_path / "data_scale.json").read_text())
    assert saved["goals"] == report["goals"] and set(saved["goals"]) == {
        "registration_under_60s", "worker_under_1GB", "read_under_1ms"}
