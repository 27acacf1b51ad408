"""The DDP matrix: every variant of :data:`disco_detr.variants.VARIANTS` x {fine-tuning, DisCo DETR, Siamese
DETR, DETReg}, trained for a few iterations by two CPU processes (GLOO, detectron2's ``launch``) and by one,
with the same global batch; the two runs must log the same losses and reach the same weights.

Why they must agree: every sample is a function of its stream position, not of the rank
(:mod:`disco_detr.data.build`), so the two ranks together see the one process's batch; the loss normalisers
are averaged over the workers and DDP averages the gradients; the tiny detectors use FrozenBN and no dropout;
the optimiser is plain SGD (updates linear in the gradient, so float rounding stays small); every image has
one size (a batch is padded to its largest image, and a CNN's borders see the padding).

A case runs the project's own configs: the demo presets (configs/demo/) with the variant's detector shrunk by
its row's ``shrink`` (tiny ResNet, d = 32, 1 + 2 layers, 12 queries), and the DDP settings
(``train.ddp``: ``find_unused_parameters`` ...) of the paper config a user would launch on GPUs
(configs/finetune_<variant>_coco.py, configs/<method>_<variant>.py). Fine-tuning data keeps one box per image
and drops it on the images of one rank at one iteration (:data:`EMPTY_ITERATION`): a random crop can do that on a
long run, and DDP without ``find_unused_parameters`` stops when such a batch leaves a parameter out of the graph.
Random draws in the forward (dropout, denoising noise, DisCo's box jitter) are switched off: the trainer seeds
them per process from (seed, iteration, rank), so one process and two draw differently by design.

Pass: every logged loss term within :data:`LOSS_RTOL` (relative, floor 1) and the weight updates within
:data:`WEIGHT_RTOL` of their norm, except the cases of :data:`TOLERANCES`, each with its measured reason.

Files: ``<out>/<case>/w<N>/`` holds the N-process run (``metrics.json``, ``model_final.pth``, ``init.pth``,
``error.txt`` when it failed). tools/ddp_matrix.py runs the whole matrix and prints the table;
tests/test_ddp_matrix.py runs :data:`TEST_CASES`, one case per variant.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from ..variants import METHODS, VARIANTS, config_path

__all__ = ["EMPTY_ITERATION", "KINDS", "TEST_CASES", "TOLERANCES", "Case", "CaseResult", "Tolerance", "all_cases",
           "case_config", "compare_runs", "format_table", "logged_losses", "main", "ddp_dataset", "make_data",
           "run_cases"]

#: the training kinds: fine-tuning, then the pre-training methods (keys of :data:`disco_detr.variants.METHODS`)
KINDS = ("finetune", *METHODS)
#: the fine-tuning iteration (0-based) at which the last rank's images have no box
EMPTY_ITERATION = 1
ITERATIONS = 3
GLOBAL_BATCH = 4
IMAGE_SIZE = 96  # the tiny demo data's images are 96 x 96: views and images stay unpadded
LOSS_RTOL = 1e-3
WEIGHT_RTOL = 1e-3


@dataclass(frozen=True)
class Case:
    variant: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.variant}"


@dataclass(frozen=True)
class Tolerance:
    """How far a case's two runs may differ: ``loss`` for each logged loss term (relative, floor 1), except the
    terms whose names start with one of ``tied_terms``, which get ``tied_loss``; ``weight`` for the weight
    updates (|delta_2 - delta_1| / |delta_1|). ``reason``: why a case needs more than the defaults."""

    loss: float = LOSS_RTOL
    weight: float = WEIGHT_RTOL
    tied_terms: tuple[str, ...] = ()
    tied_loss: float = LOSS_RTOL
    reason: str = ""

    def is_tied(self, term: str) -> bool:
        return term.startswith(self.tied_terms) if self.tied_terms else False


#: the cases allowed more than float rounding, each for a cause that is not DDP's (docs/experiments.md, "The DDP
#: matrix on CPU"). RT-DETR DisCo DETR: the two runs' SyncBatchNorm statistics differ in the last bits (the mean of
#: two processes' means against one mean), so the Hungarian costs do (1 ulp), and the matching has exact ties (at
#: the first step every query's box is an encoder anchor of one size, the box heads starting at zero): a tie broken
#: the other way gives a box to another of the tied queries. L_loc does not see which (the tie is in its terms);
#: L_rec and CLD do (their target is the box's crop, the other view's query), and the runs drift from there.
TOLERANCES = {
    Case("rtdetr", "disco"): Tolerance(
        weight=2e-2, tied_terms=("loss_rec", "loss_contrast"), tied_loss=5e-2,
        reason="a tied Hungarian matching broken by float rounding moves L_rec / CLD"),
}


@dataclass(frozen=True)
class CaseResult:
    """One case's verdict: the largest relative loss difference over iterations and the terms of the default
    tolerance (``loss_diff``) and over the case's tied terms (``tied_loss_diff``, None without), the relative
    difference of the weight updates (|delta_2 - delta_1| / |delta_1|), and the error that stopped a run."""

    case: Case
    find_unused: bool
    loss_diff: float | None = None
    weight_diff: float | None = None
    error: str | None = None
    tied_loss_diff: float | None = None

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES.get(self.case, Tolerance())

    @property
    def ok(self) -> bool:
        tol = self.tolerance
        return (self.error is None and self.loss_diff is not None and self.loss_diff <= tol.loss
                and (self.tied_loss_diff is None or self.tied_loss_diff <= tol.tied_loss)
                and self.weight_diff is not None and self.weight_diff <= tol.weight)


#: the cases of ``make test`` (tests/test_ddp_matrix.py), one per variant: a case's training costs about the same
#: whatever its kind (1-5 s of a ~10 s set-up per launch on 2 cores), so the kinds rotate to cover all four, and the
#: two-stage detectors (denoising, encoder heads; D-FINE also its distribution losses) fine-tune, with the batch
#: whose last rank has no box
TEST_CASES = (Case("cond", "finetune"), Case("dab", "disco"), Case("deformable_ss", "siamese"),
              Case("deformable_ms", "detreg"), Case("dino", "finetune"), Case("rtdetr", "finetune"),
              Case("dfine", "finetune"))


def all_cases(variants=None, kinds=KINDS) -> list[Case]:
    return [Case(v, k) for v in (variants or VARIANTS) for k in kinds]


def ddp_dataset(dicts: list, empty_positions, boxes_per_image: int = 1, seed: int = 0) -> list:
    """``dicts`` (detectron2 dataset dicts) with exactly ``boxes_per_image`` annotations per image (its first ones;
    images with fewer are left out), and none on the images that the training stream
    (:class:`~disco_detr.data.build.StreamDataset`, shuffled with ``seed``) reads at ``empty_positions``.

    One box count for every image keeps the denoising groups (DINO, RT-DETR: num_denoising // the largest box count
    of the batch, padded slots attending to the real ones) the same in a process's batch as in the global batch."""
    from ..data.build import StreamDataset

    kept = [dict(d, annotations=d["annotations"][:boxes_per_image]) for d in dicts
            if len(d.get("annotations", ())) >= boxes_per_image]
    stream = StreamDataset(kept, mapper=None, seed=seed)
    drop = {stream.index_at(p) for p in empty_positions}
    return [dict(d, annotations=[]) if i in drop else d for i, d in enumerate(kept)]


def _last_rank_positions(iteration: int, world: int = 2, batch: int = GLOBAL_BATCH) -> list[int]:
    """The stream positions that rank ``world - 1`` reads at ``iteration`` (StreamSampler's layout)."""
    per_rank = batch // world
    return [(iteration * per_rank + j) * world + world - 1 for j in range(per_rank)]


def _sgd(cfg) -> None:
    """Plain SGD over the config's own parameter groups, every group at the base rate's factors."""
    params = cfg.optimizer.params
    params.backbone_lr_factor = 1.0
    cfg.optimizer = L(torch.optim.SGD)(params=params, lr=0.05, momentum=0.9, weight_decay=1e-4)


def _deterministic(detector) -> None:
    """No dropout, no denoising noise: random draws in the forward come from torch's generator seeded by
    (seed, iteration, rank), so they differ between one process and two by design (docs/gpu.md, "Several processes")."""
    for part in ("encoder", "decoder"):
        if part in detector and "dropout" in detector[part]:
            detector[part].dropout = 0.0
    if "box_noise_scale" in detector:
        detector.update(label_noise_ratio=0.0, box_noise_scale=0.0)


def case_config(case: Case):
    """The LazyConfig of ``case``: its demo preset shrunk to the tests' tiny detector, SGD, batch
    :data:`GLOBAL_BATCH` of :data:`IMAGE_SIZE`-px images, :data:`ITERATIONS` iterations, no evaluation, and
    the paper config's ``train.ddp``."""
    row = VARIANTS[case.variant]
    if case.kind == "finetune":
        cfg = LazyConfig.load(config_path(row.demo_config))
        row.shrink(cfg.model)
        _deterministic(cfg.model)
        mapper = cfg.dataloader.train.mapper
        mapper.update(min_sizes=(IMAGE_SIZE,), max_size=IMAGE_SIZE, crop_probability=0.0)
        cfg.dataloader.train.dataset = L(ddp_dataset)(
            dicts=cfg.dataloader.train.dataset, empty_positions=_last_rank_positions(EMPTY_ITERATION),
            seed="${train.seed}")
        del cfg.dataloader.test  # no evaluation: the matrix compares training
        paper = LazyConfig.load(config_path(row.finetune_coco_config))
    else:
        cfg = LazyConfig.load(config_path(row.demo_pretrain_config(case.kind)))
        levels = row.shrink(cfg.model.detector, freeze_at=4)
        _deterministic(cfg.model.detector)
        mapper = cfg.dataloader.train.mapper
        if case.kind == "detreg":
            cfg.model.detector.backbone.out_features = levels
            cfg.model.embedding_levels = (levels[-1],)
            mapper.update(scales=(IMAGE_SIZE,), max_size=IMAGE_SIZE, crop_resize_sizes=(IMAGE_SIZE,),
                          crop_size_range=(IMAGE_SIZE, IMAGE_SIZE), crop_size=32, num_proposals=4)
        else:
            cfg.model.feature_levels = levels
            cfg.model.update(enc_hidden=32, box_jitter=0.0)  # the jitter is a draw per process, as above
            mapper.update(min_sizes=(IMAGE_SIZE,), max_size=IMAGE_SIZE, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                          num_boxes=4, crop_size=32)  # every view is the whole image: no padding
        paper = LazyConfig.load(config_path(row.pretrain_config(case.kind)))
    cfg.train.ddp = paper.train.ddp
    _sgd(cfg)
    cfg.dataloader.train.update(total_batch_size=GLOBAL_BATCH, num_workers=0)
    cfg.train.update(max_iter=ITERATIONS, eval_period=0, log_period=1, init_checkpoint="", device="cpu",
                     require_backbone_weights=False, seed=0)
    cfg.train.checkpointer.period = ITERATIONS
    cfg.train.ema.enabled = False
    cfg.train.compile.enabled = False
    return cfg


def make_data(root: str) -> str:
    """The tiny demo data set of the tests (16 train / 6 val / 4 unlabelled images of 96 px) with both
    proposal stores, in ``root``; returns ``root``."""
    from .demo_images import generate_demo_dataset

    generate_demo_dataset(root, num_train=16, num_val=6, num_unlabelled=4, image_size=IMAGE_SIZE, seed=3)
    images = os.path.join(root, "images", "unlabelled")
    for method, name in (("edgeboxes", "unlabelled.sqlite"), ("selective_search", "unlabelled_ss.sqlite")):
        subprocess.run([sys.executable, config_path("tools/generate_proposals.py"), "--images", images, "--method",
                        method, "--workers", "1", "--out", os.path.join(root, "proposals", name)],
                       check=True, capture_output=True)
    return root


# --------------------------------------------------------------------------- the training processes

def _train_cases(names: list[str], out: str, data: str) -> None:
    """In each process of the launch: train each case in turn; a failing case writes ``error.txt`` and
    ends this launch (the other rank may be waiting in a collective)."""
    from detectron2.utils import comm

    from ..data.datasets import register_demo_datasets
    from ..engine import Trainer

    register_demo_datasets(data)
    world = comm.get_world_size()
    cases = {c.name: c for c in all_cases()}
    for name in names:
        run_dir = os.path.join(out, name, f"w{world}")
        cfg = case_config(cases[name])
        cfg.train.output_dir = run_dir
        try:
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=False)
            if comm.is_main_process():  # the weights (buffers are not trained; health buffers start as NaN)
                model = trainer.model.module if world > 1 else trainer.model
                torch.save({k: p.detach().clone() for k, p in model.named_parameters()},
                           os.path.join(run_dir, "init.pth"))
            trainer.train()
        except Exception:
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(run_dir, f"error{comm.get_rank()}.txt"), "w") as f:
                f.write(traceback.format_exc())
            raise


def _worker_main(argv) -> None:
    from detectron2.engine import launch

    parser = argparse.ArgumentParser()
    parser.add_argument("--num-procs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("cases", nargs="+")
    args = parser.parse_args(argv)
    launch(_train_cases, args.num_procs, dist_url="auto", args=(args.cases, args.out, args.data),
           timeout=datetime.timedelta(minutes=3))


def _launch(names: list[str], world: int, out: str, data: str, timeout: float) -> None:
    """Train ``names`` with ``world`` CPU processes; on a failure, go on with the cases after the failed one."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    remaining = list(names)
    while remaining:
        cmd = [sys.executable, "-m", __name__, "--worker", "--num-procs", str(world), "--out", out, "--data", data,
               *remaining]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        done = [n for n in remaining if os.path.exists(os.path.join(out, n, f"w{world}", "model_final.pth"))]
        failed = next((n for n in remaining if n not in done), None)
        if proc.returncode == 0 or failed is None:
            return
        run_dir = os.path.join(out, failed, f"w{world}")
        os.makedirs(run_dir, exist_ok=True)
        if not any(f.startswith("error") for f in os.listdir(run_dir)):
            with open(os.path.join(run_dir, "error_launch.txt"), "w") as f:
                f.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        remaining = remaining[remaining.index(failed) + 1:]


# --------------------------------------------------------------------------- the verdict

def logged_losses(run_dir: str) -> dict[int, dict[str, float]]:
    """{iteration: {loss name: value}} from detectron2's metrics.json (log_period 1)."""
    out = {}
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            record = json.loads(line)
            if "total_loss" in record:
                out[record["iteration"]] = {k: v for k, v in record.items() if k.startswith("loss")}
    return out


def _error(run_dir: str) -> str | None:
    if not os.path.isdir(run_dir):
        return "not run"
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("error"):
            with open(os.path.join(run_dir, name)) as f:
                lines = [line for line in f.read().strip().splitlines() if line.strip()]
            return lines[-1][:300] if lines else name
    return None if os.path.exists(os.path.join(run_dir, "model_final.pth")) else "no model_final.pth"


def compare_runs(case: Case, out: str) -> CaseResult:
    """The verdict of ``case`` from its one- and two-process runs under ``out``."""
    find_unused = bool(case_config(case).train.ddp.find_unused_parameters)
    one, two = os.path.join(out, case.name, "w1"), os.path.join(out, case.name, "w2")
    for run_dir in (one, two):
        error = _error(run_dir)
        if error is not None:
            return CaseResult(case, find_unused, error=f"{os.path.basename(run_dir)}: {error}")
    losses_one, losses_two = logged_losses(one), logged_losses(two)
    if sorted(losses_one) != list(range(ITERATIONS)) or sorted(losses_two) != sorted(losses_one):
        return CaseResult(case, find_unused, error=f"logged iterations {sorted(losses_one)} / {sorted(losses_two)}")
    tolerance = TOLERANCES.get(case, Tolerance())
    loss_diff, tied_diff = 0.0, (0.0 if tolerance.tied_terms else None)
    for it, terms in losses_one.items():
        if terms.keys() != losses_two[it].keys():
            return CaseResult(case, find_unused, error=f"iteration {it}: loss terms differ: "
                              f"{sorted(terms.keys() ^ losses_two[it].keys())}")
        for name, value in terms.items():
            diff = abs(losses_two[it][name] - value) / max(1.0, abs(value))
            if tolerance.is_tied(name):
                tied_diff = max(tied_diff, diff)
            else:
                loss_diff = max(loss_diff, diff)
    load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    init, init_two = load(os.path.join(one, "init.pth")), load(os.path.join(two, "init.pth"))
    final_one = load(os.path.join(one, "model_final.pth"))["model"]
    final_two = load(os.path.join(two, "model_final.pth"))["model"]
    keys = list(init)
    if init.keys() != init_two.keys() or any(not torch.equal(init[k], init_two[k]) for k in keys):
        return CaseResult(case, find_unused, loss_diff, error="the initial weights differ", tied_loss_diff=tied_diff)
    delta_one = torch.cat([(final_one[k] - init[k]).flatten() for k in keys])
    delta_two = torch.cat([(final_two[k] - init[k]).flatten() for k in keys])
    if delta_one.norm() == 0:
        return CaseResult(case, find_unused, loss_diff, error="no weight moved", tied_loss_diff=tied_diff)
    weight_diff = float((delta_one - delta_two).norm() / delta_one.norm())
    return CaseResult(case, find_unused, loss_diff, weight_diff, tied_loss_diff=tied_diff)


def run_cases(cases: list[Case], out: str, data: str, timeout: float = 1800) -> list[CaseResult]:
    """Train ``cases`` with one and with two processes (``data``: a folder from :func:`make_data`) under
    ``out`` and return their verdicts."""
    names = [c.name for c in cases]
    for world in (1, 2):
        _launch(names, world, out, data, timeout)
    return [compare_runs(c, out) for c in cases]


def format_table(results: list[CaseResult]) -> str:
    """The markdown table of ``results``; a case of :data:`TOLERANCES` shows its tied terms' difference after
    the others' ("a; loss_rec/loss_contrast b") and its tolerances after the verdict."""
    rows = ["| variant | kind | find_unused | max loss diff | weight diff | result |", "|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.1e}"  # noqa: E731
    for r in results:
        verdict = "ok" if r.ok else (r.error or "differs")
        loss = fmt(r.loss_diff)
        tol = r.tolerance
        if tol.tied_terms:
            loss += f"; {'/'.join(tol.tied_terms)} {fmt(r.tied_loss_diff)}"
        if r.case in TOLERANCES:
            verdict += (f" (tolerance: loss {tol.loss:g}, {'/'.join(tol.tied_terms) or 'tied terms'} "
                        f"{tol.tied_loss:g}, weights {tol.weight:g}: {tol.reason})")
        rows.append(f"| {r.case.variant} | {r.case.kind} | {r.find_unused} | {loss} | {fmt(r.weight_diff)} | "
                    f"{verdict} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        _worker_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "runs")
        data = make_data(os.path.join(tmp, "data"))
        results = run_cases(all_cases(args.variants, args.kinds), out, data)
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
