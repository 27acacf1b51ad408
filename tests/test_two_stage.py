"""The two-stage base (modeling/detectors/two_stage.py) shared by DINO and RT-DETR: one behaviour on a batch
without boxes, which DDP without ``find_unused_parameters`` survives, and one query selection."""
from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.structures import Boxes, Instances
from torch.nn.parallel import DistributedDataParallel

from disco_detr.modeling import DINO, RTDETR, build_tiny_resnet
from disco_detr.modeling.criterion import RTDETRCriterion, SetCriterion
from disco_detr.modeling.detectors.deformable_detr import DeformableEncoder
from disco_detr.modeling.detectors.dino import DINODecoder
from disco_detr.modeling.detectors.rt_detr import RTDETRDecoder
from disco_detr.modeling.detectors.two_stage import TwoStageDETR
from disco_detr.modeling.layers.hybrid_encoder import HybridEncoder
from disco_detr.modeling.layers.query_selection import encoder_proposals
from disco_detr.modeling.matching import HungarianMatcher

from conftest import perturb_parameters_

FEATURES = ("res2", "res3", "res4")
VARIANTS = ("dino", "rtdetr")


def _tiny(variant: str, seed: int = 0) -> TwoStageDETR:
    """A fine-tuning detector with criterion and denoising: tiny ResNet, d 32, 1 + 2 layers, 12 queries, 5 classes,
    20 denoising queries; parameters moved off the zero initialisations."""
    torch.manual_seed(seed)
    backbone = build_tiny_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8, out_features=FEATURES,
                                 norm="FrozenBN", freeze_at=0)
    common = dict(backbone=backbone, in_features=FEATURES, num_classes=5, num_queries=12, num_denoising=20)
    if variant == "dino":
        model = DINO(encoder=DeformableEncoder(1, 32, 4, 64, 0.0, 4, 2), decoder=DINODecoder(2, 32, 4, 64, 0.0, 4, 2),
                     num_extra_levels=1, norm_groups=8, pixel_mean=[123.7, 116.3, 103.5], pixel_std=[58.4, 57.1, 57.4],
                     criterion=SetCriterion(5, HungarianMatcher(), weight_class=1.0), **common)
    else:
        model = RTDETR(encoder=HybridEncoder((8, 16, 32), 32, 4, 64, expansion=0.5, depth_mult=1 / 3),
                       decoder=RTDETRDecoder(2, 32, 4, 64, 0.0, 3, 2),
                       criterion=RTDETRCriterion(5, HungarianMatcher()), **common)
    return perturb_parameters_(model).train()


def _sample(seed: int, with_boxes: bool) -> dict:
    """A 64 x 80 training input, with two boxes or none."""
    gen = torch.Generator().manual_seed(seed)
    inst = Instances((64, 80))
    boxes = [[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 70.0, 60.0]] if with_boxes else []
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor([1, 4] if with_boxes else [], dtype=torch.long)
    return {"image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8, generator=gen), "instances": inst}


def _gradients(model, batch) -> tuple[dict, set[str]]:
    model.zero_grad(set_to_none=True)
    losses = model(batch)
    sum(losses.values()).backward()
    return losses, {n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_batch_without_boxes_keeps_every_loss_key_and_every_gradient(variant):
    """Without any box there are no denoising groups; the ``*_dn`` keys are still there (zeros) and every trainable
    parameter, the label embedding included, gets a gradient (None would stop DDP without find_unused_parameters)."""
    model = _tiny(variant)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_boxes, touched = _gradients(model, [_sample(0, True)])
    assert touched == trainable
    assert any(k.endswith("_dn") for k in with_boxes) and any(k.endswith("_dn_0") for k in with_boxes)
    without, touched = _gradients(model, [_sample(1, False)])
    assert set(without) == set(with_boxes)
    assert touched == trainable, sorted(trainable - touched)
    dn = {k: v for k, v in without.items() if "_dn" in k}
    assert all(v.item() == 0.0 and v.requires_grad for v in dn.values())
    assert model.label_embedding.weight.grad.abs().sum() == 0.0  # zero-weighted: it only keeps the graph whole


@pytest.mark.parametrize("variant", VARIANTS)
def test_denoising_off_returns_no_dn_keys_and_builds_no_label_embedding(variant):
    model = _tiny(variant)
    model.num_denoising = 0
    for batch in ([_sample(0, True)], [_sample(1, False)]):
        assert not any("_dn" in k for k in model(batch))
    assert model.build_label_embedding(5) is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_query_selection_is_the_top_k_of_the_proposal_heads(variant):
    """The selected tokens are the k valid ones with the best class logit (recomputed from the variant's heads),
    and the decoder starts from their boxes, detached."""
    model = _tiny(variant).eval()
    images = model.preprocess_images([_sample(0, True)["image"], _sample(1, False)["image"][:, :48, :60]])
    with torch.no_grad():
        encoded = model.encode(images)
        proposals, valid = encoder_proposals(encoded.spatial_shapes, encoded.mask)
        hidden, logits, deltas = model.proposal_heads(encoded.memory * valid)
        scores = logits.max(-1).values.masked_fill(~valid[..., 0], float("-inf"))
        expected = scores.topk(model.num_queries, dim=1).indices
        queries = model.initial_queries(encoded)
    ex = encoded.extras
    assert torch.equal(ex["topk_indices"], expected)
    for b in range(2):
        idx = expected[b]
        assert torch.allclose(ex["enc_boxes"][b], (deltas[b, idx] + proposals[b, idx]).sigmoid())
        assert torch.equal(ex["enc_hidden"][b], hidden[b, idx]) and torch.equal(ex["enc_logits"][b], logits[b, idx])
    assert torch.equal(queries.reference, ex["enc_boxes"]) and queries.position is None


# ---- DDP on two CPU processes --------------------------------------------------------------------------------
#: per step, the batch of rank 0 and rank 1 (True = two boxes, False = none)
DDP_STEPS = [(True, False), (False, False), (False, True)]


def _ddp_worker(rank: int, world_size: int, port: int, variant: str, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        model = DistributedDataParallel(_tiny(variant), find_unused_parameters=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        keys = []
        for step, boxes in enumerate(DDP_STEPS):
            losses = model([_sample(10 * step + rank, boxes[rank])])
            keys.append(sorted(losses))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])
        torch.save({"keys": keys, "params": flat}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_ddp_survives_batches_without_boxes(variant, tmp_path):
    """Two gloo processes, DDP with find_unused_parameters=False, steps where one or both ranks have no box: every
    step completes (no hang, no 'expected to have finished reduction'), both ranks return the same loss keys and
    end with the same weights (the gradients were averaged)."""
    ctx = mp.start_processes(_ddp_worker, args=(2, _free_port(), variant, str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=240)
    try:
        while not ctx.join(timeout=5):
            assert datetime.datetime.now() < deadline, "DDP run hung"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["keys"] == r1["keys"] and all(k == r0["keys"][0] for k in r0["keys"])
    assert any(k.endswith("_dn") for k in r0["keys"][0])
    assert torch.equal(r0["params"], r1["params"])
