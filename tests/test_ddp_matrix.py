"""The DDP matrix (disco_detr.tooling.ddp_matrix) in ``make test``: one case per variant (TEST_CASES), two GLOO
processes against one with the same global batch; tools/ddp_matrix.py runs all 24 cases. The fine-tuning data
really holds the batch in which one process's images have no box."""
from detectron2.config import instantiate

from disco_detr.data.build import StreamDataset, StreamSampler
from disco_detr.tooling import ddp_matrix
from disco_detr.variants import VARIANTS


def test_the_test_cases_cover_every_variant_and_kind():
    assert sorted(c.variant for c in ddp_matrix.TEST_CASES) == sorted(VARIANTS)
    assert {c.kind for c in ddp_matrix.TEST_CASES} == set(ddp_matrix.KINDS)
    assert len(ddp_matrix.all_cases()) == len(VARIANTS) * len(ddp_matrix.KINDS) == 28


def test_finetuning_batch_with_no_box_on_the_last_rank(demo_root):
    """The images that rank 1 of 2 reads at EMPTY_ITERATION (the trainer's own sampler) have no box after the
    mapper; rank 0's have boxes, and so has every other batch of the run."""
    cfg = ddp_matrix.case_config(ddp_matrix.Case("rtdetr", "finetune"))
    loader_cfg = cfg.dataloader.train
    dataset = instantiate(loader_cfg.dataset)
    mapper = instantiate(loader_cfg.mapper)
    stream = StreamDataset(dataset, mapper, seed=cfg.train.seed)
    per_rank = ddp_matrix.GLOBAL_BATCH // 2
    for rank in (0, 1):
        positions = iter(StreamSampler(rank=rank, world_size=2))
        for it in range(ddp_matrix.ITERATIONS):
            boxes = [len(stream[next(positions)]["instances"]) for _ in range(per_rank)]
            if rank == 1 and it == ddp_matrix.EMPTY_ITERATION:
                assert boxes == [0] * per_rank
            else:
                assert min(boxes) > 0, (rank, it, boxes)


def test_one_case_per_variant_matches_one_process(demo_proposals, demo_ss_proposals, tmp_path):
    results = ddp_matrix.run_cases(list(ddp_matrix.TEST_CASES), str(tmp_path), demo_proposals, timeout=900)
    table = ddp_matrix.format_table(results)
    assert all(r.ok for r in results), table
    assert all(r.loss_diff <= ddp_matrix.LOSS_RTOL and r.weight_diff <= ddp_matrix.WEIGHT_RTOL for r in results)


def _fake_runs(out, case, loss_two: dict, weight_two: float):
    """One- and two-process run folders of ``case`` under ``out`` as the matrix writes them: every iteration logs
    loss_loc_bbox = 1, loss_rec = 2 (one process) or ``loss_two`` (two), and one weight moves from 0 to 1 (one
    process) or to ``weight_two`` (two)."""
    import json
    import os

    import torch

    for world, losses, weight in ((1, {"loss_loc_bbox": 1.0, "loss_rec": 2.0}, 1.0), (2, loss_two, weight_two)):
        run_dir = os.path.join(out, case.name, f"w{world}")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            for it in range(ddp_matrix.ITERATIONS):
                f.write(json.dumps({"iteration": it, "total_loss": sum(losses.values()), **losses}) + "\n")
        torch.save({"w": torch.zeros(2)}, os.path.join(run_dir, "init.pth"))
        torch.save({"model": {"w": torch.tensor([1.0, weight - 1.0])}}, os.path.join(run_dir, "model_final.pth"))


def test_the_wider_tolerance_covers_only_its_case_and_its_terms(tmp_path):
    """RT-DETR DisCo DETR's exception (docs/experiments.md, "The DDP matrix on CPU"): its tied terms (L_rec, CLD)
    and weights get the wider tolerance; every other term keeps the default, and so does every other case."""
    rtdetr, cond = ddp_matrix.Case("rtdetr", "disco"), ddp_matrix.Case("cond", "disco")
    tol = ddp_matrix.TOLERANCES[rtdetr]
    assert tol.tied_terms and tol.reason and cond not in ddp_matrix.TOLERANCES
    rec_moved = {"loss_loc_bbox": 1.0, "loss_rec": 2.0 + 0.5 * tol.tied_loss * 2.0}
    loc_moved = {"loss_loc_bbox": 1.0 + 2 * ddp_matrix.LOSS_RTOL, "loss_rec": 2.0}
    weight_moved = 1.0 + 0.5 * tol.weight
    cases = {"rec": (rtdetr, rec_moved, 1.0), "rec_cond": (cond, rec_moved, 1.0), "loc": (rtdetr, loc_moved, 1.0),
             "weight": (rtdetr, dict(rec_moved), weight_moved), "weight_cond": (cond, dict(rec_moved), weight_moved)}
    verdicts = {}
    for name, (case, losses, weight) in cases.items():
        _fake_runs(str(tmp_path / name), case, losses, weight)
        result = ddp_matrix.compare_runs(case, str(tmp_path / name))
        verdicts[name] = result.ok
        assert result.error is None
    assert verdicts == {"rec": True, "rec_cond": False, "loc": False, "weight": True, "weight_cond": False}
    table = ddp_matrix.format_table([ddp_matrix.compare_runs(rtdetr, str(tmp_path / "rec"))])
    assert "loss_rec" in table and tol.reason in table
