"""The detector family: Conditional DETR on the shared base gives what it gave before the move."""
import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances

from conftest import tiny_config

REGRESSION = os.path.join(os.path.dirname(__file__), "data", "conditional_regression.pt")


def test_conditional_detr_outputs_and_losses_unchanged_by_the_base_class(tmp_path):
    """tests/data/conditional_regression.pt was written by the pre-refactor ConditionalDETR
    (weights, inputs, decoder outputs, inference results, training losses) with the old
    settings (size_divisibility 32, position offset -0.5); the model on the base class, built
    from the same config with those settings, must reproduce every number."""
    ref = torch.load(REGRESSION, weights_only=True)
    cfg = tiny_config(str(tmp_path), "model.size_divisibility=32", "model.position_offset=-0.5")
    model = instantiate(cfg.model)
    model.load_state_dict(ref["state_dict"])  # strict: the old checkpoint keys load unchanged
    batch = []
    for image, boxes, classes in zip(ref["images"], ref["gt_boxes"], ref["gt_classes"]):
        inst = Instances(tuple(image.shape[1:]))
        inst.gt_boxes, inst.gt_classes = Boxes(boxes), classes
        batch.append({"image": image, "instances": inst})
    model.eval()
    with torch.no_grad():
        _, decoded = model.run(model.preprocess_images(ref["images"]))
        results = model([{"image": x} for x in ref["images"]])
    torch.testing.assert_close(decoded.logits, ref["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(decoded.boxes, ref["boxes"], atol=1e-6, rtol=0)
    torch.testing.assert_close(decoded.references[0], ref["reference"], atol=1e-6, rtol=0)
    for r, scores, boxes in zip(results, ref["scores"], ref["pred_boxes"]):
        torch.testing.assert_close(r["instances"].scores, scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(r["instances"].pred_boxes.tensor, boxes, atol=1e-4, rtol=0)
    model.train()
    losses = model(batch)
    assert set(losses) == set(ref["losses"])
    for name, value in ref["losses"].items():
        assert losses[name].item() == pytest.approx(value.item(), abs=1e-5), name
