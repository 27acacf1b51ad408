"""What our tools print around their work: no import-time torch.jit FutureWarning, LazyConfig examples in --help."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` (a script file: TorchScript reads its source) with every warning shown once per place."""
    script = tmp_path / "script.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "projects", "DisCoDETR")}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-W", "default", str(script)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_importing_the_package_and_detectron2_prints_no_torch_jit_warning_and_hides_no_other(tmp_path):
    """fvcore / detectron2 script functions while they are imported; that warning is filtered there only."""
    done = _python(tmp_path, "import disco_detr, detectron2.engine, detectron2.evaluation, torch, warnings\n"
                   "print('imported', flush=True)\n"
                   "def f(x: torch.Tensor) -> torch.Tensor:\n    return x + 1\n"
                   "torch.jit.script(f)\n"
                   "warnings.warn('another FutureWarning', FutureWarning)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
    assert done.stderr.count("`torch.jit.script` is deprecated") == 1     # the script call after the imports
    assert "another FutureWarning" in done.stderr


def test_help_shows_lazyconfig_examples(tmp_path):
    from disco_detr.engine.launch import argument_parser

    text = argument_parser("lazyconfig_train_net.py").format_help()
    assert "--config-file configs/" in text and "train.init_checkpoint=" in text and "key=value" in text
    assert "cfg.yaml" not in text and "MODEL.WEIGHTS" not in text and "Yacs" not in text
    done = subprocess.run([sys.executable, "-W", "default", os.path.join(ROOT, "tools", "lazyconfig_train_net.py"),
                           "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "projects", "DisCoDETR")})
    assert done.returncode == 0 and done.stdout == text and "torch.jit" not in done.stderr


def test_a_training_run_keeps_the_console_short(demo_root, tmp_path):
    """The model print, the config and the environment report go to files of the output folder; the loader's
    workers are capped at the cores (one line, no DataLoader warning)."""
    from conftest import TINY_CONFIG

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-W", "default", os.path.join(ROOT, "tools", "lazyconfig_train_net.py"),
         "--config-file", TINY_CONFIG, "train.max_iter=1", "train.eval_period=0", f"train.output_dir={out}",
         "dataloader.train.num_workers=64", "dataloader.test.num_workers=64"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "projects", "DisCoDETR"), "OMP_NUM_THREADS": "1"})
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    model = (out / "model.txt").read_text()
    assert "ConditionalDETR" in model and "(backbone)" in model
    assert (out / "config.yaml").is_file() and "PyTorch" in (out / "env.txt").read_text()
    assert f"printed to {out / 'model.txt'}" in console and "(backbone)" not in console
    assert "Environment info" not in console and "Contents of args.config_file" not in console
    assert "config_file='" + TINY_CONFIG + "'" in (out / "log.txt").read_text()  # what transfer.py reads
    assert "capped at" in console and "worker processes" not in console       # torch's "...create N worker processes"
    assert "torch.jit" not in console and "copypaste: AP,AP50,AP75" in console
    assert len(console.splitlines()) < 100                                   # the COCO evaluation is most of it


def test_progress_bar_writes_log_lines_and_warnings_above_the_bar(capsys):
    import logging
    import re
    import warnings

    from disco_detr.utils.progress import progress_bar

    log = logging.getLogger("disco_test_progress")
    log.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    log.addHandler(handler)
    try:
        with progress_bar(total=3, desc="bar", file=sys.stderr, mininterval=0, ascii=True) as bar:
            bar.update(1)
            log.warning("a log line")
            warnings.warn("a warning", UserWarning, stacklevel=1)
            bar.update(2)
        log.warning("after the bar")
    finally:
        log.removeHandler(handler)
    assert log.handlers == []                                          # the console handler is back, alone
    segments = re.split(r"[\r\n]", capsys.readouterr().err)
    assert "a log line" in segments and "after the bar" in segments   # each a line of its own
    assert any(s.endswith("UserWarning: a warning") and "bar:" not in s for s in segments)
    assert any("3/3" in s for s in segments)
