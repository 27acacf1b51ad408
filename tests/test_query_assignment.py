"""DMOQF query-to-proposal assignment: exactness against scipy (the replicated Hungarian of
``naive_assign_queries``), the tie-break rule on tie-heavy inputs, ownership invariants, baseline grouping."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from disco_detr.modeling.matching.query_assignment import (
    QueryAssignment,
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



_SOLVER_PARTS = ("_cheapest_moves_row", "_ssp_image", "_ssp_batch")


def _interpreted(monkeypatch):
    """Make the stage-2 solver run as plain Python (what happens without numba)."""
    import disco_detr.modeling.matching.query_assignment as qa

    for name in _SOLVER_PARTS:
        monkeypatch.setattr(qa, name, getattr(getattr(qa, name), "py_func", getattr(qa, name)))


@pytest.fixture(params=["compiled", "python"], autouse=True)
def solver(request, monkeypatch):
    """Run every test with the numba-compiled stage-2 solver and with the same code interpreted."""
    import disco_detr.modeling.matching.query_assignment as qa

    if request.param == "compiled" and qa.numba is None:
        pytest.skip("numba is not installed")
    if request.param == "python":
        _interpreted(monkeypatch)
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


def _tie_heavy_cases(gen):
    """(name, centres (B, n, 2), refs (B, N, 2)) with many exactly equal costs and cost differences, N = 300."""
    cases = []
    spots = torch.rand(3, 12, 2, generator=gen)                                          # duplicate references
    cases.append(("duplicate_refs", torch.rand(3, 10, 2, generator=gen),
                  torch.gather(spots, 1, torch.randint(0, 12, (3, 300, 1), generator=gen).expand(-1, -1, 2))))
    centres = torch.rand(3, 10, 2, generator=gen)                                         # duplicate proposals
    centres[:, 5:] = centres[:, :5]
    cases.append(("duplicate_proposals", centres, torch.rand(3, 300, 2, generator=gen)))
    middles = torch.rand(3, 4, 2, generator=gen)                                          # clustered references
    member = torch.randint(0, 4, (3, 300), generator=gen)
    offsets = torch.randint(-2, 3, (3, 300, 2), generator=gen).float() / 256
    clustered = torch.gather(middles, 1, member[..., None].expand(-1, -1, 2)) + offsets
    cases.append(("clustered_refs", torch.rand(3, 10, 2, generator=gen), clustered))
    lattice = torch.randint(0, 6, (3, 300, 2), generator=gen).float() / 5                 # a coarse lattice
    cases.append(("lattice", torch.randint(0, 6, (3, 10, 2), generator=gen).float() / 5, lattice))
    line = torch.rand(3, 300, 1, generator=gen)                                           # one dimension
    cases.append(("collinear", torch.cat([torch.rand(3, 10, 1, generator=gen), torch.full((3, 10, 1), 0.5)], 2),
                  torch.cat([line, torch.full((3, 300, 1), 0.5)], 2)))
    return cases


def test_tie_heavy_cases_reach_the_reference_cost():
    for name, centres, refs in _tie_heavy_cases(torch.Generator().manual_seed(21)):
        fast = _check_batch(centres, refs, assign_queries_to_proposals(centres, refs))
        assert fast == pytest.approx(_check_batch(centres, refs, naive_assign_queries(centres, refs)), abs=1e-6), name


def test_choices_do_not_depend_on_numba(solver, monkeypatch):
    """The compiled and the interpreted solver are one code: the same queries under every tie."""
    import disco_detr.modeling.matching.query_assignment as qa

    if solver != "compiled":
        pytest.skip("compares the compiled run with the interpreted one")
    cases = _tie_heavy_cases(torch.Generator().manual_seed(22))
    compiled = [assign_queries_to_proposals(centres, refs).owner for _, centres, refs in cases]
    _interpreted(monkeypatch)
    assert all(not hasattr(getattr(qa, name), "py_func") for name in _SOLVER_PARTS)
    for (name, centres, refs), owner in zip(cases, compiled):
        assert torch.equal(assign_queries_to_proposals(centres, refs).owner, owner), name


def test_clusters_with_duplicates_give_the_reference_assignment():
    """Every query strictly nearest to its own cluster's proposal(s), clusters sized to the capacities: the
    assignment is defined (two proposals at one centre share a cluster) although most costs are tied."""
    gen = torch.Generator().manual_seed(23)
    n, total = 10, 300                                                                  # 30 queries per proposal
    sites = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1).reshape(9, 2) * 0.4
    centres = torch.cat([sites, sites[4:5]]).double() - 0.1                             # proposal 9 = proposal 4
    cluster = torch.tensor([k if k < 9 else 4 for k in range(n)]).repeat_interleave(30)
    shuffle = torch.randperm(total, generator=gen)
    cluster = cluster[shuffle]
    jitter = torch.randint(-3, 4, (total, 2), generator=gen).double() / 64               # many duplicates
    refs = centres[cluster] + jitter
    expected = cluster.clone()
    for fn in (assign_queries_to_proposals, naive_assign_queries):
        result = fn(centres, refs)
        _check_batch(centres[None], refs[None], QueryAssignment(result.owner[None], result.first[None]))
        owner = torch.where(result.owner == 9, 4, result.owner)
        assert torch.equal(owner, expected), fn.__name__
    fast, naive = assign_queries_to_proposals(centres, refs), naive_assign_queries(centres, refs)
    assert torch.equal(fast.first, naive.first)                                        # the same scipy stage 1
    assert (fast.owner == 9).sum() == 30 and (fast.owner == 4).sum() == 30


def test_tie_break_rule_by_hand():
    """Two proposals on a line at x = 0.25 and 0.75, four queries at x = 0.5 (equally far from both).

    Stage 1: proposal 0 -> q0, 1 -> q2. Stage 2 (c = [3, 3]) starts with every tied query at the lowest index,
    proposal 0 with members [q1, q3, q4, q5, q7] (two too many) and proposal 1 with [q6]. Each round moves the
    first cheapest member, q1, whose slot then holds the list's last member, q7: [q7, q3, q4, q5]; the next
    round moves q7. The reference reaches the same cost with its own choice among the tied queries.
    """
    xs = [0.25, 0.5, 0.75, 0.5, 0.2, 0.5, 0.8, 0.5]
    centres = torch.tensor([[0.25, 0.5], [0.75, 0.5]])
    refs = torch.tensor([[x, 0.5] for x in xs])
    result = assign_queries_to_proposals(centres, refs)
    assert result.first.tolist() == [0, 2]
    assert result.owner.tolist() == [0, 1, 1, 0, 0, 0, 1, 1]
    _check_batch(centres[None], refs[None], QueryAssignment(result.owner[None], result.first[None]))


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
