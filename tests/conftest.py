"""Shared fixtures: a tiny generated demo dataset and a tiny Conditional DETR config."""
import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo_cond.py")

# A model small enough for a CPU test step in well under a second.
TINY_OVERRIDES = [
    "model.backbone.widths=[8,16,32]",
    "model.backbone.stem_width=8",
    "model.backbone.norm=FrozenBN",
    "model.encoder.num_layers=1",
    "model.decoder.num_layers=2",
    "model.encoder.d_model=32",
    "model.decoder.d_model=32",
    "model.encoder.num_heads=4",
    "model.decoder.num_heads=4",
    "model.encoder.dim_feedforward=64",
    "model.decoder.dim_feedforward=64",
    "model.num_queries=12",
    "dataloader.train.total_batch_size=4",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.device=cpu",
    "train.log_period=1",
]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A tiny demo dataset (16 train / 6 val / 4 unlabelled images of 96 px), registered."""
    from disco_detr.data.datasets import register_demo_datasets
    from disco_detr.data.demo import generate_demo_dataset

    root = str(tmp_path_factory.mktemp("demo"))
    generate_demo_dataset(root, num_train=16, num_val=6, num_unlabelled=4, image_size=96, seed=3)
    register_demo_datasets(root)
    os.environ["DISCO_DEMO_ROOT"] = root  # for subprocesses
    return root


def tiny_config(output_dir, *extra):
    from disco_detr.config import load_config

    overrides = TINY_OVERRIDES + [
        "dataloader.train.mapper.min_sizes=[80,96]",
        "dataloader.train.mapper.crop_resize_sizes=[80,96]",
        "dataloader.train.mapper.crop_size=[64,90]",
        "dataloader.test.mapper.min_sizes=[96]",
        f"train.output_dir={output_dir}",
        *extra,
    ]
    return load_config(DEMO_CONFIG, overrides)
