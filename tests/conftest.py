"""Shared fixtures: a tiny generated demo dataset and a tiny Conditional DETR config."""
import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo", "cond.py")

TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_cond.py")


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


@pytest.fixture(scope="session")
def demo_proposals(demo_root):
    """The tiny demo dataset with EdgeBoxes proposals for its unlabelled split."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_proposals", os.path.join(REPO, "tools", "generate_proposals.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--images", os.path.join(demo_root, "images", "unlabelled"),
               "--out", os.path.join(demo_root, "proposals", "unlabelled.sqlite"), "--workers", "1"])
    return demo_root


def tiny_config(output_dir, *overrides):
    """The tiny test preset (tests/configs/tiny_cond.py) writing to ``output_dir``."""
    from disco_detr.config import load_config

    return load_config(TINY_CONFIG, [f"train.output_dir={output_dir}", *overrides])


def labelled_sample(h, w, boxes, classes, gen):
    """A detectron2 training input: a random (3, h, w) uint8 image and Instances with gt_boxes (xyxy pixels)
    and gt_classes."""
    from detectron2.structures import Boxes, Instances

    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen), "instances": inst}


def mixed_size_batch(gen, empty_width=112):
    """Three labelled images of different sizes, one without boxes (classes < 5)."""
    return [
        labelled_sample(96, 80, [[10, 10, 40, 50], [50, 20, 70, 90]], [0, 3], gen),
        labelled_sample(64, empty_width, [], [], gen),  # an image without boxes
        labelled_sample(72, 72, [[0, 0, 72, 72]], [4], gen),
    ]

