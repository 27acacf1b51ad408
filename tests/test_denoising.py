"""Contrastive denoising groups (disco_detr.modeling.layers.denoising): the attention mask written out by
hand, the group layout, the noise (against a float64 re-derivation), the bookkeeping, and the mask's effect
inside real attention."""
import pytest
import torch

from disco_detr.modeling.layers import MultiheadAttention
from disco_detr.modeling.layers.denoising import (
    build_denoising_groups,
    denoising_attn_mask,
    denoising_num_groups,
)


def _targets():
    """Image 0: two boxes (labels 3, 1); image 1: one box (label 4). Normalised cxcywh, away from the border."""
    return [
        {"labels": torch.tensor([3, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.4, 0.45, 0.3, 0.2]])},
    ]


def test_mask_by_hand():
    """2 groups of 4 denoising queries (max_gt = 2: 2 positives + 2 negatives) and 3 matching queries.
    1 = blocked. Rows: the attending query; columns: the attended one."""
    x, o = 1, 0
    expected = torch.tensor([
        # group 0      group 1      matching
        [o, o, o, o,   x, x, x, x,   o, o, o],
        [o, o, o, o,   x, x, x, x,   o, o, o],
        [o, o, o, o,   x, x, x, x,   o, o, o],
        [o, o, o, o,   x, x, x, x,   o, o, o],
        [x, x, x, x,   o, o, o, o,   o, o, o],
        [x, x, x, x,   o, o, o, o,   o, o, o],
        [x, x, x, x,   o, o, o, o,   o, o, o],
        [x, x, x, x,   o, o, o, o,   o, o, o],
        [x, x, x, x,   x, x, x, x,   o, o, o],
        [x, x, x, x,   x, x, x, x,   o, o, o],
        [x, x, x, x,   x, x, x, x,   o, o, o],
    ], dtype=torch.bool)
    assert torch.equal(denoising_attn_mask(2, 4, 3), expected)
    groups = build_denoising_groups(_targets(), num_classes=5, num_queries=3, num_groups=2)
    assert torch.equal(groups.attn_mask, expected)


def test_mask_properties_three_groups():
    mask = denoising_attn_mask(3, 6, 5)
    q_dn = 18
    group = torch.arange(q_dn) // 6
    assert mask[q_dn:, :q_dn].all()  # matching queries never see a denoising query
    assert not mask[:, q_dn:].any()  # everyone sees the matching queries
    for i in range(q_dn):
        for j in range(q_dn):
            assert bool(mask[i, j]) == bool(group[i] != group[j])  # no query sees another group


def _dino_release_groups(dn_number, max_gt):
    """DINO's release / detrex, step by step: double dn_number (positives and negatives), then divide by
    twice the largest ground-truth count; never 0."""
    doubled = dn_number * 2
    return doubled // (max_gt * 2) or 1


def _rtdetr_release_groups(num_denoising, max_gt):
    """RT-DETR's release: num_denoising // max_gt groups, 1 where that is 0."""
    return num_denoising // max_gt or 1


def test_group_counts_follow_the_releases():
    # the example: dn_number = 100 and at most 10 boxes -> 10 groups = 200 denoising queries
    assert denoising_num_groups(100, 10) == 10 and 10 * 2 * 10 == 200
    assert denoising_num_groups(100, 2) == 50 and denoising_num_groups(100, 7) == 14
    assert denoising_num_groups(100, 200) == 1 and denoising_num_groups(3, 4) == 1  # never 0 groups
    for num in (50, 100, 200, 300):
        for max_gt in (1, 2, 3, 7, 10, 33, 80, 150):
            assert denoising_num_groups(num, max_gt) == _dino_release_groups(num, max_gt), (num, max_gt)
            assert denoising_num_groups(num, max_gt) == _rtdetr_release_groups(num, max_gt), (num, max_gt)


def test_layout_without_noise_targets_are_the_ground_truth():
    """With both noises off every slot holds its ground truth: positives at [g*G, g*G + max_gt), negatives
    at [g*G + max_gt, (g+1)*G), padding where an image has fewer boxes; matches() pairs each positive slot
    with the box it was made from, so the denoising targets are the noised boxes' own ground truth."""
    targets = _targets()
    g = build_denoising_groups(targets, 5, num_queries=3, num_groups=3, label_noise_ratio=0.0, box_noise_scale=0.0)
    assert (g.num_groups, g.group_size, g.num_denoising, g.num_queries) == (3, 4, 12, 3)
    assert g.labels.tolist() == [[3, 1, 3, 1] * 3, [4, -1, 4, -1] * 3]
    assert g.gt_index.tolist() == [[0, 1, 0, 1] * 3, [0, -1, 0, -1] * 3]
    assert g.valid.tolist() == [[True] * 12, [True, False] * 6]
    assert g.positive.tolist() == [[True, True, False, False] * 3, [True, False, False, False] * 3]
    assert torch.equal(g.boxes[0, :2], targets[0]["boxes"]) and torch.equal(g.boxes[1, 2], targets[1]["boxes"][0])
    assert torch.equal(g.boxes[1, 1], torch.full((4,), 0.5))  # padding slot
    matches = g.matches()
    assert matches[0][0].tolist() == [0, 1, 4, 5, 8, 9] and matches[0][1].tolist() == [0, 1] * 3
    assert matches[1][0].tolist() == [0, 4, 8] and matches[1][1].tolist() == [0, 0, 0]
    for b, (q, t) in enumerate(matches):
        assert torch.equal(g.boxes[b, q], targets[b]["boxes"][t])
        assert torch.equal(g.labels[b, q], targets[b]["labels"][t])


def test_box_noise_positive_inside_negative_outside():
    """Each corner moves by u * scale * half-size, u in [0, 1) for positives and [1, 2) for negatives
    (checked in float64 on boxes small enough that nothing is clipped)."""
    targets = _targets()
    scale = 0.4
    gen = torch.Generator().manual_seed(0)
    g = build_denoising_groups(targets, 5, num_queries=3, num_groups=20, label_noise_ratio=0.0,
                               box_noise_scale=scale, generator=gen)
    for b, t in enumerate(targets):
        for slot in range(g.num_denoising):
            k = int(g.gt_index[b, slot])
            if k < 0:
                continue
            cx, cy, w, h = t["boxes"][k].double().tolist()
            ncx, ncy, nw, nh = g.boxes[b, slot].double().tolist()
            gt = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=torch.float64)
            noised = torch.tensor([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2], dtype=torch.float64)
            u = (noised - gt).abs() / (torch.tensor([w, h, w, h], dtype=torch.float64) / 2 * scale)
            if g.positive[b, slot]:
                assert (u < 1 + 1e-4).all(), (b, slot, u)
            else:
                assert ((u > 1 - 1e-4) & (u < 2 + 1e-4)).all(), (b, slot, u)
    assert ((g.boxes >= 0) & (g.boxes <= 1)).all()


def test_label_noise_rate():
    """A label is redrawn uniformly over the C classes with probability ratio / 2, so it changes with
    probability ratio / 2 * (C - 1) / C = 0.2 for ratio 0.5 and C = 5."""
    t = [{"labels": torch.zeros(50, dtype=torch.long), "boxes": torch.full((50, 4), 0.3)}]
    g = build_denoising_groups(t, 5, num_queries=1, num_groups=40, label_noise_ratio=0.5, box_noise_scale=0.0,
                               generator=torch.Generator().manual_seed(1))
    changed = (g.labels != 0).float().mean().item()
    assert abs(changed - 0.2) < 0.02, changed  # 4000 draws: std 0.0063
    assert ((g.labels >= 0) & (g.labels < 5)).all()


def test_embed_split_and_empty_batch():
    g = build_denoising_groups(_targets(), 5, num_queries=3, num_groups=2)
    emb = torch.nn.Embedding(5, 8)
    content = g.embed_labels(emb)
    assert content.shape == (2, 8, 8)
    assert torch.equal(content[0, 0], emb.weight[g.labels[0, 0]])
    assert not content[1, ~g.valid[1]].any()  # padding slots are zeros
    x = torch.randn(6, 2, 11, 4)
    dn, match = g.split(x, dim=2)
    assert dn.shape == (6, 2, 8, 4) and torch.equal(match, x[:, :, 8:])
    with pytest.raises(ValueError, match="Q_dn"):
        g.split(torch.randn(2, 10, 4))
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    assert build_denoising_groups(empty, 5, 3, 2) is None


def test_mask_inside_attention():
    """Through a real self-attention: changing group 1's inputs changes neither group 0's outputs nor the
    matching queries'; changing the matching queries changes everyone's (denoising queries see them)."""
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 4).eval()
    mask = denoising_attn_mask(2, 3, 4)
    x = torch.randn(2, 10, 16)
    base = attn(x, x, x, attn_mask=mask)
    y = x.clone()
    y[:, 3:6] += torch.randn(2, 3, 16)  # group 1
    out = attn(y, y, y, attn_mask=mask)
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-6) and torch.allclose(out[:, 6:], base[:, 6:], atol=1e-6)
    assert not torch.allclose(out[:, 3:6], base[:, 3:6])
    z = x.clone()
    z[:, 6:] += torch.randn(2, 4, 16)  # matching queries
    out = attn(z, z, z, attn_mask=mask)
    assert not torch.allclose(out[:, :3], base[:, :3]) and not torch.allclose(out[:, 3:6], base[:, 3:6])
    # combined with a key padding mask: both apply
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 9] = True
    both = attn(x, x, x, key_padding_mask=pad, attn_mask=mask)
    assert torch.allclose(both[0], base[0], atol=1e-6) and not torch.allclose(both[1, 6:], base[1, 6:])
