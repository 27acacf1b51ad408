import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from disco_detr.modeling.layers import box_cxcywh_to_xyxy, generalized_box_iou
from disco_detr.modeling.matching import HungarianMatcher, focal_class_cost


def _random_boxes(n, gen):
    cxcy = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([cxcy, wh], 1)


def _reference_cost(logits, boxes, labels, tgt_boxes, alpha=0.25, gamma=2.0):
    """Float64 cost written out entry by entry (class 2, L1 5, GIoU 2)."""
    logits, boxes, tgt_boxes = logits.double(), boxes.double(), tgt_boxes.double()
    q, t = len(boxes), len(tgt_boxes)
    cost = np.zeros((q, t))
    for i, j in itertools.product(range(q), range(t)):
        p = torch.sigmoid(logits[i, labels[j]]).item()
        cls = alpha * (1 - p) ** gamma * -np.log(p + 1e-8) - (1 - alpha) * p**gamma * -np.log(1 - p + 1e-8)
        l1 = (boxes[i] - tgt_boxes[j]).abs().sum().item()
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[i:i + 1]), box_cxcywh_to_xyxy(tgt_boxes[j:j + 1])).item()
        cost[i, j] = 2 * cls + 5 * l1 - 2 * giou
    return cost


@pytest.mark.parametrize("seed", range(5))
def test_matching_is_optimal_against_scipy(seed):
    gen = torch.Generator().manual_seed(seed)
    num_queries, num_classes = 15, 4
    logits = torch.randn(2, num_queries, num_classes, generator=gen)
    boxes = torch.stack([_random_boxes(num_queries, gen) for _ in range(2)])
    targets = [{"labels": torch.randint(0, num_classes, (n,), generator=gen), "boxes": _random_boxes(n, gen)}
               for n in (7, 15)]
    indices = HungarianMatcher()(logits, boxes, targets)
    for b, (q_ids, t_ids) in enumerate(indices):
        cost = _reference_cost(logits[b], boxes[b], targets[b]["labels"], targets[b]["boxes"])
        rows, cols = linear_sum_assignment(cost)
        assert len(q_ids) == len(targets[b]["labels"])
        assert sorted(t_ids.tolist()) == list(range(len(targets[b]["labels"])))
        assert len(set(q_ids.tolist())) == len(q_ids)
        assert cost[q_ids.numpy(), t_ids.numpy()].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-6)


def test_focal_cost_matches_formula():
    logits = torch.tensor([[0.0, 2.0]])
    cost = focal_class_cost(logits, torch.tensor([1]))
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected = 0.25 * (1 - p) ** 2 * -np.log(p) - 0.75 * p**2 * -np.log(1 - p)
    assert cost.item() == pytest.approx(expected, rel=1e-5)


def test_hand_computed_matching_follows_boxes():
    # two queries, two targets; query 0 sits on target 1 and query 1 on target 0
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]]])
    logits = torch.zeros(1, 2, 3)
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.8, 0.8, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]])}]
    (q_ids, t_ids), = HungarianMatcher()(logits, boxes, targets)
    assert dict(zip(q_ids.tolist(), t_ids.tolist())) == {0: 1, 1: 0}


def test_image_without_boxes_gives_empty_match():
    logits, boxes = torch.zeros(2, 5, 3), torch.rand(2, 5, 4)
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    indices = HungarianMatcher()(logits, boxes, targets)
    assert len(indices[0][0]) == 0 and len(indices[0][1]) == 0
    assert len(indices[1][0]) == 1


def test_more_boxes_than_queries_raises():
    logits, boxes = torch.zeros(1, 3, 2), torch.rand(1, 3, 4)
    targets = [{"labels": torch.zeros(4, dtype=torch.int64), "boxes": torch.rand(4, 4)}]
    with pytest.raises(ValueError, match="4 boxes but the detector has only 3 queries"):
        HungarianMatcher()(logits, boxes, targets)


def test_nan_predictions_raise_clearly():
    logits, boxes = torch.zeros(1, 3, 2), torch.full((1, 3, 4), float("nan"))
    targets = [{"labels": torch.zeros(1, dtype=torch.int64), "boxes": torch.rand(1, 4)}]
    with pytest.raises(FloatingPointError, match="diverged"):
        HungarianMatcher()(logits, boxes, targets)
