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
#: The numerical fixtures of published implementations (detrex, transformers) our detectors reproduce.
REFERENCE = os.path.join(REPO, "tests", "data", "reference")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A tiny demo dataset (16 train / 6 val / 4 unlabelled images of 96 px), registered."""
    from disco_detr.data.datasets import register_demo_datasets
    from disco_detr.tooling.demo_images import generate_demo_dataset

    root = str(tmp_path_factory.mktemp("demo"))
    generate_demo_dataset(root, num_train=16, num_val=6, num_unlabelled=4, image_size=96, seed=3)
    register_demo_datasets(root)
    os.environ["DISCO_DEMO_ROOT"] = root  # for subprocesses
    return root


@pytest.fixture(scope="session")
def demo_proposals(demo_root):
    """The tiny demo dataset with EdgeBoxes proposals for its unlabelled split."""
    from disco_detr.tooling import generate_proposals

    generate_proposals.main(["--images", os.path.join(demo_root, "images", "unlabelled"),
               "--out", os.path.join(demo_root, "proposals", "unlabelled.sqlite"), "--workers", "1"])
    return demo_root


@pytest.fixture(scope="session")
def demo_ss_proposals(demo_root):
    """The tiny demo dataset with selective-search proposals for its unlabelled split."""
    from disco_detr.tooling import generate_proposals

    generate_proposals.main(["--images", os.path.join(demo_root, "images", "unlabelled"), "--method", "selective_search",
               "--out", os.path.join(demo_root, "proposals", "unlabelled_ss.sqlite"), "--workers", "1"])
    return demo_root


def train_on_one_batch(model, batch, steps, optimizer=None, lr=1e-3):
    """``steps`` optimiser steps of ``model`` (train mode) on one batch, the summed loss before each
    step as a list (AdamW at ``lr`` over the trainable parameters unless ``optimizer`` is given)."""
    model.train()
    opt = optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    totals = []
    for _ in range(steps):
        total = sum(model(batch).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    return totals


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



def detrex_fixture_errors(model, fixture, decoded=None) -> dict:
    """Max abs errors (logits, boxes) of ``model`` against a detrex fixture of tests/data/reference/:
    image A in the batch, last layer ("A last") and the other layers ("A aux"), of ``decoded``
    (a DecoderOutput, default ``model.run`` of the batch), and each image alone against
    ``expected_single`` ("A alone", "B alone": detrex does not mask B's padding in eval, we do,
    so B is compared alone)."""
    exp = fixture["expected"]

    def err(logits, boxes, ref):
        return ((logits - ref["pred_logits"]).abs().max().item(), (boxes - ref["pred_boxes"]).abs().max().item())

    with torch.no_grad():
        if decoded is None:
            _, decoded = model.run(model.preprocess_images(fixture["images"]))
        assert decoded.logits.shape[0] == exp["aux"]["pred_logits"].shape[0] + 1
        errors = {"A last": err(decoded.logits[-1, 0], decoded.boxes[-1, 0],
                                {k: exp[k][0] for k in ("pred_logits", "pred_boxes")}),
                  "A aux": err(decoded.logits[:-1, 0], decoded.boxes[:-1, 0],
                               {k: exp["aux"][k][:, 0] for k in ("pred_logits", "pred_boxes")})}
        for name, image, single in zip("AB", fixture["images"], fixture["expected_single"]):
            _, alone = model.run(model.preprocess_images([image]))
            errors[f"{name} alone"] = err(alone.logits[-1], alone.boxes[-1], single)
    return errors


def perturb_parameters_(model, scale: float = 0.05):
    """Move every parameter off the releases' initialisations, whose zero matrices (last box layer,
    sampling offsets, attention weights) give some parameters an exactly zero gradient."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def parameters_without_gradient(model) -> set[str]:
    """One training forward and backward of a two-decoder-layer ``model`` on ``mixed_size_batch``;
    asserts the class / L1 / GIoU losses of both layers are finite and positive and returns the
    names of the trainable parameters whose gradient is missing or all zero."""
    model.train()
    losses = model(mixed_size_batch(torch.Generator().manual_seed(0)))
    names = ("loss_class", "loss_bbox", "loss_giou")
    assert set(losses) == set(names) | {f"{n}_0" for n in names}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    return {n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())}


def assert_pretraining_losses_logged(output_dir, method: str) -> None:
    """The last metrics.json record of a DisCo / Siamese pre-training run holds the localisation,
    reconstruction and L_enc losses, and the contrastive loss exactly when ``method == "disco"``."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        last = [line for line in f if "loss_rec" in line][-1]
    for name in ("loss_loc_bbox", "loss_rec", "loss_enc"):
        assert f'"{name}"' in last
    assert ('"loss_contrast"' in last) == (method == "disco")
