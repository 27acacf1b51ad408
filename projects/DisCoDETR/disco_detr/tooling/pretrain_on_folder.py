"""Pre-train a detector on a folder of one's own unlabelled images, in one command.

    python tools/pretrain_on_folder.py --images datasets/my_photos --variant cond --method disco \\
        [--preset small|paper] --output output/my_pretrain [key=value ...]

1. makes the proposals the method reads (runs tools/generate_proposals.py: EdgeBoxes for DisCo / Siamese
   DETR, selective search for DETReg) into ``--proposals`` (default ``<output>/proposals_<algorithm>.sqlite``);
   resumable, so a rerun computes only the images not yet in the store;
2. builds the pre-training config of (method, variant, preset) (configs/common/pretrain.py), points its
   dataset at the folder (:func:`disco_detr.data.load_unlabelled_folder`: no registration needed), applies
   the ``key=value`` overrides and writes it as ``<output>/pretrain_config.yaml``, a plain LazyConfig that
   ``tools/lazyconfig_train_net.py --config-file`` reruns as it is (edit it there);
3. trains it with tools/lazyconfig_train_net.py (``--resume``: a rerun continues a killed run);
4. prints the fine-tuning config that matches the checkpoint and the command to run it.

``--preset small`` (default) is the demo detector (frozen ImageNet MobileNetV2, d = 128) on photos at
320-480 px; its backbone weights come from ``train.init_checkpoint`` (default the demo's
datasets/weights/mobilenet_v2_imagenet.pth, made by tools/prepare_demo_backbone.py). ``--preset paper`` is the
paper's R50 run (train.init_checkpoint=<SwAV R50 weights>). docs/own_data.md walks through it.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from ..checkpoint.transfer import matching_finetune_configs
from ..config import apply_overrides, pretraining_config
from ..data.pretrain_datasets import load_unlabelled_folder
from ..variants import METHODS, REPO_ROOT, VARIANTS

__all__ = ["build_parser", "folder_config", "finetune_hint", "main"]

CONFIG_NAME = "pretrain_config.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of unlabelled images (searched recursively)")
    p.add_argument("--variant", required=True, choices=sorted(VARIANTS), help="the detector (docs/detectors.md)")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="the pre-training method")
    p.add_argument("--preset", default="small", choices=("small", "paper"),
                   help="small: MobileNetV2, d=128, 320-480 px (CPU or one small GPU); paper: R50 as in the paper")
    p.add_argument("--output", required=True, help="run folder: proposals, config, checkpoints, log")
    p.add_argument("--proposals", default=None,
                   help="proposals store (default <output>/proposals_<algorithm>.sqlite); made or completed here")
    p.add_argument("--proposal-workers", type=int, default=os.cpu_count() or 1,
                   help="processes computing proposals (default: every core)")
    p.add_argument("--num-gpus", type=int, default=1, help="GPUs (or CPU processes) to train on")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value, last (e.g. train.max_iter=2000)")
    return p


def folder_config(method: str, variant: str, preset: str, images: str, proposals: str, output: str,
                  overrides: list[str] | None = None):
    """The pre-training config of (``method``, ``variant``, ``preset``) on the folder ``images`` with its
    proposals store ``proposals`` (absolute paths kept in the config), output to ``output``, then ``overrides``."""
    cfg = pretraining_config(method, variant, preset)
    cfg.dataloader.train.dataset = L(load_unlabelled_folder)(
        image_root=os.path.abspath(images), proposals_file=os.path.abspath(proposals),
        method=METHODS[method].proposals)
    cfg.train.output_dir = output
    return apply_overrides(cfg, overrides, f"the {method} / {variant} / {preset} pre-training config")


def finetune_hint(checkpoint: str) -> str:
    """What to run next: the fine-tuning config that matches ``checkpoint`` and the command."""
    configs = matching_finetune_configs(checkpoint)
    if not configs:
        return f"Pre-trained checkpoint: {checkpoint} (no matching fine-tuning config is known)"
    name = re.sub(r"^configs/|\.py$", "", configs[0])
    lines = [f"Pre-trained checkpoint: {checkpoint}",
             f"Matching fine-tuning config: {' or '.join(configs)}. Copy configs/own/finetune_voc.py (or "
             f"finetune_coco.py), set your dataset and preset(\"{name}\") in it (docs/own_data.md), then:",
             f"  python tools/lazyconfig_train_net.py --config-file my_finetune.py train.init_checkpoint={checkpoint}"]
    return "\n".join(lines)


def _tool(script: str, *args: str) -> list[str]:
    """The command line of tools/``script`` (run as its own process, as a user would)."""
    return [sys.executable, os.path.join(REPO_ROOT, "tools", script), *args]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.images):
        parser.error(f"--images {args.images!r} is not a folder")
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    algorithm = METHODS[args.method].proposals
    os.makedirs(args.output, exist_ok=True)
    proposals = args.proposals or os.path.join(args.output, f"proposals_{algorithm}.sqlite")

    cfg = folder_config(args.method, args.variant, args.preset, args.images, proposals, args.output, opts)
    print(f"[1/3] proposals ({algorithm}) -> {proposals}", flush=True)
    rc = subprocess.call(_tool("generate_proposals.py", "--images", args.images, "--out", proposals, "--method",
                               algorithm, "--workers", str(max(args.proposal_workers, 1))))
    if rc:
        return rc

    config_file = os.path.join(args.output, CONFIG_NAME)
    LazyConfig.save(cfg, config_file)
    if not os.path.isfile(config_file):  # LazyConfig.save falls back to a pickle when yaml cannot hold the config
        raise RuntimeError(f"could not write {config_file} as yaml (see the error above)")
    print(f"[2/3] config -> {config_file} (edit it and rerun: python tools/lazyconfig_train_net.py "
          f"--config-file {config_file})", flush=True)

    command = _tool("lazyconfig_train_net.py", "--config-file", config_file, "--num-gpus", str(args.num_gpus),
                    "--resume")
    print(f"[3/3] training: {' '.join(command[1:])}", flush=True)
    rc = subprocess.call(command)
    if rc:
        return rc
    print(finetune_hint(os.path.join(args.output, "model_final.pth")), flush=True)
    return 0
