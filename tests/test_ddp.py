"""Two-process CPU DDP (GLOO) through detectron2's launch gives the single-process result.

Samples are functions of their stream position (not of the rank), the loss normaliser is
averaged over workers and DDP averages gradients, so with FrozenBN, no dropout and SGD two
processes with 2 images each must reach the weights of one process with 4 images.
"""
import os
import subprocess
import sys

import torch
from detectron2.config import instantiate

from disco_detr.config import load_config
from disco_detr.tooling.ddp_matrix import logged_losses

from conftest import REPO

SGD_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_cond_sgd.py")

# One image size for every sample: a batch is padded to its largest image and a CNN's
# borders see the padding, so different batch compositions (4 images vs 2 + 2) would
# otherwise differ slightly for a reason that has nothing to do with DDP.
COMMON = ["train.max_iter=3", "train.eval_period=0", "dataloader.train.mapper.min_sizes=[96]",
          "dataloader.train.mapper.crop_probability=0.0"]


def _train(output_dir, num_gpus, *extra):
    flags = [a for a in extra if a.startswith("--")]
    overrides = [a for a in extra if not a.startswith("--")]
    cmd = [sys.executable, os.path.join(REPO, "tools", "lazyconfig_train_net.py"), "--config-file", SGD_CONFIG,
           "--num-gpus", str(num_gpus), *flags, *COMMON, f"train.output_dir={output_dir}", *overrides]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_cpu_processes_match_one(demo_root, tmp_path):
    log_one = _train(str(tmp_path / "one"), 1)
    log_two = _train(str(tmp_path / "two"), 2)
    assert "copypaste: AP,AP50,AP75" in log_one and "copypaste: AP,AP50,AP75" in log_two
    assert "World size: 2" in log_two
    # --eval-only on the final checkpoint reproduces the end-of-training evaluation
    final = tmp_path / "one" / "model_final.pth"
    log_eval = _train(str(tmp_path / "eval"), 1, "--eval-only", f"train.init_checkpoint={final}")
    assert _copypaste(log_eval) == _copypaste(log_one)
    # the logged losses (averaged over workers) equal the single-process losses: the same
    # samples, and the loss normaliser counts the boxes of all workers
    losses_one, losses_two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert len(losses_one) == 3
    for it in losses_one:
        for name, value in losses_one[it].items():
            assert abs(losses_two[it][name] - value) <= 1e-3 * max(1.0, abs(value)), (it, name)
    # the weight updates (SGD: linear in the gradients) agree up to float rounding
    torch.manual_seed(0)  # the trainer seeds with train.seed=0 before building the model
    init = instantiate(load_config(SGD_CONFIG).model).state_dict()
    one = torch.load(tmp_path / "one" / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert one.keys() == two.keys() == init.keys()
    keys = [k for k in init if init[k].is_floating_point()]
    delta_one = torch.cat([(one[k] - init[k]).flatten() for k in keys])
    delta_two = torch.cat([(two[k] - init[k]).flatten() for k in keys])
    assert delta_one.norm() > 0
    assert (delta_one - delta_two).norm() < 1e-3 * delta_one.norm()


def _copypaste(log):
    """The AP,AP50,... numbers of detectron2's last 'copypaste:' line."""
    lines = [line for line in log.splitlines() if "copypaste: " in line and "AP" not in line.split("copypaste: ")[1]]
    return lines[-1].split("copypaste: ")[1]
