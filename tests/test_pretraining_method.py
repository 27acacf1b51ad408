"""A new pre-training method is a subclass of PretrainingModel and nothing else (docs/pretraining.md,
"Adding a method"): a toy method defined here trains through the project's training loop, and its
checkpoint transfers into a fine-tuning detector through DisCoCheckpointer."""
import itertools
import json

import pytest
import torch
from detectron2.config import instantiate
from torch import nn

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.engine.trainer import DETRTrainLoop
from disco_detr.modeling.layers import normalized_cxcywh
from disco_detr.modeling.pretrain.base import PretrainingModel
from disco_detr.structures import PairedViewBatch, PretrainBatch, SingleViewBatch

from conftest import tiny_config


# ---- the toy method: the whole of what a new method writes ------------------------------------------
class ProposalRegression(PretrainingModel):
    """Toy method on DETReg's batches: the last decoder layer's query nearest to each proposal (by centre)
    regresses the proposal's box (L1, normalised cxcywh), and a head on that query's output regresses the
    frozen backbone feature of the proposal's crop (L1)."""

    batch_type = SingleViewBatch

    def __init__(self, *, detector, levels=("res4",), health_period=0):
        super().__init__(detector=detector, num_classes=1, levels=levels, levels_name="levels",
                         health_period=health_period)
        self.levels = tuple(levels)
        self.feature_head = nn.Linear(detector.d_model, sum(self.backbone_shapes[f].channels for f in levels))

    def losses(self, batch: SingleViewBatch) -> dict[str, torch.Tensor]:
        det = self.detector
        encoded = det.encode(det.preprocess_padded(batch.images, batch.image_sizes))
        decoded = det.decode(encoded, det.initial_queries(encoded))
        boxes, hidden = decoded.boxes[-1], decoded.hidden[-1]  # (B, N, 4) normalised cxcywh, (B, N, d)
        targets = normalized_cxcywh(batch.boxes.float(), batch.image_sizes)  # (B, K, 4)
        box_terms, feature_terms = [], []
        for b, k in enumerate(batch.num_boxes):
            nearest = torch.cdist(targets[b, :k, :2], boxes[b, :, :2].detach().float()).argmin(1)  # (k,)
            box_terms.append((boxes[b, nearest] - targets[b, :k]).abs().sum(1))
            crop_features = self.pooled_backbone_features(batch.crops[b, :k], self.levels)  # (k, C)
            feature_terms.append((self.feature_head(hidden[b, nearest]) - crop_features).abs().mean(1))
        return {"loss_box": torch.cat(box_terms).mean(), "loss_feature": torch.cat(feature_terms).mean()}


# ---- helpers --------------------------------------------------------------------------------------------
def _detector(tmp_path, num_classes=None, freeze_at=None):
    """The tiny Conditional DETR of tests/configs/tiny_cond.py (tiny ResNet, d = 32, 12 queries); with
    ``num_classes`` a pre-training one (no criterion), with ``freeze_at`` = 4 its whole backbone frozen."""
    model = tiny_config(str(tmp_path)).model
    if num_classes is not None:
        model.update(num_classes=num_classes, criterion=None)
    if freeze_at is not None:
        model.backbone.freeze_at = freeze_at
    return instantiate(model)


def _toy(tmp_path):
    torch.manual_seed(0)
    return ProposalRegression(detector=_detector(tmp_path, num_classes=1, freeze_at=4))


def _batch(seed, b=2, k=(3, 2), size=(64, 80), crop=32):
    """A synthetic SingleViewBatch: images (B, 3, H, W) uint8, boxes (B, K, 4) xyxy pixels (k_b rows each),
    crops (B, K, 3, s, s) uint8."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    kmax = max(k)
    xy = torch.rand(b, kmax, 2, generator=gen) * torch.tensor([w * 0.5, h * 0.5])
    boxes = torch.cat([xy, xy + 8 + torch.rand(b, kmax, 2, generator=gen) * torch.tensor([w * 0.4, h * 0.4])], -1)
    for i, n in enumerate(k):
        boxes[i, n:] = 0
    return SingleViewBatch(images=torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen),
                           image_sizes=[(h, w)] * b, boxes=boxes, num_boxes=list(k),
                           crops=torch.randint(0, 256, (b, kmax, 3, crop, crop), dtype=torch.uint8, generator=gen))


# ---- the tests ------------------------------------------------------------------------------------------
def test_a_toy_method_trains_through_the_loop_and_transfers_to_fine_tuning(tmp_path):
    model = _toy(tmp_path).train()
    initial = {k: v.clone() for k, v in model.detector.state_dict().items()}
    batches = [_batch(seed) for seed in range(3)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loop = DETRTrainLoop(model, itertools.cycle(batches), optimizer, device="cpu")
    loop.train(0, 4)
    logged = loop.storage.history("loss_box").values()  # [(value, iteration)]: every step wrote its losses
    assert loop.iter == 4 and [it for _, it in logged] == [0, 1, 2, 3] and all(v > 0 for v, _ in logged)
    trained = model.detector.state_dict()
    changed = [k for k in trained if not torch.equal(trained[k], initial[k])]
    assert any(k.startswith(("encoder.", "decoder.", "query_embed")) for k in changed), changed[:5]
    assert not any(k.startswith("backbone.") for k in changed)  # frozen

    DisCoCheckpointer(model, str(tmp_path / "pretrain")).save("toy")
    torch.manual_seed(1)
    finetune = _detector(tmp_path)  # the fine-tuning detector: same class, the dataset's classes
    fresh = {k: v.clone() for k, v in finetune.state_dict().items()}
    DisCoCheckpointer(finetune, str(tmp_path / "finetune")).load(str(tmp_path / "pretrain" / "toy.pth"))
    got = finetune.state_dict()
    drop = tuple(finetune.transfer_drop)
    for key, value in got.items():
        expected = fresh[key] if key.startswith(drop) else trained[key]
        assert torch.equal(value, expected), key
    report = json.loads((tmp_path / "finetune" / "transfer_report.json").read_text())
    assert {"feature_head.weight", "feature_head.bias", "health_start_reference"} <= set(report["dropped"])
    assert report["fresh"] and all(k.startswith(drop) for k in report["fresh"])
    assert not report["mismatched"] and not report["unexpected"]


def test_the_base_refuses_eval_mode_another_batch_type_and_pending_device_work(tmp_path):
    model = _toy(tmp_path)
    batch = _batch(0)
    with pytest.raises(RuntimeError, match="ProposalRegression is a pre-training model"):
        model.eval()(batch)
    model.train()
    paired = PairedViewBatch(images=torch.zeros(2, 3, 8, 8, dtype=torch.uint8), image_sizes=[(8, 8)] * 2,
                             boxes=torch.zeros(2, 1, 4), crops=None, crop_size=4, view_photometric=None,
                             crop_photometric=None)
    with pytest.raises(TypeError, match="takes a SingleViewBatch, got PairedViewBatch"):
        model(paired)
    assert paired.device_work_pending  # no crops yet

    class PairedToy(ProposalRegression):
        batch_type = PairedViewBatch

    torch.manual_seed(0)
    paired_model = PairedToy(detector=model.detector).train()
    with pytest.raises(ValueError, match="PairedToy got a batch whose colour augmentation or crops are still to be"):
        paired_model(paired)


def test_the_base_checks_the_detector(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="num_classes=1"):
        ProposalRegression(detector=_detector(tmp_path, num_classes=2, freeze_at=4))
    with pytest.raises(ValueError, match="backbone must be frozen in ProposalRegression"):
        ProposalRegression(detector=_detector(tmp_path, num_classes=1))
    with pytest.raises(ValueError, match=r"levels \['res5'\] are not backbone outputs"):
        ProposalRegression(detector=_detector(tmp_path, num_classes=1, freeze_at=4), levels=("res5",))
    with pytest.raises(TypeError, match="needs a DETRDetector"):
        ProposalRegression(detector=nn.Linear(1, 1))


def test_the_training_loop_moves_any_pretraining_batch_type():
    """The loop dispatches on PretrainBatch, not on a list of known batch classes: a new method's own batch
    type is moved to the training device too."""

    class Moved(PretrainBatch):
        def __init__(self, device=None):
            self.device = device

        def to(self, device):
            return Moved(torch.device(device))

    model = nn.Linear(1, 1)
    loop = DETRTrainLoop(model, [], torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    assert loop.prepare_batch(Moved()).device == torch.device("cpu")
    fine_tuning = [{"image": torch.zeros(3, 4, 4)}]
    assert loop.prepare_batch(fine_tuning) is fine_tuning
