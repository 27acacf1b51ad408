"""DINO: detrex's outputs reproduced (tests/data/reference/dino.pt through the converter), mixed query selection
against a hand re-derivation, look-forward-twice, denoising kept apart from the matching queries, the training
losses, and a few CPU iterations of every DINO paper config (fine-tuning and pre-training)."""
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from test_reference_fixtures import ATOL_BOXES, ATOL_LOGITS, REFERENCE, TinyConvBackbone

from disco_detr.checkpoint import DisCoCheckpointer
from disco_detr.config import load_config
from disco_detr.convert.detrex import convert_detrex
from disco_detr.modeling import DINO, build_resnet_vd, build_tiny_resnet
from disco_detr.modeling.detectors.deformable_detr import DeformableEncoder
from disco_detr.modeling.detectors.dino import DINODecoder
from disco_detr.modeling.layers.denoising import build_denoising_groups

from conftest import REPO, assert_pretraining_losses_logged, detrex_fixture_errors, labelled_sample, perturb_parameters_

FIXTURE = os.path.join(REFERENCE, "dino.pt")
FINETUNE = {name: os.path.join(REPO, "configs", f"finetune_dino_{name}.py") for name in ("voc", "coco", "coco_12ep")}


def _shrink(model):
    """A DINO paper model config shrunk for CPU tests: tiny ResNet (strides 4/8/16 + one extra level), d=32,
    4 heads, 2 points, 1+2 layers, 12 queries, 5 classes, 20 denoising queries."""
    features = ("res2", "res3", "res4")
    model.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                          out_features=features, norm="FrozenBN")
    model.in_features = features
    model.norm_groups = 8
    for part, layers in ((model.encoder, 1), (model.decoder, 2)):
        part.update(num_layers=layers, d_model=32, num_heads=4, dim_feedforward=64, num_points=2)
    model.num_queries = 12
    model.num_classes = 5
    model.num_denoising = 20
    return model


def _tiny(seed=0) -> DINO:
    cfg = LazyConfig.load(FINETUNE["coco"])
    torch.manual_seed(seed)
    return perturb_parameters_(instantiate(_shrink(cfg.model)))  # off detrex's init (boxes = anchors)


# ---- detrex ------------------------------------------------------------------------------------------------
def _fixture_model(cfg):
    d, heads, ffn = cfg["d_model"], cfg["num_heads"], cfg["ffn_dim"]
    attn = cfg["deformable_attention"]
    b = cfg["backbone"]
    assert cfg["position_embedding"]["offset"] == -0.5 and cfg["position_embedding"]["num_pos_feats"] == d // 2
    levels, points = attn["num_levels"], attn["num_points"]
    return DINO(
        backbone=TinyConvBackbone({n: (s, c) for n, s, c in zip(b["levels"], b["strides"], b["channels"])}),
        in_features=cfg["neck"]["in_features"], num_extra_levels=cfg["num_feature_levels"] - len(b["levels"]),
        encoder=DeformableEncoder(cfg["encoder_layers"], d, heads, ffn, 0.0, levels, points),
        decoder=DINODecoder(cfg["decoder_layers"], d, heads, ffn, 0.0, levels, points),
        num_classes=cfg["num_classes"], num_queries=cfg["num_queries"], criterion=None,
        pixel_mean=cfg["pixel_mean"], pixel_std=cfg["pixel_std"],
        position_offset=cfg["position_embedding"]["offset"],
        position_temperature=cfg["position_embedding"]["temperature"],
    ).eval()


def _errors(model, fixture):
    """detrex_fixture_errors of the batch decoded through DINO's query selection, and of the selected
    encoder proposals ("A enc")."""
    enc = fixture["expected"]["enc_outputs"]
    with torch.no_grad():
        encoded = model.encode(model.preprocess_images(fixture["images"]))
        selection = model.select(encoded)
        errors = detrex_fixture_errors(model, fixture, model.decode(encoded, selection.queries))
    errors["A enc"] = ((selection.logits[0] - enc["pred_logits"][0]).abs().max().item(),
                       (selection.boxes[0] - enc["pred_boxes"][0]).abs().max().item())
    return errors


def test_detrex_dino_outputs_reproduced():
    fixture = torch.load(FIXTURE, weights_only=True)
    torch.manual_seed(0)
    model = _fixture_model(fixture["config"])
    state, report = convert_detrex(fixture["state_dict"], "dino", reference=model)
    assert not report.unmatched and not report.dropped
    assert set(report.merged) == {k for group in fixture["aliased_keys"] for k in group[1:]}
    assert len(report.converted) + len(report.merged) == len(fixture["state_dict"]) + sum(
        2 for k in fixture["state_dict"] if "in_proj_" in k)
    ours = {new: old for old, new in report.converted}
    assert ours["enc_class_embed.weight"].endswith("class_embed.2.weight")  # the encoder's head
    model.load_state_dict(state, strict=True)
    errors = _errors(model, fixture)
    print("dino", {k: f"{a:.2e} / {b:.2e}" for k, (a, b) in errors.items()})
    for key, (logits, boxes) in errors.items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (key, logits, boxes)
    # the selection order is torch.topk's: the first decoder references are the encoder boxes in that order
    with torch.no_grad():
        sel = model.select(model.encode(model.preprocess_images(fixture["images"][:1])))
    assert torch.allclose(sel.queries.reference[0], fixture["expected"]["enc_outputs"]["pred_boxes"][0],
                          atol=ATOL_BOXES)


def test_convert_tool_and_finetuning_config_load(tmp_path, capsys):
    """tools/convert/convert_detrex.py --variant dino writes a checkpoint that DisCoCheckpointer loads into the paper's
    VOC config shrunk to the fixture's sizes, which then reproduces detrex; mismatching aliases are refused."""
    fixture = torch.load(FIXTURE, weights_only=True)
    from disco_detr.tooling.convert import convert_detrex as tool
    dst = tmp_path / "dino.pth"
    tool.main(["--variant", "dino", FIXTURE, str(dst), "--no-check"])
    assert "0 unmatched" in capsys.readouterr().out

    c = fixture["config"]
    cfg = load_config(FINETUNE["voc"])
    m = cfg.model
    m.num_classes, m.num_queries = c["num_classes"], c["num_queries"]
    for part, layers in ((m.encoder, c["encoder_layers"]), (m.decoder, c["decoder_layers"])):
        part.update(num_layers=layers, d_model=c["d_model"], num_heads=c["num_heads"], dim_feedforward=c["ffn_dim"])
    b = c["backbone"]
    m.backbone = L(TinyConvBackbone)(levels={n: (s, ch) for n, s, ch in zip(b["levels"], b["strides"], b["channels"])})
    model = instantiate(m).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # everything must come from the file
    DisCoCheckpointer(model).load(str(dst))
    for key, (logits, boxes) in _errors(model, fixture).items():
        assert logits <= ATOL_LOGITS and boxes <= ATOL_BOXES, (key, logits, boxes)

    state = dict(fixture["state_dict"])
    state["transformer.decoder.class_embed.1.bias"] = state["class_embed.1.bias"] + 1
    with pytest.raises(ValueError, match="class_embed.1.bias"):
        convert_detrex(state, "dino")


# ---- query selection, decoder, denoising ------------------------------------------------------------------
def test_query_selection_is_topk_of_encoder_proposals():
    """Re-derive the proposals by hand (float64, per image's un-padded level sizes), score every token by its
    best class logit, sort, and compare indices, anchors and the query init; two image sizes (padding)."""
    model = _tiny().eval()
    gen = torch.Generator().manual_seed(0)
    images = model.preprocess_images([torch.randint(0, 256, (3, 64, 96), generator=gen),
                                      torch.randint(0, 256, (3, 48, 72), generator=gen)])
    with torch.no_grad():
        encoded = model.encode(images)
        sel = model.select(encoded)
        assert sel.indices.shape == (2, 12) and sel.queries.reference.shape == (2, 12, 4)
        mask = encoded.mask
        for b in range(2):
            props, valid = [], []
            start = 0
            for lvl, (h, w) in enumerate(encoded.spatial_shapes.tolist()):
                m = mask[b, start:start + h * w].view(h, w)
                vh, vw = int((~m[:, 0]).sum()), int((~m[0, :]).sum())
                for y in range(h):
                    for x in range(w):
                        p = torch.tensor([(x + 0.5) / vw, (y + 0.5) / vh, 0.05 * 2 ** lvl, 0.05 * 2 ** lvl],
                                         dtype=torch.float64)
                        props.append(p)
                        valid.append(bool(((p > 0.01) & (p < 0.99)).all()) and not bool(m[y, x]))
                start += h * w
            props, valid = torch.stack(props), torch.tensor(valid)
            memory = encoded.memory[b] * valid[:, None].float()
            out = model.enc_output_norm(model.enc_output(memory))
            scores = model.enc_class_embed(out).max(-1).values
            assert valid.sum() >= 13 and (~valid).any() == (b == 1)  # the padded image's padding is invalid
            scores = scores.masked_fill(~valid, float("-inf"))  # they never win while enough valid ones exist
            order = scores.argsort(descending=True)
            gap = (scores[order[:12]] - scores[order[1:13]]).min()
            assert gap > 1e-5  # the ranking is well defined
            assert sel.indices[b].tolist() == order[:12].tolist()
            delta = model.enc_bbox_embed(out).double()[order[:12]]
            logit = torch.where(valid[order[:12], None], torch.log(props[order[:12]] / (1 - props[order[:12]])),
                                torch.tensor(float("inf"), dtype=torch.float64))
            expected = (delta + logit).sigmoid()
            assert torch.allclose(sel.boxes[b].double(), expected, atol=1e-6)
            assert torch.equal(sel.queries.reference[b], sel.boxes[b])
    assert torch.equal(sel.queries.content[0], model.tgt_embed.weight) and sel.queries.position is None
    assert not sel.queries.reference.requires_grad


def test_look_forward_twice_and_detached_references():
    """Layer 1's box starts from layer 0's refined anchor *with* its gradient (look forward twice); the anchor
    layer 1 attends with is the same value, detached."""
    model = _tiny().eval()
    images = model.preprocess_images([torch.randint(0, 256, (3, 64, 80), generator=torch.Generator().manual_seed(1))])
    encoded = model.encode(images)
    dec = model.decode(encoded, model.initial_queries(encoded))
    assert dec.references.shape == (2, 1, 12, 4) and not dec.references.requires_grad
    grads = torch.autograd.grad(dec.boxes[1].sum(), list(model.bbox_embed[0].parameters()), allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    hidden, used, refined = model.decoder(model.initial_queries(encoded).content, dec.references[0], encoded,
                                          model.bbox_embed)
    assert torch.allclose(used[1], refined[0], atol=1e-7) and refined[0].requires_grad
    expected = (model.bbox_embed[1](hidden[1]) + torch.logit(refined[0].clamp(1e-5, 1 - 1e-5))).sigmoid()
    assert torch.allclose(dec.boxes[1], expected, atol=1e-6)


def test_denoising_queries_do_not_change_the_matching_queries():
    """Decoding the matching queries behind a batch of denoising queries (with the group mask) gives exactly
    what decoding them alone gives; without the mask it would not."""
    model = _tiny().eval()
    gen = torch.Generator().manual_seed(2)
    images = model.preprocess_images([torch.randint(0, 256, (3, 64, 80), generator=gen)] * 2)
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.2, 0.3, 0.1, 0.2]])},
               {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.4, 0.2, 0.2]])}]
    with torch.no_grad():
        encoded = model.encode(images)
        queries = model.initial_queries(encoded)
        alone = model.decode(encoded, queries)
        groups = build_denoising_groups(targets, 5, model.num_queries, num_groups=3)
        content = torch.cat([groups.embed_labels(model.label_enc), queries.content], 1)
        reference = torch.cat([groups.boxes, queries.reference], 1)
        full = model._decode(encoded, content, reference, groups.attn_mask)
        _, logits = groups.split(full.logits, dim=2)
        _, boxes = groups.split(full.boxes, dim=2)
        assert torch.allclose(logits, alone.logits, atol=1e-5) and torch.allclose(boxes, alone.boxes, atol=1e-6)
        unmasked = model._decode(encoded, content, reference, None)
        assert not torch.allclose(groups.split(unmasked.logits, dim=2)[1], alone.logits, atol=1e-3)


def test_training_losses_forward_backward():
    model = _tiny().train()
    gen = torch.Generator().manual_seed(3)
    batch = [labelled_sample(64, 96, [[4, 6, 40, 50], [50, 10, 90, 60]], [1, 4], gen),
             labelled_sample(48, 72, [[10, 8, 30, 40]], [2], gen)]
    losses = model(batch)
    names = ("loss_class", "loss_bbox", "loss_giou")
    expected = {f"{n}{s}" for n in names for s in ("", "_0", "_enc", "_dn", "_dn_0")}
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    assert all(losses[f"{n}_dn"] > 0 for n in names)
    sum(losses.values()).backward()
    for name in ("label_enc.weight", "tgt_embed.weight", "enc_class_embed.weight", "enc_bbox_embed.layers.0.weight",
                 "enc_output.weight", "bbox_embed.0.layers.0.weight", "class_embed.1.weight", "level_embed",
                 "encoder.layers.0.self_attn.sampling_offsets.weight"):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # a batch without boxes: no denoising, the same keys (zeros), label_enc still in the graph
    empty = Instances((48, 64))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    losses = model([{"image": torch.randint(0, 256, (3, 48, 64), generator=gen), "instances": empty}])
    assert set(losses) == expected and losses["loss_bbox_dn"].item() == 0.0 and losses["loss_class_dn"].requires_grad
    # inference: top-k (query, class) pairs, boxes inside the image
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 128, "width": 192}])
    inst = out[0]["instances"]
    assert len(inst) == min(model.num_detections, 12 * 5) and inst.image_size == (128, 192)
    assert (inst.pred_boxes.tensor[:, 2:] <= torch.tensor([192.0, 128.0])).all()


def test_denoising_off_builds_no_label_embedding():
    cfg = LazyConfig.load(FINETUNE["coco"])
    cfg.model = _shrink(cfg.model)
    cfg.model.num_denoising = 0
    model = instantiate(cfg.model).train()
    assert model.label_enc is None and not any(k.startswith("label_enc") for k in model.state_dict())
    gen = torch.Generator().manual_seed(4)
    losses = model([labelled_sample(64, 80, [[4, 6, 40, 50]], [1], gen)])
    assert not any("_dn" in k for k in losses) and {"loss_class_enc", "loss_giou_0"} <= set(losses)


# ---- paper configs ----------------------------------------------------------------------------------------
def test_paper_configs():
    voc, coco, coco12 = (LazyConfig.load(FINETUNE[n]) for n in ("voc", "coco", "coco_12ep"))
    m = coco.model
    assert (m.num_queries, m.num_denoising, m.label_noise_ratio, m.box_noise_scale) == (900, 100, 0.5, 1.0)
    assert m.backbone._target_ is build_resnet_vd and m.num_extra_levels == 1 and m.decoder.num_layers == 6
    assert (m.criterion.weight_class, m.criterion.weight_bbox, m.criterion.weight_giou) == (1.0, 5.0, 2.0)
    voc.model.num_classes = coco.model.num_classes
    assert voc.model == coco.model == coco12.model and voc.optimizer == coco.optimizer
    steps = {name: cfg.lr_multiplier.scheduler.milestones[0] / cfg.lr_multiplier.scheduler.milestones[1]
             for name, cfg in (("voc", voc), ("coco", coco), ("coco12", coco12))}
    assert steps == pytest.approx({"voc": 30 / 36, "coco": 20 / 24, "coco12": 11 / 12}, abs=1e-3)
    assert voc.train.max_iter == -(-36 * 16551 // 64) and coco12.train.max_iter == -(-12 * 117266 // 64)
    for method in ("disco", "siamese"):
        pre = LazyConfig.load(os.path.join(REPO, "configs", f"{method}_dino.py"))
        assert pre.model.detector.num_queries == 900 and pre.model.detector.num_denoising == 0
        assert pre.model.use_dmoqf == (method == "disco") and pre.model.detector.num_classes == 2
    for preset in ("dino", "disco_dino", "siamese_dino"):  # the demo presets build
        cfg = LazyConfig.load(os.path.join(REPO, "configs", "demo", f"{preset}.py"))
        model = instantiate(cfg.model)
        assert sum(p.numel() for p in model.parameters()) > 0


def _small_vd(out_features=("res3", "res4", "res5"), freeze_at=1):
    return L(build_resnet_vd)(stem_widths=(4, 4, 8), depths=(1, 1, 1, 1), widths=(16, 32, 64, 128),
                              out_features=out_features, freeze_at=freeze_at)


@pytest.mark.parametrize("name", ["voc"])  # the COCO configs hold the same model and optimizer (test_paper_configs)
def test_paper_finetuning_config_trains_on_cpu(name, demo_root, tmp_path):
    """A paper fine-tuning config (paper-size transformer, 100 denoising queries) for two iterations on the
    demo data, with the ResNet-50-vd shrunk (same strides 8/16/32) and 100 queries instead of 900: 900 need
    images of about 220 px (the 4 levels must hold more than 900 tokens), several times slower on 2 cores
    (test_paper_configs holds the 900)."""
    from disco_detr.engine import Trainer

    cfg = load_config(FINETUNE[name], [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "dataloader.train.dataset.names=disco_demo_train", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.train.mapper.min_sizes=[96]",
        "dataloader.train.mapper.max_size=128", "dataloader.train.mapper.crop_resize_sizes=[96]",
        "dataloader.train.mapper.crop_size=[64,96]", "model.num_classes=5", "model.num_queries=100",
    ])
    cfg.model.backbone = _small_vd()
    del cfg.dataloader["test"]
    trainer = Trainer(cfg)
    assert isinstance(trainer.model, DINO) and trainer.model.num_denoising == 100
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2
    after = trainer.model.state_dict()
    for key in ("tgt_embed.weight", "label_enc.weight", "enc_output.weight", "decoder.ref_point_head.layers.0.weight"):
        assert not torch.equal(before[key], after[key]), key
    with open(tmp_path / "metrics.json") as f:
        last = f.readlines()[-1]
    for key in ("loss_class_dn", "loss_giou_enc", "loss_bbox_dn_4"):
        assert f'"{key}"' in last


@pytest.mark.parametrize("method", ["disco"])  # configs/siamese_dino.py differs in three DisCo flags (test_paper_configs)
def test_paper_pretraining_config_runs_on_cpu(method, demo_proposals, tmp_path):
    """configs/disco_dino.py (n = 10, every loss) for two iterations on the demo's
    unlabelled images, with the frozen ResNet-50-vd shrunk and 100 selected queries instead of 900 (see the
    fine-tuning test)."""
    from disco_detr.engine import Trainer

    cfg = load_config(os.path.join(REPO, "configs", f"{method}_dino.py"), [
        f"train.output_dir={tmp_path}", "train.max_iter=2", "train.device=cpu", "train.log_period=1",
        "dataloader.train.dataset.names=disco_demo_unlabelled", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.train.mapper.min_sizes=[128]",
        "dataloader.train.mapper.max_size=160", "dataloader.train.mapper.crop_size=32",
        "model.detector.num_queries=100",
    ])
    cfg.train.require_backbone_weights = False  # no SSL weights here: the tiny random backbone on purpose
    cfg.model.detector.backbone = _small_vd(freeze_at=5)
    trainer = Trainer(cfg)
    det = trainer.model.detector
    assert isinstance(det, DINO) and det.num_classes == 2 and trainer.model.weights["rec"] == 3.0
    before = det.tgt_embed.weight.detach().clone()
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2 and not torch.equal(before, det.tgt_embed.weight)
    assert_pretraining_losses_logged(tmp_path, method)


def test_denoising_builds_the_release_number_of_queries():
    """100 denoising queries with 10 boxes in the batch's largest image: 10 groups of 2 x 10 = 200 queries,
    as DINO's release and detrex build them (they double dn_number before dividing by 2 x max_gt)."""
    model = _tiny()
    model.num_denoising = 100
    model.train()
    targets = [{"labels": torch.zeros(10, dtype=torch.long), "boxes": torch.full((10, 4), 0.3)},
               {"labels": torch.zeros(3, dtype=torch.long), "boxes": torch.full((3, 4), 0.4)}]
    groups = model.denoising_groups(targets)
    assert (groups.num_groups, groups.group_size, groups.num_denoising) == (10, 20, 200)


@pytest.mark.parametrize("method", ["disco", "detreg"])
def test_pretraining_trains_the_encoder_heads(method):
    """DisCo and DETReg supervise DINO's encoder prediction on its selected queries (``*_enc``, as RT-DETR's):
    the encoder heads get a gradient, and so does every other trainable parameter (DDP needs no
    ``find_unused_parameters``)."""
    if method == "disco":
        from test_contract import _batch, _build
        expected = {"loss_loc_class_enc", "loss_loc_bbox_enc", "loss_loc_giou_enc", "loss_rec_enc"}
    else:
        from test_detreg import _batch, _build
        expected = {"loss_class_enc", "loss_bbox_enc", "loss_giou_enc"}
    model = perturb_parameters_(_build("dino"))  # off the zero-initialised last box layers
    model.train()
    losses = model(_batch())
    assert expected <= set(losses) and not any(k.endswith("_2") for k in losses)  # 2 decoder layers: _0 and last
    sum(losses.values()).backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    for name in ("enc_class_embed.weight", "enc_bbox_embed.layers.0.weight", "enc_bbox_embed.layers.2.weight",
                 "enc_output.weight", "enc_output_norm.weight"):
        g = grads[f"detector.{name}"]
        assert g is not None and g.abs().sum() > 0, name
    assert [k for k, g in grads.items() if g is None] == []
