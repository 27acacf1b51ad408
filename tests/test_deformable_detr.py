"""Deformable DETR (single- and multi-scale): training forward/backward, padding invariance, the
pre-training contract, the encoder's reference points, and the paper configs.
(Numerical agreement with detrex's Deformable DETR: tests/test_reference_fixtures.py.)"""
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import Backbone, ShapeSpec
from torch import nn

from disco_detr.config import load_config
from disco_detr.modeling import DeformableDETR, build_tiny_resnet
from disco_detr.modeling.detectors.deformable_detr import encoder_reference_points
from disco_detr.modeling.layers import MultiScaleDeformableAttention

from conftest import REPO, parameters_without_gradient, perturb_parameters_

CONFIGS = {name: os.path.join(REPO, "configs", f"finetune_deformable_{name}.py")
           for name in ("ms_voc", "ms_coco", "ss_voc", "ss_coco")}


def _shrink(model, scale: str):
    """A paper model config shrunk for CPU tests: tiny ResNet (strides 4/8/16), d=32, 1+2 layers, 12 queries."""
    features = ("res2", "res3", "res4") if scale == "ms" else ("res4",)
    model.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                          out_features=features, norm="FrozenBN")
    model.in_features = features
    model.num_extra_levels = 1 if scale == "ms" else 0
    model.norm_groups = 8
    for part, layers in ((model.encoder, 1), (model.decoder, 2)):
        part.update(num_layers=layers, d_model=32, num_heads=4, dim_feedforward=64, num_points=2,
                    num_levels=len(features) + model.num_extra_levels)
    model.num_queries = 12
    model.num_classes = 5
    return model


def _tiny_model(scale: str, seed: int = 0) -> DeformableDETR:
    cfg = LazyConfig.load(CONFIGS[f"{scale}_coco"])
    torch.manual_seed(seed)
    return instantiate(_shrink(cfg.model, scale))


@pytest.mark.parametrize("scale", ["ss", "ms"])
def test_forward_backward_mixed_sizes(scale):
    model = _tiny_model(scale)
    assert model.num_levels == (4 if scale == "ms" else 1) and len(model.input_proj) == model.num_levels
    missing = parameters_without_gradient(perturb_parameters_(model))
    assert not missing, f"parameters without gradient: {sorted(missing)}"


def test_level_count_mismatch_is_an_error():
    cfg = _shrink(LazyConfig.load(CONFIGS["ms_coco"]).model, "ms")
    cfg.decoder.num_levels = 3
    with pytest.raises(ValueError, match="= 4 levels, but the encoder is built for 4 and the decoder for 3"):
        instantiate(cfg)


class _PatchBackbone(Backbone):
    """Non-overlapping s x s patches per level: padding-invariant by construction (the test isolates the masks)."""

    def __init__(self, levels):
        super().__init__()
        self.levels = levels
        for name, (stride, channels) in levels.items():
            self.add_module(name, nn.Conv2d(3, channels, stride, stride))

    def forward(self, x):
        return {name: getattr(self, name)(x).relu() for name in self.levels}

    def output_shape(self):
        return {name: ShapeSpec(channels=c, stride=s) for name, (s, c) in self.levels.items()}


@pytest.mark.parametrize("scale", ["ss", "ms"])
def test_padding_masks_make_predictions_batch_invariant(scale):
    """An image alone and the same image padded inside a larger batch give the same outputs: deformable
    sampling never reads padding (masked values, references scaled by the valid ratios), the dense self-
    attention has no padding, positions are normalised by the un-padded size. GroupNorm statistics of the
    input projections span the padded map (as in the release), so the test replaces them with identities;
    image sides are multiples of 64 so that the stride-64 conv3x3/s2 does not read padded res4 cells."""
    model = _tiny_model(scale)
    levels = {"res2": (8, 8), "res3": (16, 16), "res4": (32, 32)}
    model.backbone = _PatchBackbone({k: v for k, v in levels.items() if k in model.in_features})
    for proj in model.input_proj:
        proj[1] = nn.Identity()
    gen = torch.Generator().manual_seed(1)
    small = torch.randint(0, 256, (3, 64, 128), dtype=torch.uint8, generator=gen)
    large = torch.randint(0, 256, (3, 192, 192), dtype=torch.uint8, generator=gen)
    model.eval()
    with torch.no_grad():
        _, alone = model.run(model.preprocess_images([small]))
        enc, batched = model.run(model.preprocess_images([small, large]))
    assert (enc.valid_ratios[0] < 1).all()  # the small image really is padded at every level
    torch.testing.assert_close(batched.logits[:, 0], alone.logits[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.boxes[:, 0], alone.boxes[:, 0], atol=1e-6, rtol=0)


def test_encoder_reference_points_by_hand():
    shapes = torch.tensor([[3, 4], [2, 2]])
    ratios = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 2 / 3], [0.5, 0.5]]])  # (B, L, (w, h))
    got = encoder_reference_points(shapes, ratios)
    assert got.shape == (2, 12 + 4, 2, 2)
    for b in range(2):
        token = 0
        for lvl, (h, w) in enumerate(shapes.tolist()):
            for y in range(h):
                for x in range(w):
                    # pixel centre normalised by the un-padded extent of its own level ...
                    cx = (x + 0.5) / (ratios[b, lvl, 0].item() * w)
                    cy = (y + 0.5) / (ratios[b, lvl, 1].item() * h)
                    for other in range(2):  # ... then into the padded map of each sampled level
                        expected = torch.tensor([cx * ratios[b, other, 0].item(), cy * ratios[b, other, 1].item()])
                        torch.testing.assert_close(got[b, token, other], expected, atol=1e-6, rtol=0)
                    token += 1


def test_pretraining_contract():
    """What DisCo pre-training relies on: learned references in [0, 1], the same for every image, the
    positional query as the fusion target, decode recomputing references from QueryInit.position."""
    model = _tiny_model("ms").eval()
    assert model.fusion_target == "position" and not model.references_depend_on_image
    gen = torch.Generator().manual_seed(2)
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=gen) for _ in range(2)]
    with torch.no_grad():
        encoded = model.encode(model.preprocess_images(images))
        queries = model.initial_queries(encoded)
        assert queries.reference.shape == (2, 12, 2) and queries.position.shape == queries.content.shape == (2, 12, 32)
        assert (queries.reference >= 0).all() and (queries.reference <= 1).all()
        torch.testing.assert_close(queries.reference[0], queries.reference[1])
        plain = model.decode(encoded, queries)
        assert plain.logits.shape == (2, 2, 12, 5) and plain.boxes.shape == (2, 2, 12, 4)
        torch.testing.assert_close(plain.references[0], queries.reference)
        # queries.reference is not read: the references come from the positional queries
        ignored = model.decode(encoded, queries.replace(reference=torch.rand_like(queries.reference)))
        torch.testing.assert_close(ignored.boxes, plain.boxes)
        shift = torch.zeros_like(queries.position)
        shift[:, 3] = 1.0  # a fused feature on query 3 only
        fused = model.decode(encoded, queries.replace(position=queries.position + shift))
    expected_ref = model.reference_points(queries.position[:, 3] + 1.0).sigmoid()
    torch.testing.assert_close(fused.references[0][:, 3], expected_ref)
    assert not torch.allclose(fused.boxes[:, :, 3], plain.boxes[:, :, 3])
    state = model.state_dict()
    dropped = [k for k in state if k.startswith(model.transfer_drop)]
    assert dropped == ["class_embed.weight", "class_embed.bias"]  # one head shared by the decoder layers


def test_paper_settings_and_lr_groups():
    for name, path in CONFIGS.items():
        cfg = LazyConfig.load(path)
        m = cfg.model
        for part in (m.encoder, m.decoder):
            assert (part.num_layers, part.d_model, part.num_heads, part.dim_feedforward, part.num_points,
                    part.dropout) == (6, 256, 8, 1024, 4, 0.1)
            assert part.num_levels == (4 if name.startswith("ms") else 1)
        assert m.num_queries == 300 and m.position_offset == -0.5
        assert m.in_features == (("res3", "res4", "res5") if name.startswith("ms") else ("res5",))
        assert tuple(m.backbone.out_features) == tuple(m.in_features)
        assert (m.criterion.matcher.cost_class, m.criterion.matcher.cost_bbox, m.criterion.matcher.cost_giou) == (2, 5, 2)
        assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4 and cfg.train.clip_grad_norm == 0.1
        assert cfg.dataloader.train.total_batch_size == 64
        assert cfg.train.max_iter == (12931 if name.endswith("voc") else 91615)  # 50 epochs at batch 64
        sched = cfg.lr_multiplier.scheduler
        assert sched.milestones[0] / sched.milestones[1] == 0.8  # drop after 40 of 50 epochs
        assert m.num_classes == (20 if name.endswith("voc") else 80)
        assert cfg.train.output_dir.endswith(f"finetune_deformable_{name}")

    cfg = LazyConfig.load(CONFIGS["ms_coco"])
    model = _tiny_model("ms")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lr) == sum(p.requires_grad for p in model.parameters())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        slow = name.startswith(("backbone.", "reference_points.")) or ".sampling_offsets." in name
        assert lr[id(p)] == pytest.approx(2e-5 if slow else 2e-4), name


def test_voc_and_coco_configs_share_the_model():
    """The VOC and COCO configs of one scale differ in data, classes and output folder only, so training two
    of the four configs below exercises every model and optimizer setting."""
    for scale in ("ms", "ss"):
        voc, coco = (LazyConfig.load(CONFIGS[f"{scale}_{data}"]) for data in ("voc", "coco"))
        voc.model.num_classes = coco.model.num_classes
        assert voc.model == coco.model and voc.optimizer == coco.optimizer and voc.train.keys() == coco.train.keys()
        assert voc.lr_multiplier == coco.lr_multiplier


@pytest.mark.parametrize("name", ["ms_voc", "ss_coco"])
def test_paper_config_trains_on_cpu(name, demo_root, tmp_path):
    """A paper fine-tuning config (paper-size transformer, 300 queries) for two iterations on the demo
    data, with the backbone shrunk to a tiny ResNet (strides 8/16/32 as ResNet-50's res3-res5)."""
    from disco_detr.engine import Trainer

    cfg = load_config(CONFIGS[name], [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "dataloader.train.dataset.names=disco_demo_train", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.train.mapper.min_sizes=[64]",
        "dataloader.train.mapper.max_size=80", "dataloader.train.mapper.crop_resize_sizes=[64]",
        "dataloader.train.mapper.crop_size=[48,64]", "model.num_classes=5",
    ])
    scale = name[:2]
    cfg.model.backbone = L(build_tiny_resnet)(
        widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1), stem_width=8, norm="FrozenBN",
        out_features=("res3", "res4", "res5") if scale == "ms" else ("res5",))
    del cfg.dataloader["test"]  # no evaluation at the end
    trainer = Trainer(cfg)
    deform = [m for m in trainer.model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert len(deform) == 12 and all(m.num_levels == (4 if scale == "ms" else 1) for m in deform)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2
    after = trainer.model.state_dict()
    assert not torch.equal(before["query_embed.weight"], after["query_embed.weight"])
    assert not torch.equal(before["encoder.layers.0.self_attn.sampling_offsets.weight"],
                           after["encoder.layers.0.self_attn.sampling_offsets.weight"])

