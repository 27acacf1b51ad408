import pytest
import torch
from detectron2.config import instantiate

from conftest import mixed_size_batch, tiny_config


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = tiny_config(str(tmp_path_factory.mktemp("out")))
    torch.manual_seed(0)
    return instantiate(cfg.model)


def test_forward_backward_mixed_sizes(model):
    gen = torch.Generator().manual_seed(0)
    batch = mixed_size_batch(gen, empty_width=96)
    model.train()
    model.zero_grad()
    losses = model(batch)
    num_layers = len(model.decoder.layers)
    expected = {"loss_class", "loss_bbox", "loss_giou"}
    expected |= {f"{n}_{i}" for n in ("loss_class", "loss_bbox", "loss_giou") for i in range(num_layers - 1)}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v >= 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert model.query_embed.weight.grad.abs().sum() > 0


class _PatchBackbone(torch.nn.Module):
    """Non-overlapping 16x16 patches: padding-invariant by construction, unlike a deep CNN
    whose receptive fields reach into the padding (so the test isolates the masks)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, channels, kernel_size=16, stride=16)

    def forward(self, x):
        return {"res4": self.conv(x)}


def test_padding_masks_make_predictions_batch_invariant(tmp_path):
    """An image alone and the same image padded inside a larger batch give the same output:
    encoder and decoder attention ignore padded positions, positions are normalised by the
    un-padded size."""
    torch.manual_seed(0)
    model = instantiate(tiny_config(str(tmp_path)).model)
    model.backbone = _PatchBackbone(model.input_proj.in_channels)
    gen = torch.Generator().manual_seed(1)
    small = {"image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8, generator=gen)}
    large = {"image": torch.randint(0, 256, (3, 128, 96), dtype=torch.uint8, generator=gen)}
    model.eval()
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([small, large])[0]["instances"]
    assert alone.image_size == (64, 80)
    assert torch.allclose(alone.scores, batched.scores, atol=1e-5)
    assert torch.allclose(alone.pred_boxes.tensor, batched.pred_boxes.tensor, atol=1e-3)


def test_inference_maps_boxes_to_original_size(model):
    """Inputs resized 2x down from the original: boxes come back in original pixels."""
    gen = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8, generator=gen)
    model.eval()
    with torch.no_grad():
        at_input = model([{"image": image}])[0]["instances"]
        at_original = model([{"image": image, "height": 120, "width": 180}])[0]["instances"]
    assert at_original.image_size == (120, 180)
    assert torch.allclose(at_original.pred_boxes.tensor, at_input.pred_boxes.tensor * 2, atol=1e-3)
    assert at_original.pred_boxes.tensor[:, 2].max() <= 180 and at_original.pred_boxes.tensor[:, 3].max() <= 120
    assert len(at_input) == min(model.num_detections, model.num_queries * model.num_classes)
    assert at_input.scores[:-1].ge(at_input.scores[1:]).all()  # top-k is sorted
    assert at_input.pred_classes.max() < model.num_classes


def test_inference_box_decoding_by_hand(model):
    """Boxes are cxcywh (normalised by the un-padded size) -> xyxy pixels."""
    logits = torch.full((1, model.num_queries, model.num_classes), -10.0)
    logits[0, 3, 2] = 5.0
    boxes = torch.full((1, model.num_queries, 4), 0.5)
    boxes[0, 3] = torch.tensor([0.25, 0.5, 0.1, 0.2])
    result = model.inference(logits, boxes, [(100, 200)])[0]
    assert result.pred_classes[0].item() == 2
    assert result.pred_boxes.tensor[0].tolist() == pytest.approx([40.0, 40.0, 60.0, 60.0])


def test_reference_points_follow_query_pos(model):
    """The pre-training contract: reference points come from the positional queries passed in."""
    query_pos = model.query_embed.weight
    ref = model.decoder.reference_points(query_pos)
    assert ref.shape == (model.num_queries, 2) and ((ref > 0) & (ref < 1)).all()
    gen = torch.Generator().manual_seed(3)
    images = model.preprocess_images([torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=gen)])
    model.eval()
    with torch.no_grad():
        encoded = model.encode(images)
        queries = model.initial_queries(encoded)
        bare = model.decode(encoded, queries)
        shifted = query_pos[None] + torch.randn(1, *query_pos.shape, generator=gen)
        moved = model.decode(encoded, queries.replace(position=shifted))
    assert torch.allclose(queries.reference[0], ref)
    assert torch.allclose(bare.references[0, 0], ref)
    assert torch.allclose(moved.references[0, 0], model.decoder.reference_points(shifted[0]))
    assert not torch.allclose(bare.hidden, moved.hidden)


@pytest.mark.parametrize("size_divisibility", [0, 32])
@pytest.mark.parametrize("padded_hw", [(64, 70), (61, 50)])  # larger than needed / the batch's largest image
def test_preprocess_padded_equals_preprocess_images(model, size_divisibility, padded_hw):
    """An already padded uint8 batch (with garbage in its padding) gives bit for bit the ImageList of the
    un-padded images: the same normalised pixels, zero padding, the same padded shape and sizes."""
    gen = torch.Generator().manual_seed(0)
    sizes = [(37, 50), (61, 29), (61, 50), (12, 7)]
    padded = torch.randint(0, 256, (len(sizes), 3, *padded_hw), dtype=torch.uint8, generator=gen)
    model.size_divisibility = size_divisibility
    try:
        expected = model.preprocess_images([padded[i, :, :h, :w] for i, (h, w) in enumerate(sizes)])
        got = model.preprocess_padded(padded, sizes)
        assert got.image_sizes == expected.image_sizes == sizes
        assert got.tensor.shape == expected.tensor.shape == (4, 3, 64 if size_divisibility else 61,
                                                              64 if size_divisibility else 50)
        assert torch.equal(got.tensor, expected.tensor)
        with pytest.raises(ValueError, match="do not fit"):
            model.preprocess_padded(padded[:, :, :40], sizes)
    finally:
        model.size_divisibility = 0
