"""DAB-DETR: detrex's outputs reproduced (tests/data/reference/dab_detr.pt through the detrex converter), anchors
refined layer by layer, the box sine embedding by hand, training forward/backward, padding invariance, the
pre-training contract, and the paper configs (fine-tuning and DisCo / Siamese pre-training) on the CPU."""
import math
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import Backbone, ShapeSpec
from torch import nn
from torch.nn import functional as F

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.config import load_config
from disco_detr.convert.detrex import convert_detrex
from disco_detr.modeling import DABDETR, build_tiny_resnet
from disco_detr.modeling.detectors.dab_detr import DABDecoder, DABEncoder, sine_embed_boxes

from conftest import (
    REFERENCE,
    REPO,
    assert_pretraining_losses_logged,
    detrex_fixture_errors,
    parameters_without_gradient,
    perturb_parameters_,
)

FIXTURE = os.path.join(REFERENCE, "dab_detr.pt")
ATOL_LOGITS, ATOL_BOXES = 5e-5, 5e-6  # the fixture README's suggestion
CONFIGS = {name: os.path.join(REPO, "configs", f"{name}.py")
           for name in ("finetune_dab_voc", "finetune_dab_coco", "finetune_dab_coco_24ep")}


class _ToyBackbone(Backbone):
    """The fixture's backbone: ``relu(conv2d(x, W, stride=s, kernel_size=s))``, no bias (non-overlapping
    patches, so also padding-invariant by construction)."""

    def __init__(self, stride=32, channels=64, name="res5", bias=False):
        super().__init__()
        self.name, self.stride, self.channels = name, stride, channels
        self.add_module(name, nn.Conv2d(3, channels, stride, stride, bias=bias))

    def forward(self, x):
        return {self.name: F.relu(getattr(self, self.name)(x))}

    def output_shape(self):
        return {self.name: ShapeSpec(channels=self.channels, stride=self.stride)}


def _fixture_model(fixture) -> DABDETR:
    c = fixture["config"]
    d, heads, ffn = c["d_model"], c["num_heads"], c["ffn_dim"]
    assert c["modulate_hw_attn"] and c["num_patterns"] == 0 and c["encoder_ffn"]["activation"] == "PReLU"
    assert c["backbone"]["levels"] == ["res5"] and c["position_embedding"]["num_pos_feats"] == d // 2
    assert c["query_sine_embed"]["num_pos_feats"] == d // 2
    torch.manual_seed(0)
    return DABDETR(
        backbone=_ToyBackbone(c["backbone"]["strides"][0], c["backbone"]["channels"][0]), in_feature="res5",
        encoder=DABEncoder(c["encoder_layers"], d, heads, ffn, 0.0),
        decoder=DABDecoder(c["decoder_layers"], d, heads, ffn, 0.0, modulate_hw_attn=True),
        num_classes=c["num_classes"], num_queries=c["num_queries"], criterion=None,
        pixel_mean=c["pixel_mean"], pixel_std=c["pixel_std"], position_offset=c["position_embedding"]["offset"],
        position_temperature=c["position_embedding"]["temperature"], size_divisibility=0,
    ).eval()


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def reference_model(fixture):
    model = _fixture_model(fixture)
    state, _ = convert_detrex(fixture["state_dict"], "dab", reference=model)
    model.load_state_dict(state, strict=True)
    return model


def test_detrex_outputs_reproduced(fixture):
    model = _fixture_model(fixture)
    state, report = convert_detrex(fixture["state_dict"], "dab", reference=model)
    assert not report.unmatched and not report.dropped
    # exactly detrex's aliases are merged: the PReLU stored twice per FFN, the decoder's box-head alias
    assert set(report.merged) == {k for group in fixture["aliased_keys"] for k in group[1:]}
    assert len(report.converted) + len(report.merged) == len(fixture["state_dict"]) + sum(
        2 for k in fixture["state_dict"] if "in_proj_" in k)
    model.load_state_dict(state, strict=True)
    errors = detrex_fixture_errors(model, fixture)
    print({k: f"{a:.2e} / {b:.2e}" for k, (a, b) in errors.items()})
    for key, (logits, boxes) in errors.items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (key, logits, boxes)


def test_converter_refuses_unequal_aliases_and_unknown_keys(fixture):
    state = dict(fixture["state_dict"])
    prelu = "transformer.decoder.layers.1.ffns.0.layers.0.1.weight"
    with pytest.raises(ValueError, match=prelu.replace(".", r"\.")):
        convert_detrex({**state, prelu: state[prelu] + 0.1}, "dab")
    with pytest.raises(ValueError, match="transformer.decoder.bbox_embed.layers.2.bias"):
        convert_detrex({**state, "transformer.decoder.bbox_embed.layers.2.bias": torch.zeros(4)}, "dab")
    with pytest.raises(KeyError, match="transformer.decoder.extra.weight"):
        convert_detrex({**state, "transformer.decoder.extra.weight": torch.zeros(1)}, "dab")
    with pytest.raises(KeyError, match="unexpected detrex"):
        convert_detrex(state, "conditional")  # anchor_box_embed, ref_anchor_head, ... are not Conditional DETR's


def test_converted_file_loads_into_the_finetuning_config(fixture, tmp_path, capsys):
    """tools/convert/convert_detrex.py --variant dab writes the checkpoint; the paper's VOC config, shrunk to the
    fixture's sizes, loads it through DisCoCheckpointer and reproduces detrex."""
    from disco_detr.tooling.convert import convert_detrex as tool
    dst = tmp_path / "dab.pth"
    tool.main(["--variant", "dab", FIXTURE, str(dst), "--no-check"])
    assert "0 unmatched" in capsys.readouterr().out
    c = fixture["config"]
    m = load_config(CONFIGS["finetune_dab_voc"]).model
    m.num_classes, m.num_queries = c["num_classes"], c["num_queries"]
    for part, layers in ((m.encoder, c["encoder_layers"]), (m.decoder, c["decoder_layers"])):
        part.update(num_layers=layers, d_model=c["d_model"], num_heads=c["num_heads"], dim_feedforward=c["ffn_dim"])
    m.backbone = L(_ToyBackbone)()
    model = instantiate(m).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # everything must come from the file
    DisCoCheckpointer(model).load(str(dst))
    for key, (logits, boxes) in detrex_fixture_errors(model, fixture).items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (key, logits, boxes)


def test_anchors_are_refined_layer_by_layer(reference_model):
    """Layer 0 starts from sigmoid(anchor_embed); layer i + 1 from sigmoid(bbox_embed(h_i) + logit(anchor_i))
    with h_i the layer's raw output; layer i predicts sigmoid(bbox_embed(norm(h_i)) + logit(anchor_i))."""
    model = reference_model
    raw = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: raw.append(out)) for layer in model.decoder.layers]
    gen = torch.Generator().manual_seed(5)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=gen)]
    try:
        with torch.no_grad():
            _, dec = model.run(model.preprocess_images(images))
    finally:
        for h in hooks:
            h.remove()
    assert len(raw) == len(model.decoder.layers) == dec.references.shape[0] == 2
    ref = dec.references.double()
    anchors = model.anchor_embed.weight.double().sigmoid()
    torch.testing.assert_close(ref[0, 0], anchors, atol=1e-6, rtol=0)
    head = model.bbox_embed.double()
    try:
        for i in range(len(raw)):
            logit = torch.log(ref[i] / (1 - ref[i]))
            boxes = (head(dec.hidden[i].double()) + logit).sigmoid()
            torch.testing.assert_close(dec.boxes[i].double(), boxes, atol=1e-5, rtol=0)
            if i + 1 < len(raw):
                refined = (head(raw[i].double()) + logit).sigmoid()
                torch.testing.assert_close(ref[i + 1], refined, atol=1e-5, rtol=0)
                assert (ref[i + 1] - ref[i]).abs().max() > 1e-2  # a real refinement, not the same anchor
    finally:
        model.bbox_embed.float()


def test_sine_embedding_of_boxes_by_hand():
    d = 8
    boxes = torch.tensor([[0.25, 0.5, 0.1, 0.9], [0.9, 0.05, 0.6, 0.3]], dtype=torch.float64)
    got = sine_embed_boxes(boxes.float(), d)
    assert got.shape == (2, 2 * d)
    for b in range(2):
        cx, cy, w, h = boxes[b].tolist()
        expected = []
        for v in (cy, cx, w, h):  # DAB-DETR's order
            for i in range(d // 2):
                angle = v * 2 * math.pi / 10000 ** (2 * (i // 2) / (d // 2))
                expected.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
        torch.testing.assert_close(got[b].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)


def _shrink(model):
    """A paper model config for CPU tests: tiny ResNet (res4, stride 16), d=32, 4 heads, 1+2 layers, 12 queries."""
    model.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                          out_features=("res4",), norm="FrozenBN")
    model.in_feature = "res4"
    for part, layers in ((model.encoder, 1), (model.decoder, 2)):
        part.update(num_layers=layers, d_model=32, num_heads=4, dim_feedforward=64)
    model.num_queries = 12
    model.num_classes = 5
    return model


def _tiny_model(seed=0) -> DABDETR:
    torch.manual_seed(seed)
    return instantiate(_shrink(LazyConfig.load(CONFIGS["finetune_dab_coco"]).model))


def test_forward_backward_mixed_sizes():
    model = perturb_parameters_(_tiny_model())
    missing = parameters_without_gradient(model)
    # the first layer's content queries are zeros, so its self-attention content projections get no weight gradient
    # (as in the release); everything else, PReLUs, modulation and query-scale heads included, learns
    zero_input = {f"decoder.layers.0.proj.sa_{name}.weight" for name in ("qcontent", "kcontent", "v")}
    assert missing == zero_input, f"parameters without gradient: {sorted(missing - zero_input)}"
    assert model.anchor_embed.weight.grad[:, :2].abs().sum() > 0  # the centres are learned too


def test_padding_masks_make_predictions_batch_invariant():
    """An image alone and the same image padded inside a larger batch give the same outputs: attention never
    reads padding and positions are normalised by the un-padded size."""
    model = _tiny_model()
    model.backbone = _ToyBackbone(16, 32, "res4", bias=True)
    gen = torch.Generator().manual_seed(1)
    small = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=gen)
    large = torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=gen)
    model.eval()
    with torch.no_grad():
        _, alone = model.run(model.preprocess_images([small]))
        enc, batched = model.run(model.preprocess_images([small, large]))
    assert enc.mask[0].any()  # the small image really is padded
    torch.testing.assert_close(batched.logits[:, 0], alone.logits[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.boxes[:, 0], alone.boxes[:, 0], atol=1e-6, rtol=0)


def test_pretraining_contract():
    """Zero content, no positional query, the anchors (B, N, 4) as references (the same for every image);
    fused features enter the content; decode starts from QueryInit.reference and QueryInit.content."""
    model = _tiny_model().eval()
    assert model.fusion_target == "content" and not model.references_depend_on_image
    gen = torch.Generator().manual_seed(2)
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=gen) for _ in range(2)]
    with torch.no_grad():
        encoded = model.encode(model.preprocess_images(images))
        queries = model.initial_queries(encoded)
        assert queries.position is None and queries.content.shape == (2, 12, 32) and not queries.content.any()
        torch.testing.assert_close(queries.reference, model.anchor_embed.weight.sigmoid()[None].expand(2, -1, -1))
        plain = model.decode(encoded, queries)
        torch.testing.assert_close(plain.references[0], queries.reference)
        moved = queries.reference.clone()
        moved[:, 3, :2] = 0.5 * moved[:, 3, :2] + 0.25
        other = model.decode(encoded, queries.replace(reference=moved))
        torch.testing.assert_close(other.references[0], moved)
        assert not torch.allclose(other.boxes[:, :, 3], plain.boxes[:, :, 3])
        content = queries.content.clone()
        content[:, 3] = 1.0  # a fused feature on query 3 only
        fused = model.decode(encoded, queries.replace(content=content))
        torch.testing.assert_close(fused.references[0], queries.reference)
        assert not torch.allclose(fused.hidden[:, :, 3], plain.hidden[:, :, 3])  # (the box head starts at zero)
        with pytest.raises(ValueError, match="4-d anchor boxes"):
            model.decode(encoded, queries.replace(reference=queries.reference[..., :2]))
    assert [k for k in model.state_dict() if k.startswith(model.transfer_drop)] == ["class_embed.weight",
                                                                                      "class_embed.bias"]


def test_paper_settings_and_lr_groups():
    for name, path in CONFIGS.items():
        cfg = LazyConfig.load(path)
        m = cfg.model
        for part in (m.encoder, m.decoder):
            assert (part.num_layers, part.d_model, part.num_heads, part.dim_feedforward, part.dropout) == (
                6, 256, 8, 2048, 0.0)
        assert m.decoder.modulate_hw_attn and m.num_queries == 300 and m.in_feature == "res5"
        assert (m.position_offset, m.position_temperature) == (0.0, 20.0)
        matcher, crit = m.criterion.matcher, m.criterion
        assert (matcher.cost_class, matcher.cost_bbox, matcher.cost_giou, matcher.class_cost) == (2, 5, 2, "focal")
        assert (crit.weight_class, crit.weight_bbox, crit.weight_giou, crit.aux_loss) == (1, 5, 2, True)
        assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.params.backbone_lr_factor == 0.1
        assert cfg.optimizer.weight_decay == 1e-4 and cfg.train.clip_grad_norm == 0.1
        assert cfg.dataloader.train.total_batch_size == 64
        images = 16551 if name.endswith("voc") else 117266
        epochs, drop = (24, 20) if name.endswith("24ep") else (50, 40)
        assert cfg.train.max_iter == math.ceil(epochs * images / 64)
        sched = cfg.lr_multiplier.scheduler
        assert sched.milestones[0] / sched.milestones[1] == pytest.approx(drop / epochs, abs=1e-5)
        assert m.num_classes == (20 if name.endswith("voc") else 80)
        assert cfg.train.output_dir.endswith(name[len("finetune_"):])

    cfg = LazyConfig.load(CONFIGS["finetune_dab_coco"])
    model = _tiny_model()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lr) == sum(p.requires_grad for p in model.parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert lr[id(p)] == pytest.approx(1e-5 if name.startswith("backbone.") else 1e-4), name


def test_configs_share_the_model():
    """VOC, COCO and COCO 20/24 differ in data, classes, schedule and output folder only, so training one of
    them below exercises every model and optimizer setting (each paper-size step costs seconds on 2 cores)."""
    voc, coco, short = (LazyConfig.load(CONFIGS[n]) for n in ("finetune_dab_voc", "finetune_dab_coco",
                                                                "finetune_dab_coco_24ep"))
    voc.model.num_classes = coco.model.num_classes
    assert voc.model == coco.model == short.model and voc.optimizer == coco.optimizer == short.optimizer
    assert voc.lr_multiplier == coco.lr_multiplier != short.lr_multiplier


def test_paper_config_trains_on_cpu(demo_root, tmp_path, name="finetune_dab_coco_24ep"):
    """A paper fine-tuning config (paper-size transformer, 300 queries) for two iterations on the demo data,
    with the backbone shrunk to a tiny ResNet whose res5 has stride 32 as ResNet-50's."""
    from disco_detr.engine import Trainer

    cfg = load_config(CONFIGS[name], [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "dataloader.train.dataset.names=disco_demo_train", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.train.mapper.min_sizes=[64]",
        "dataloader.train.mapper.max_size=80", "dataloader.train.mapper.crop_resize_sizes=[64]",
        "dataloader.train.mapper.crop_size=[48,64]", "model.num_classes=5",
    ])
    cfg.model.backbone = L(build_tiny_resnet)(widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1), stem_width=8,
                                              norm="FrozenBN", out_features=("res5",))
    del cfg.dataloader["test"]  # no evaluation at the end
    trainer = Trainer(cfg)
    assert isinstance(trainer.model, DABDETR) and trainer.model.num_queries == 300
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2
    after = trainer.model.state_dict()
    for key in ("anchor_embed.weight", "decoder.ref_anchor_head.layers.0.weight", "encoder.query_scale.layers.0.weight"):
        assert not torch.equal(before[key], after[key]), key


def test_siamese_config_is_the_published_baseline():
    """configs/siamese_dab.py is configs/disco_dab.py with fixed query groups, additive fusion and no CLD, nothing
    else (so the DisCo run below and the contract test's Siamese run on DAB-DETR cover it)."""
    disco, siamese = (LazyConfig.load(os.path.join(REPO, "configs", f"{m}_dab.py")) for m in ("disco", "siamese"))
    assert (siamese.model.use_dmoqf, siamese.model.fusion, siamese.model.weight_contrast) == (False, "add", 0.0)
    assert (disco.model.use_dmoqf, disco.model.fusion, disco.model.weight_contrast) == (True, "add", 2.0)
    siamese.model.update(use_dmoqf=True, weight_contrast=2.0)
    assert siamese.model == disco.model and siamese.optimizer == disco.optimizer
    assert siamese.lr_multiplier == disco.lr_multiplier and siamese.dataloader == disco.dataloader
    assert siamese.train.output_dir.endswith("siamese_dab") and disco.train.output_dir.endswith("disco_dab")
    d = disco.model.detector
    assert d.num_queries == 300 and d.num_classes == 2 and d.criterion is None and d.backbone.freeze_at == 5
    assert disco.model.feature_levels == ("res5",) and disco.model.weight_rec == 5.0 and disco.model.weight_enc == 10.0


def test_paper_pretraining_config_runs_on_cpu(demo_proposals, tmp_path, method="disco"):
    """configs/disco_dab.py (300 anchor queries, n = 10, every loss) for two iterations on the demo's unlabelled
    images, with the frozen backbone shrunk and small views."""
    from disco_detr.engine import Trainer

    cfg = load_config(os.path.join(REPO, "configs", f"{method}_dab.py"), [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "dataloader.train.dataset.names=disco_demo_unlabelled", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.train.mapper.min_sizes=[64]",
        "dataloader.train.mapper.max_size=96", "dataloader.train.mapper.crop_size=32",
    ])
    cfg.train.require_backbone_weights = False  # no SwAV weights here: the tiny random backbone on purpose
    cfg.model.detector.backbone = L(build_tiny_resnet)(widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1), stem_width=8,
                                                       norm="FrozenBN", out_features=("res5",), freeze_at=5)
    trainer = Trainer(cfg)
    det = trainer.model.detector
    assert isinstance(det, DABDETR) and det.num_queries == 300 and det.num_classes == 2
    assert trainer.model.weights["rec"] == 5.0 and trainer.model.use_dmoqf == (method == "disco")
    before = det.anchor_embed.weight.detach().clone()
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2 and not torch.equal(before, det.anchor_embed.weight)
    assert_pretraining_losses_logged(tmp_path, method)

