import itertools

import pytest
import torch

from disco_detr.modeling.layers import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    inverse_sigmoid,
)


def _reference_giou(a, b):
    """Scalar float64 GIoU written from the definition, for two xyxy boxes."""
    def area(x0, y0, x1, y1):
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area(*a) + area(*b) - inter
    iou = inter / union if union > 0 else 0.0
    hull = area(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
    giou = iou - (hull - union) / hull if hull > 0 else iou
    return iou, giou


def test_conversions_round_trip():
    boxes = torch.rand(50, 4, dtype=torch.float64)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes)
    assert box_cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4])).tolist() == pytest.approx([0.4, 0.3, 0.6, 0.7])


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0.0, 1.0])
    # touching boxes: IoU 0, enclosing 4x2=8, union 8 -> GIoU 0; disjoint (gap 1): hull 10, union 8
    c = torch.tensor([[3.0, 0.0, 5.0, 2.0]])
    assert generalized_box_iou(a, b)[0].tolist() == pytest.approx([1 / 7 - (9 - 7) / 9, 0.0, 1.0])
    assert generalized_box_iou(a, c).item() == pytest.approx(-(10 - 8) / 10)


def test_giou_matches_float64_reference_on_random_boxes():
    torch.manual_seed(0)
    xy = torch.rand(40, 2, dtype=torch.float64)
    boxes = torch.cat([xy, xy + torch.rand(40, 2, dtype=torch.float64)], 1)
    giou = generalized_box_iou(boxes[:20], boxes[20:])
    iou = box_iou(boxes[:20], boxes[20:])
    for i, j in itertools.product(range(20), range(20)):
        ref_iou, ref_giou = _reference_giou(boxes[i].tolist(), boxes[20 + j].tolist())
        assert iou[i, j].item() == pytest.approx(ref_iou, abs=1e-9)
        assert giou[i, j].item() == pytest.approx(ref_giou, abs=1e-9)


def test_degenerate_boxes_are_finite():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    inverted = torch.tensor([[2.0, 2.0, 0.0, 0.0]])
    normal = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    for a, b in itertools.product([point, line, inverted, normal], repeat=2):
        assert torch.isfinite(box_iou(a, b)).all()
        assert torch.isfinite(generalized_box_iou(a, b)).all()
    assert box_iou(point, point).item() == 0.0
    assert box_iou(inverted, normal).item() == 0.0  # inverted box has zero area
    assert generalized_box_iou(point, point).item() == 0.0
    # a point inside a box: IoU 0, hull = the box, union = the box -> GIoU 0
    assert generalized_box_iou(point, normal).item() == pytest.approx(0.0)


def test_giou_gradient_finite_for_identical_degenerate_boxes():
    boxes = torch.tensor([[0.5, 0.5, 0.0, 0.0]], requires_grad=True)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(boxes.detach()))
    (1 - giou).sum().backward()
    assert torch.isfinite(boxes.grad).all()


def test_inverse_sigmoid():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    y = inverse_sigmoid(x)
    assert torch.isfinite(y).all()
    assert y[1].item() == pytest.approx(torch.logit(torch.tensor(0.25)).item(), rel=1e-5)
    assert y[2].item() == pytest.approx(0.0, abs=1e-6)
