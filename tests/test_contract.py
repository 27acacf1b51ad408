"""The pre-training contract, held for every registered DETR variant (a row of disco_detr.variants.VARIANTS):
each test builds the variant's tiny pre-training model (tiny_detectors.tiny_pretraining: DisCoDETR around the
variant's detector shrunk by the table's rule, with a tiny frozen backbone).
"""
import pytest
import torch
from detectron2.config import instantiate
from tiny_detectors import tiny_pretraining

from disco_detr.checkpoint.checkpointer import pretrained_to_finetune
from disco_detr.modeling.detectors.base import DecoderOutput, DETRDetector, QueryInit
from disco_detr.structures import PairedViewBatch
from disco_detr.variants import VARIANTS

from conftest import perturb_parameters_, train_on_one_batch


def _build(variant, **overrides):
    cfg = tiny_pretraining(variant).model
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return instantiate(cfg)


def _batch(b=2, n=4, size=(80, 96), crop=32, seed=0):
    """A synthetic colour-augmented PairedViewBatch, view-major (image v * B + b): images (2B,3,H,W) uint8,
    boxes (2B,n,4) xyxy view pixels (box 0 of each view is the big intersection box, the rest inside it),
    crops (2B,n,3,s,s)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    views = torch.randint(0, 256, (b, 2, 3, h, w), dtype=torch.uint8, generator=gen)
    xy = torch.rand(b, 2, n, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
    wh = 8 + torch.rand(b, 2, n, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3])
    boxes = torch.cat([xy, xy + wh], -1)
    boxes[:, :, 0] = torch.tensor([4.0, 4.0, w - 4.0, h - 4.0])
    crops = torch.randint(0, 256, (b, 2, n, 3, crop, crop), dtype=torch.uint8, generator=gen)
    def view_major(x):  # (B, 2, ...) -> (2B, ...)
        return x.transpose(0, 1).flatten(0, 1)

    return PairedViewBatch(images=view_major(views), image_sizes=[(h, w)] * 2 * b, boxes=view_major(boxes),
                           crops=view_major(crops), crop_size=crop, view_photometric=None, crop_photometric=None)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_queries_and_references(variant):
    model = _build(variant)
    det = model.detector
    assert isinstance(det, DETRDetector) and det.fusion_target in ("position", "content")
    views = _batch().images  # (4, 3, H, W): views 0 of samples 0, 1, then views 1
    images = det.preprocess_images([views[0], views[3, :, :64, :72]])
    det.eval()
    with torch.no_grad():
        encoded = det.encode(images)
        queries = det.initial_queries(encoded)
        decoded = det.decode(encoded, queries)
    assert isinstance(queries, QueryInit) and isinstance(decoded, DecoderOutput)
    ref = queries.reference
    assert ref.shape[:2] == (2, det.num_queries) and ref.shape[2] in (2, 4)
    assert ((ref >= 0) & (ref <= 1)).all()
    num_layers = decoded.logits.shape[0]
    assert decoded.logits.shape == (num_layers, 2, det.num_queries, det.num_classes)
    assert decoded.boxes.shape == (num_layers, 2, det.num_queries, 4)
    assert ((decoded.boxes >= 0) & (decoded.boxes <= 1)).all()
    if not det.references_depend_on_image:
        assert torch.allclose(ref[0], ref[1], atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_supervised_layers_are_the_encoder_prediction_then_every_decoder_layer(variant):
    """In training a two-stage variant (DINO, RT-DETR) returns its encoder's prediction on the selected queries
    (``_enc``), the others none; the decoder layers follow as ``_0`` .. ``_{L-2}`` and the last without a suffix.
    In evaluation no variant builds the encoder prediction."""
    det = _build(variant).detector
    images = det.preprocess_images(list(_batch().images[:2]))  # view 1 of samples 0, 1
    det.train()
    encoded = det.encode(images)
    decoded = det.decode(encoded, det.initial_queries(encoded))
    layers = list(decoded.supervised_layers())
    num_layers = decoded.logits.shape[0]
    two_stage = VARIANTS[variant].two_stage
    assert [s for s, *_ in layers] == ["_enc"] * two_stage + [f"_{i}" for i in range(num_layers - 1)] + [""]
    b, n = 2, det.num_queries
    for _, logits, boxes, hidden in layers:
        assert (logits.shape, boxes.shape, hidden.shape) == ((b, n, det.num_classes), (b, n, 4), (b, n, det.d_model))
    if two_stage:
        assert decoded.encoder.boxes.requires_grad and torch.equal(decoded.encoder.boxes.detach(),
                                                                   det.initial_queries(encoded).reference)
    assert [s for s, *_ in decoded.supervised_layers(aux=False)] == ["_enc"] * two_stage + [""]
    det.eval()
    with torch.no_grad():
        encoded = det.encode(images)
        assert det.decode(encoded, det.initial_queries(encoded)).encoder is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fusion_reaches_each_querys_own_proposal(variant):
    model = _build(variant)  # the default fusion of every DisCo config
    det = model.detector
    views = _batch().images  # (4, 3, H, W): views 0 of samples 0, 1, then views 1
    with torch.no_grad():
        queries = det.initial_queries(det.encode(det.preprocess_images([views[0], views[1]])))
    n = 4
    features = torch.arange(2 * n, dtype=torch.float32).view(2, n, 1).expand(2, n, det.d_model).contiguous()
    owner = model.assign(torch.rand(2, n, 2), queries)
    assert owner.shape == (2, det.num_queries) and all(o.bincount(minlength=n).min() > 0 for o in owner)
    fused = model.fuse(queries, features, owner)
    field = det.fusion_target
    # exactly the bare field plus the owner's feature: nothing else on the query path
    expected = getattr(queries, field) + features[torch.arange(2)[:, None], owner]
    assert torch.equal(getattr(fused, field), expected)
    for other in ("content", "position", "reference"):
        if other != field:
            assert getattr(fused, other) is getattr(queries, other)
    # the fused queries change what the decoder computes
    with torch.no_grad():
        encoded = det.encode(det.preprocess_images([views[0], views[1]]))
        a, b = det.decode(encoded, queries), det.decode(encoded, fused)
    assert not torch.allclose(a.hidden, b.hidden)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("method", ["disco", "siamese"])
def test_short_pretraining_decreases_the_loss(variant, method):
    overrides = {} if method == "disco" else {"use_dmoqf": False, "weight_contrast": 0.0}
    model = _build(variant, **overrides)
    model.train()
    batch = _batch()
    losses = model(batch)
    expected = {"loss_loc_class", "loss_loc_bbox", "loss_loc_giou", "loss_rec", "loss_enc"}
    if method == "disco":
        expected.add("loss_contrast")
    assert expected <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    totals = train_on_one_batch(model, batch, 12)
    assert totals[-1] < totals[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_transfer_keeps_and_drops_the_documented_keys(variant):
    model = _build(variant)
    det = model.detector
    state = model.state_dict()
    kept, dropped = pretrained_to_finetune(state, det.transfer_drop)
    detector_keys = {k[len("detector."):] for k in state if k.startswith("detector.")}
    heads = {k for k in detector_keys if k.startswith(det.transfer_drop)}
    assert heads, "the class heads must be dropped"
    assert set(kept) == detector_keys - heads
    assert set(dropped) == {k for k in state if not k.startswith("detector.")} | {f"detector.{k}" for k in heads}
    assert any(k.startswith("backbone.") for k in kept) and any(k.startswith("decoder.") for k in kept)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_parameter_between_the_fused_queries_and_the_references_transfers(variant):
    """No pre-training-only module on the query path: every trainable parameter through which the fused
    queries reach the references the decoder uses, and the boxes refined from them, is a detector parameter
    that fine-tuning keeps. (DAB-DETR / DINO / RT-DETR detach references between layers, so their fused
    content reaches the references only through the boxes.)"""
    model = perturb_parameters_(_build(variant))  # off the zero-initialised box layers (no zero gradients)
    model.train()
    det = model.detector
    views = _batch().images  # (4, 3, H, W): views 0 of samples 0, 1, then views 1
    encoded = det.encode(det.preprocess_images([views[0], views[1]]))
    queries = det.initial_queries(encoded)
    n = 4
    z = torch.randn(2, n, det.d_model)  # the other view's object features, an input here
    owner = model.assign(torch.rand(2, n, 2), queries)
    decoded = det.decode(encoded, model.fuse(queries, z, owner))
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(decoded.references.sum() + decoded.boxes.sum(), list(params.values()),
                                allow_unused=True)
    on_path = {k for k, g in zip(params, grads) if g is not None and g.abs().sum() > 0}
    kept, _ = pretrained_to_finetune(model.state_dict(), det.transfer_drop)
    assert on_path, "the references depend on no trainable parameter"
    assert on_path <= {f"detector.{k}" for k in kept}, sorted(on_path - {f"detector.{k}" for k in kept})
    # and the fused feature itself reaches the references that the decoder uses
    z.requires_grad_(True)
    decoded = det.decode(encoded, model.fuse(queries, z, owner))
    (grad_z,) = torch.autograd.grad(decoded.references.sum() + decoded.boxes.sum(), z)
    assert grad_z.abs().sum() > 0
