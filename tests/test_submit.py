"""tools/submit.py: a config as a submitit job (here submitit's local executor: 2 processes, one per
"node", through detectron2's launch), and the requeue it asks for on preemption."""
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("submitit")

SGD_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_cond_sgd.py")


def _tool():
    from disco_detr.tooling import submit

    return submit


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_two_process_job_trains_and_logs_to_the_output_folder(demo_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(REPO, "tools", "submit.py"), "--cluster", "local", "--nodes", "2",
           "--gpus-per-node", "1", "--port", str(_port()), "--wait", "--config-file", SGD_CONFIG,
           "train.max_iter=2", "train.eval_period=0", f"train.output_dir={out}"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted job" in proc.stdout and "finished: 2 task(s)" in proc.stdout
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log  # two processes trained together
    logs = os.listdir(out / "submitit")
    assert any(f.endswith("_log.out") for f in logs) and any(f.endswith("_log.err") for f in logs)


def test_preemption_requeues_the_job_with_resume():
    submit = _tool()
    job = submit.TrainJob(["--config-file", "c.py", "train.max_iter=9"], nodes=4, gpus_per_node=8)
    again = job.checkpoint()
    requeued = again.function
    assert isinstance(requeued, submit.TrainJob) and requeued.train_args[0] == "--resume"
    assert requeued.train_args[1:] == job.train_args and (requeued.nodes, requeued.gpus_per_node) == (4, 8)
    assert requeued.checkpoint().function.train_args.count("--resume") == 1  # a second preemption: still once
