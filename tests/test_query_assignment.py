"""DMOQF query-to-proposal assignment: exactness against scipy, ownership invariants, baseline grouping."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from disco_detr.modeling.matching.query_assignment import (
    assign_queries_to_proposals,
    fixed_group_assignment,
    naive_assign_queries,
    queries_per_proposal,
)


def _extra(total, n):
    """c_k written out: (N - n) // n each, one more for the first (N - n) % n proposals."""
    return [(total - n) // n + (1 if k < (total - n) % n else 0) for k in range(n)]


def _cost(centres, refs):
    p, r = centres.double().numpy(), refs.double().numpy()
    return np.abs(p[:, None, :] - r[None, :, :]).sum(-1)          # (n, N)


def _check_image(centres, refs, owner, first):
    """Validity of one image's result and stage-wise optimality against scipy (1e-6)."""
    cost = _cost(centres, refs)
    n, total = cost.shape
    owner, first = owner.numpy(), first.numpy()
    assert owner.shape == (total,) and first.shape == (n,)
    assert owner.dtype == np.int64 and first.dtype == np.int64
    # Stage 1: a one-to-one matching of minimum cost.
    assert len(set(first.tolist())) == n and first.min() >= 0 and first.max() < total
    assert (owner[first] == np.arange(n)).all()
    rows, cols = linear_sum_assignment(cost)
    assert cost[np.arange(n), first].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-6)
    # Every query owned exactly once, proposal k owns 1 + c_k.
    assert owner.min() >= 0 and owner.max() < n
    assert np.bincount(owner, minlength=n).tolist() == [1 + c for c in _extra(total, n)]
    # Stage 2: optimal against the replicated Hungarian on the same leftover queries.
    rest = np.setdiff1d(np.arange(total), first)
    if len(rest):
        replicated = np.repeat(cost[:, rest], _extra(total, n), axis=0)
        r2, c2 = linear_sum_assignment(replicated)
        assert cost[owner[rest], rest].sum() == pytest.approx(replicated[r2, c2].sum(), abs=1e-6)
    return cost[owner, np.arange(total)].sum()



@pytest.fixture(params=["compiled", "numpy"], autouse=True)
def solver(request, monkeypatch):
    """Run every test with the numba stage-2 solver and with the pure-numpy fallback."""
    import disco_detr.modeling.matching.query_assignment as qa

    if request.param == "compiled" and qa.numba is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(qa, "_USE_NUMBA", request.param == "compiled")
    return request.param

def _check_batch(centres, refs, result):
    refs = refs.expand(centres.shape[0], -1, -1) if refs.dim() == 2 else refs
    return [_check_image(centres[b], refs[b], result.owner[b], result.first[b]) for b in range(centres.shape[0])]


@pytest.mark.parametrize("total,n", [(23, 5), (10, 10), (17, 1), (12, 10), (60, 7), (100, 10), (41, 4)])
def test_random_inputs_match_scipy(total, n):
    gen = torch.Generator().manual_seed(total * 31 + n)
    for _ in range(3):
        centres = torch.rand(4, n, 2, generator=gen) * 1.6 - 0.3          # some outside the image
        refs = torch.rand(4, total, 2, generator=gen)
        fast = assign_queries_to_proposals(centres, refs)
        totals = _check_batch(centres, refs, fast)
        naive = naive_assign_queries(centres, refs)
        assert totals == pytest.approx(_check_batch(centres, refs, naive), abs=1e-6)


def test_n300_two_images():
    gen = torch.Generator().manual_seed(7)
    centres, refs = torch.rand(2, 10, 2, generator=gen), torch.rand(2, 300, 2, generator=gen)
    _check_batch(centres, refs, assign_queries_to_proposals(centres, refs))


def test_ties_duplicates_and_grid():
    gen = torch.Generator().manual_seed(3)
    # Duplicated reference points and identical proposal centres.
    base = torch.rand(6, 2, generator=gen)
    refs = base[torch.randint(0, 6, (3, 40), generator=gen)]
    centres = torch.rand(3, 8, 2, generator=gen)
    centres[:, 4:] = centres[:, :4]
    _check_batch(centres, refs, assign_queries_to_proposals(centres, refs))
    # Everything on a coarse grid: many equal L1 costs and cost differences.
    ys, xs = torch.meshgrid(torch.arange(6), torch.arange(10), indexing="ij")
    grid = torch.stack([xs, ys], -1).reshape(-1, 2).float() / 8
    centres = grid[torch.randint(0, 60, (4, 7), generator=gen)]
    _check_batch(centres, grid, assign_queries_to_proposals(centres, grid))
    # All centres identical.
    centres, refs = torch.full((2, 5, 2), 0.5), torch.rand(2, 33, 2, generator=gen)
    _check_batch(centres, refs, assign_queries_to_proposals(centres, refs))


def test_centres_outside_the_image():
    gen = torch.Generator().manual_seed(5)
    centres = torch.rand(3, 6, 2, generator=gen) * 4 - 1.5                  # in [-1.5, 2.5]
    centres[0, 0] = torch.tensor([-3.0, 7.0])
    refs = torch.rand(3, 50, 2, generator=gen)
    _check_batch(centres, refs, assign_queries_to_proposals(centres, refs))


def test_batch_equals_per_image_and_shared_refs():
    gen = torch.Generator().manual_seed(11)
    centres = torch.rand(5, 10, 2, generator=gen) * 1.2 - 0.1
    refs = torch.rand(100, 2, generator=gen)
    batched = assign_queries_to_proposals(centres, refs)                     # shared (N, 2) reference points
    assert batched.owner.shape == (5, 100) and batched.first.shape == (5, 10)
    for b in range(5):
        single = assign_queries_to_proposals(centres[b], refs)               # unbatched: (n, 2), (N, 2)
        assert torch.equal(single.owner, batched.owner[b]) and torch.equal(single.first, batched.first[b])
    repeated = assign_queries_to_proposals(centres, refs.expand(5, -1, -1))
    assert torch.equal(repeated.owner, batched.owner)


def test_hand_computed_case():
    # All points on y = 0.5, so the cost is |dx|. N = 8, n = 3: c = [2, 2, 1] (5 // 3 = 1, remainder 2).
    centres = torch.tensor([[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]])
    xs = [0.0, 0.08, 0.15, 0.2, 0.45, 0.56, 0.85, 0.96]
    refs = torch.tensor([[x, 0.5] for x in xs])
    # Stage 1: every proposal takes its unique nearest query: 0 -> q1, 1 -> q4, 2 -> q6. Stage 2: q0, q2, q3
    # are nearest to proposal 0, which may take only two; moving q3 to proposal 1 (+0.2) is cheapest.
    expected_owner = [0, 0, 0, 1, 1, 1, 2, 2]
    for fn in (assign_queries_to_proposals, naive_assign_queries):
        result = fn(centres, refs)
        assert result.first.tolist() == [1, 4, 6]
        assert result.owner.tolist() == expected_owner


def test_float32_and_float64():
    gen = torch.Generator().manual_seed(2)
    # Multiples of 1/1024 are exact in both dtypes: identical optimal assignments.
    centres = torch.randint(-200, 1224, (3, 9, 2), generator=gen).double() / 1024
    refs = torch.randint(0, 1025, (3, 70, 2), generator=gen).double() / 1024
    r64 = assign_queries_to_proposals(centres, refs)
    r32 = assign_queries_to_proposals(centres.float(), refs.float())
    assert torch.equal(r64.owner, r32.owner) and torch.equal(r64.first, r32.first)
    _check_batch(centres, refs, r64)
    # Arbitrary float32 values.
    centres, refs = torch.rand(2, 6, 2, generator=gen), torch.rand(2, 45, 2, generator=gen)
    _check_batch(centres, refs, assign_queries_to_proposals(centres.float(), refs.float()))


def test_no_gradient_needed():
    centres = torch.rand(2, 4, 2, requires_grad=True)
    refs = torch.rand(2, 20, 2, requires_grad=True)
    result = assign_queries_to_proposals(centres, refs)
    assert not result.owner.requires_grad


def test_invalid_inputs():
    with pytest.raises(ValueError):
        assign_queries_to_proposals(torch.rand(1, 6, 2), torch.rand(1, 5, 2))      # n > N
    with pytest.raises(ValueError):
        assign_queries_to_proposals(torch.rand(2, 3, 2), torch.rand(3, 9, 2))      # batch mismatch
    bad = torch.rand(1, 3, 2)
    bad[0, 1, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        assign_queries_to_proposals(bad, torch.rand(1, 9, 2))


def test_fixed_group_assignment():
    groups = fixed_group_assignment(300, 10)
    assert groups.dtype == torch.int64 and groups.shape == (300,)
    assert groups[29].item() == 0 and groups[30].item() == 1 and groups[299].item() == 9
    assert torch.equal(groups, torch.arange(300) // 30)
    # N = 23, n = 5: blocks of 5, 5, 5, 4, 4 (the first N % n = 3 proposals own one more).
    expected = [0] * 5 + [1] * 5 + [2] * 5 + [3] * 4 + [4] * 4
    assert fixed_group_assignment(23, 5).tolist() == expected
    assert queries_per_proposal(23, 5).tolist() == [5, 5, 5, 4, 4]
    assert queries_per_proposal(300, 10).tolist() == [30] * 10
    assert fixed_group_assignment(7, 7).tolist() == list(range(7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_inputs():
    gen = torch.Generator().manual_seed(9)
    centres, refs = torch.rand(3, 10, 2, generator=gen), torch.rand(3, 300, 2, generator=gen)
    cpu = assign_queries_to_proposals(centres, refs)
    gpu = assign_queries_to_proposals(centres.cuda(), refs.cuda())
    assert gpu.owner.device.type == "cuda" and gpu.first.device.type == "cuda"
    assert torch.equal(gpu.owner.cpu(), cpu.owner) and torch.equal(gpu.first.cpu(), cpu.first)
    naive = naive_assign_queries(centres.cuda(), refs.cuda())
    assert naive.owner.device.type == "cuda"
    _check_batch(centres, refs, cpu)
