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
    assert len(ddp_matrix.all_cases()) == len(VARIANTS) * len(ddp_matrix.KINDS) == 24


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
