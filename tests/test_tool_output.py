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
