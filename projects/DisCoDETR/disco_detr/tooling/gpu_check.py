"""The GPU check behind tools/gpu_check.py: one command that runs the CUDA-only tests and measures the GPU figures.

    python tools/gpu_check.py                       # sized for under 8 minutes on one H100 / H200 (unmeasured)
    python tools/gpu_check.py --quick               # the sections by value, sized for 5 minutes on one H100
    python tools/gpu_check.py --out output/gpu_check --variants dino rtdetr --no-compile

Without CUDA it refuses with a one-line message (exit status 2). Writes ``<out>/gpu_check.json`` and
``<out>/gpu_check.md`` (the tables) and prints the tables. The sections run in the order 1, 2, 3 (eager), 4,
3 (compiled); compiled steps that would start after --time-budget seconds (default 450) are recorded as skipped.
Sections (each can be skipped):

1. tests: ``pytest`` on the files whose CUDA cases are skipped on CPU (tests/test_ms_deform_attn_triton.py:
   the Triton kernel against the float64 references on CUDA; tests/test_amp.py: the AMP policy on CUDA;
   tests/test_compile.py's inductor case on CUDA).
2. kernel: multi-scale deformable attention, Triton kernel against the PyTorch path, at DINO's sizes (4 levels
   of an 800 x 1333 image at strides 8/16/32/64: 100x167, 50x84, 25x42, 13x21; d = 256, 8 heads, 4 points),
   batch 2 and 8, float32 and bfloat16; the encoder (Nq = S, every token a query) and the decoder (900
   queries). Median forward and forward+backward milliseconds and the peak extra memory, measured by
   tools/benchmarks/benchmark_ms_deform_attn.py's ``measure`` (one home for that measurement), plus the largest
   difference between the two backends' outputs.
3. variants: one training step (forward, backward, AdamW) of each detector's COCO fine-tuning config at its
   paper resolution and batch per GPU (the variant table, disco_detr.variants: 800 x 1333 at batch 2,
   RT-DETR 640 x 640 at batch 4) under bf16 AMP (fp16 + loss scaler
   where the GPU has no bf16), eager and with ``train.compile`` (inductor) through the trainer's own
   DETRTrainLoop (so a variant that cannot compile falls back and the table says so); median step time, the
   first compiled step (compilation), peak memory, and achieved TFLOP/s (PyTorch's FlopCounterMode over one
   step; the Triton kernel's own flops are not counted) against the device's dense bf16 peak.
4. pretrain: tools/benchmarks/benchmark_gpu.py (issue 12, one home for these figures) at N = 300 queries
   (configs/disco_cond.py / siamese_cond.py) and N = 900 (disco_dino.py / siamese_dino.py): DisCo / Siamese
   step ratio, DMOQF's share of a DisCo step, TFLOP/s and peak memory.

--quick keeps the sections in the same order with less in each (:data:`QUICK`, sized by :func:`quick_plan`
from estimates, since no GPU has run it yet): the tests under a timeout; the kernel at batch 2 only (bf16 and
fp32, encoder and decoder); one eager bf16 step per variant (3 timed steps, no compiled steps); the DisCo /
Siamese ratio at N = 900 only. Every unit after the tests that would start after --time-budget seconds is
recorded as skipped, so the least valuable figures are the ones a slow machine loses. Same JSON and tables.

Goals (issue 21): kernel >= 2x the PyTorch path for forward+backward at DINO's sizes in bf16 with no more
memory; DisCo / Siamese <= 1.03; DMOQF <= 1 % of a step at N = 900. The JSON records each goal as met or not.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import types

import torch
from tqdm import tqdm

from .paths import REPO

DINO_LEVELS = [(100, 167), (50, 84), (25, 42), (13, 21)]
#: the pre-training cases of section 4: queries -> the variant whose DisCo / Siamese configs run
PRETRAIN = {300: "cond", 900: "dino"}


def variant_steps() -> dict[str, tuple[str, tuple[int, int], int]]:
    """variant -> (COCO fine-tuning config, (H, W) of the paper's training images, batch per GPU), from the
    variant table (imported here: detectron2's import warnings would precede the one-line CUDA refusal)."""
    from ..variants import VARIANTS

    return {v.name: (v.finetune_coco_config, v.paper_image_hw, v.batch_per_gpu) for v in VARIANTS.values()}

#: the full check's settings of the options --quick changes (None on the command line: the preset decides)
FULL = {"kernel_batches": [2, 8], "iters": 5, "warmup": 2, "time_budget": 450.0, "pretrain_queries": [300, 900],
        "tests_timeout": None}
#: --quick's settings: the check within :data:`QUICK_LIMIT_S` on one H100 (see :func:`quick_plan`)
QUICK = {"kernel_batches": [2], "iters": 3, "warmup": 1, "time_budget": 240.0, "pretrain_queries": [900],
         "tests_timeout": 105.0}  # 105: seven variant steps (D-FINE the seventh) keep the plan within 300 s
QUICK_LIMIT_S = 300.0
#: estimated H100 seconds of one unit of work, unmeasured (no GPU has run the check): start-up = python, torch,
#: detectron2 and triton imports plus CUDA context; a kernel case = both backends built, Triton's JIT compile of
#: the case's forward and backward (a few s), then warm-up + timed calls of a few ms each; a variant step = the
#: COCO config built at random init, cuDNN's first-step autotuning at 800 x 1333, 1 + iters steps + 1 counted
#: step of ~0.2-0.5 s; pre-training = the DisCo and the Siamese DETR model built and stepped warmup + iters times
#: at batch 32 of 384 x 384 views.
ESTIMATE_S = {"startup": 20.0, "kernel_case": 8.0, "variant_step": 15.0, "pretrain": 35.0}

TEST_FILES = ["tests/test_ms_deform_attn_triton.py", "tests/test_amp.py",
              "tests/test_compile.py::test_inductor_compiles_the_tiny_detector_on_cuda"]


def load_tool(name: str):
    """A benchmark module of disco_detr/tooling/benchmarks/ by name: the one place this module reaches the
    benchmark helpers."""
    return importlib.import_module(f"disco_detr.tooling.benchmarks.{name}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, "output", "gpu_check"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", nargs="+", default=None, help="default: every variant of the table")
    parser.add_argument("--quick", action="store_true",
                        help="the sections by value within 5 minutes on one H100 (see QUICK); other options override")
    parser.add_argument("--kernel-batches", type=int, nargs="+", default=None, help="full: 2 8, quick: 2")
    parser.add_argument("--kernel-queries", type=int, default=900, help="decoder queries (DINO: 900)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps / calls per measurement (full 5, quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant before timing (full 2, quick 1)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled steps")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if not in the table")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds; compiled variant steps (run last) that would start later are skipped (full 450); "
                             "with --quick every unit after the tests (quick 240)")
    parser.add_argument("--pretrain-queries", type=int, nargs="+", default=None, choices=sorted(PRETRAIN),
                        help="section 4's query counts (full: 300 900, quick: 900)")
    parser.add_argument("--tests-timeout", type=float, default=None, help="seconds for section 1 (full: none, quick 120)")
    for section in ("tests", "kernel", "variants", "pretrain"):
        parser.add_argument(f"--skip-{section}", action="store_true")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.compile = False  # compilation is the least predictable cost: --quick measures eager steps only
    return args


def quick_plan(num_variants: int, args) -> list[tuple[str, float]]:
    """The units of work of a check with ``args`` (sections not skipped) and their estimated H100 seconds
    (:data:`ESTIMATE_S`; the tests count their timeout), in running order: what sizes :data:`QUICK`."""
    plan = [("startup", ESTIMATE_S["startup"])]
    if not args.skip_tests:
        plan.append(("tests", args.tests_timeout or float("inf")))
    if not args.skip_kernel:
        plan += [(f"kernel batch {b} {d} {s}", ESTIMATE_S["kernel_case"]) for b, d, s in _kernel_cases(args)]
    if not args.skip_variants:
        plan += [(f"variant step {i}", ESTIMATE_S["variant_step"]) for i in range(num_variants)]
        if args.compile:
            plan += [(f"compiled variant step {i}", float("inf")) for i in range(num_variants)]
    if not args.skip_pretrain:
        plan += [(f"pretrain N={n}", ESTIMATE_S["pretrain"]) for n in args.pretrain_queries]
    return plan


def _kernel_cases(args) -> list[tuple[int, str, str]]:
    return list(itertools.product(args.kernel_batches, ("bfloat16", "float32"), ("encoder", "decoder")))


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


SKIPPED = "skipped: --time-budget reached"


# -------------------------------------------------------------------------------------------------- tests
def run_tests(timeout: float | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "projects", "DisCoDETR"),
                                                       os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *TEST_FILES],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        returncode, stdout, summary = proc.returncode, proc.stdout, None
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        returncode, summary = None, f"timed out after {timeout:g} s (the tests that finished are in the tail)"
    lines = stdout.strip().splitlines()
    return {"files": TEST_FILES, "returncode": returncode, "summary": summary or (lines[-1] if lines else ""),
            "seconds": round(time.perf_counter() - start, 1), "tail": "\n".join(lines[-40:])}


# ------------------------------------------------------------------------------------------------- kernel
def kernel_figures(device, args, deadline: float | None = None) -> list[dict]:
    from disco_detr.modeling.layers.ms_deform_attn import set_ms_deform_attn_backend

    bench = load_tool("benchmark_ms_deform_attn")
    meter = bench.CUDAPeakMemory(device)
    rows = []
    for batch, dtype_name, setting in tqdm(_kernel_cases(args), desc="kernel vs PyTorch", leave=False):
        if _past(deadline):
            rows.append({"batch": batch, "dtype": dtype_name, "setting": setting, "error": SKIPPED})
            continue
        opts = types.SimpleNamespace(batch=batch, queries=args.kernel_queries, d_model=256, heads=8, points=4)
        dtype = bench.DTYPES[dtype_name]
        outputs, row = {}, {"batch": batch, "dtype": dtype_name, "setting": setting}
        for backend in ("pytorch", "triton"):
            set_ms_deform_attn_backend(backend)
            try:
                torch.manual_seed(0)
                module, nq, call = bench.build_case("deformable", setting, DINO_LEVELS, opts, device, dtype)
                with torch.no_grad():
                    outputs[backend] = call().float()
                fwd = bench.measure(call, False, meter, device, args.iters, 30.0)
                module.zero_grad(set_to_none=True)
                train = bench.measure(call, True, meter, device, args.iters, 30.0)
                row.update({"nq": nq, f"{backend}_forward_ms": round(fwd[0], 3), f"{backend}_train_ms": round(train[0], 3),
                            f"{backend}_forward_mib": round(fwd[2], 1), f"{backend}_train_mib": round(train[2], 1)})
            except torch.cuda.OutOfMemoryError as error:
                row[f"{backend}_error"] = f"out of memory: {str(error).splitlines()[0]}"
            finally:
                set_ms_deform_attn_backend("auto")
                torch.cuda.empty_cache()
        if len(outputs) == 2:
            row["max_abs_diff"] = float((outputs["pytorch"] - outputs["triton"]).abs().max())
        if "pytorch_train_ms" in row and "triton_train_ms" in row:
            row["speedup_forward"] = round(row["pytorch_forward_ms"] / row["triton_forward_ms"], 2)
            row["speedup_train"] = round(row["pytorch_train_ms"] / row["triton_train_ms"], 2)
            row["memory_ratio_train"] = round(row["triton_train_mib"] / max(row["pytorch_train_mib"], 1e-6), 3)
        rows.append(row)
        del outputs
    return rows


# ----------------------------------------------------------------------------------------------- variants
def variant_step(name: str, compiled: bool, device, args, peak) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from disco_detr.engine.trainer import DETRTrainLoop

    gpu = load_tool("benchmark_gpu")
    config, (h, w), batch_size = variant_steps()[name]
    cfg = gpu.load(config, [])
    model, optimizer = gpu.build(cfg, device)
    batch = gpu.detection_batch(batch_size, h, w, model.num_classes)
    loop = DETRTrainLoop(model, itertools.repeat(batch), optimizer, amp=device.type == "cuda",
                         compile_kwargs={"backend": "inductor"} if compiled else None)

    def step():
        loss_dict, loss = loop.forward_losses(batch)
        optimizer.zero_grad(set_to_none=True)
        if loop.grad_scaler is not None:
            loop.grad_scaler.scale(loss).backward()
            loop.grad_scaler.step(optimizer)
            loop.grad_scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    gpu.reset_peak(device)  # these helpers act on CUDA only, so the step also runs (and is tested) on CPU
    start = time.perf_counter()
    loss = step()
    gpu.sync(device)
    first = time.perf_counter() - start
    for _ in range(max(args.warmup - 1, 0)):
        step()
    times = []
    for _ in range(args.iters):
        gpu.sync(device)
        start = time.perf_counter()
        loss = step()
        gpu.sync(device)
        times.append(time.perf_counter() - start)
    peak_mem = gpu.peak_gib(device)
    median = statistics.median(times)
    row = {"variant": name, "compiled": compiled, "config": config, "image_hw": [h, w], "batch": batch_size,
           "amp": str(loop.amp_dtype).replace("torch.", ""), "step_s": round(median, 4),
           "first_step_s": round(first, 2), "peak_memory_gib": peak_mem,
           "loss_finite": bool(torch.isfinite(loss))}
    if compiled:
        row["compile_fell_back"] = loop.compiled_forward is None
        row["compile_error"] = loop.compile_error
    else:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
        row["gflops_per_step"] = round(flops / 1e9, 3)
        row["achieved_tflops_per_s"] = round(flops / median / 1e12, 2)
        row["share_of_peak"] = round(flops / median / 1e12 / peak, 4) if peak else None
    gpu.empty_cache(device)
    return row


def variant_figures(device, args, peak, compiled: bool, deadline: float | None = None) -> list[dict]:
    """Eager (``compiled=False``) or compiled steps of ``args.variants``; compiled cases that would start after
    ``deadline`` (time.perf_counter()) are recorded as skipped, so the whole check keeps to its budget."""
    gpu = load_tool("benchmark_gpu")
    rows = []
    for name in tqdm(args.variants, desc=f"training steps ({'compiled' if compiled else 'eager'})", leave=False):
        if _past(deadline):
            rows.append({"variant": name, "compiled": compiled, "error": SKIPPED})
            continue
        try:
            rows.append(variant_step(name, compiled, device, args, peak))
        except Exception as error:  # one variant's failure must not lose the other figures: it is recorded
            rows.append({"variant": name, "compiled": compiled, "error": f"{type(error).__name__}: {error}"[:500]})
            gpu.empty_cache(device)
        if compiled:
            torch._dynamo.reset()
    return rows


def add_speedups(rows: list[dict]) -> list[dict]:
    eager = {r["variant"]: r for r in rows if not r["compiled"] and "step_s" in r}
    for r in rows:
        if r["compiled"] and "step_s" in r and r["variant"] in eager:
            r["speedup_over_eager"] = round(eager[r["variant"]]["step_s"] / r["step_s"], 3)
    return rows


# ----------------------------------------------------------------------------------------------- pretrain
def pretrain_figures(device, args, deadline: float | None = None) -> dict:
    gpu = load_tool("benchmark_gpu")
    out = {}
    from ..variants import VARIANTS

    for n in args.pretrain_queries:
        if _past(deadline):
            out[n] = {"error": SKIPPED}
            continue
        variant = PRETRAIN[n]
        disco, siamese = VARIANTS[variant].pretrain_config("disco"), VARIANTS[variant].pretrain_config("siamese")
        argv = ["--device", str(device), "--disco-config", disco, "--siamese-config", siamese, "--no-finetune",
                "--iters", str(max(args.iters, 5)), "--warmup", str(args.warmup)]
        if args.peak_tflops:
            argv += ["--peak-tflops", str(args.peak_tflops)]
        try:
            out[n] = gpu.main(argv)["pretrain"]
        except Exception as error:
            out[n] = {"error": f"{type(error).__name__}: {error}"[:500]}
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------------------ summary
def goals(result: dict) -> dict:
    """Each goal of issue 21 as {"value", "target", "met"} (None where its figure is missing)."""
    kernel = [r for r in result.get("kernel") or [] if r["dtype"] == "bfloat16" and "speedup_train" in r]
    pre = result.get("pretrain") or {}
    worst_speedup = min((r["speedup_train"] for r in kernel), default=None)
    worst_memory = max((r["memory_ratio_train"] for r in kernel), default=None)
    ratios = [p["disco_over_siamese"] for p in pre.values() if "disco_over_siamese" in p]
    share = pre.get(900, pre.get("900", {})).get("dmoqf_share_of_disco_step")

    def goal(value, target, ok):
        return {"value": value, "target": target, "met": None if value is None else ok(value)}

    return {
        "kernel_speedup_train_bf16_min": goal(worst_speedup, ">= 2", lambda v: v >= 2.0),
        "kernel_memory_ratio_train_bf16_max": goal(worst_memory, "<= 1", lambda v: v <= 1.0),
        "disco_over_siamese_max": goal(max(ratios, default=None), "<= 1.03", lambda v: v <= 1.03),
        "dmoqf_share_at_900": goal(share, "<= 0.01", lambda v: v <= 0.01),
    }


def _cell(value) -> str:
    return "-" if value is None else str(value)


def tables(result: dict) -> str:
    """The markdown tables of a result (as written to gpu_check.md)."""
    lines = [f"# GPU check: {result['device']} (torch {result['torch']}, triton {result['triton']})", ""]
    if result.get("tests"):
        t = result["tests"]
        lines += [f"Tests ({', '.join(t['files'])}): {t['summary']} (exit {t['returncode']}, {t['seconds']} s)", ""]
    if result.get("kernel"):
        lines += ["## Deformable attention: Triton kernel vs PyTorch path (DINO sizes, 4 levels of 800x1333)", "",
                  "| batch | dtype | setting | Nq | fwd ms PyTorch | fwd ms Triton | fwd+bwd ms PyTorch | fwd+bwd ms Triton"
                  " | speed-up fwd+bwd | MiB PyTorch | MiB Triton | max abs diff | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["kernel"]:
            note = "; ".join(r[k] for k in ("error", "pytorch_error", "triton_error") if r.get(k))
            lines.append("| " + " | ".join([_cell(r.get(k)) for k in (
                "batch", "dtype", "setting", "nq", "pytorch_forward_ms", "triton_forward_ms", "pytorch_train_ms",
                "triton_train_ms", "speedup_train", "pytorch_train_mib", "triton_train_mib", "max_abs_diff")]
                + [note.replace("|", "/")[:200]]) + " |")
        lines.append("")
    if result.get("variants"):
        lines += ["## Training step per variant (paper resolution, AMP)", "",
                  "| variant | compiled | HxW | batch | amp | step s | first step s | speed-up | peak GiB | TFLOP/s |"
                  " share of peak | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["variants"]:
            note = r.get("error") or (f"fell back: {r['compile_error']}" if r.get("compile_fell_back") else "")
            hw = "x".join(map(str, r["image_hw"])) if "image_hw" in r else "-"
            lines.append("| " + " | ".join([r["variant"], "yes" if r["compiled"] else "no", hw] + [_cell(r.get(k)) for k in (
                "batch", "amp", "step_s", "first_step_s", "speedup_over_eager", "peak_memory_gib",
                "achieved_tflops_per_s", "share_of_peak")] + [note.replace("|", "/")[:200]]) + " |")
        lines.append("")
    if result.get("pretrain"):
        lines += ["## Pre-training (tools/benchmarks/benchmark_gpu.py)", "",
                  "| N | DisCo s | Siamese s | ratio | DMOQF ms | DMOQF share | TFLOP/s DisCo | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, p in result["pretrain"].items():
            if "error" in p:
                lines.append(f"| {n} | error: {p['error'][:200]} |||||||")
                continue
            dmoqf_ms = None if p.get("dmoqf_s_per_step") is None else round(1000 * p["dmoqf_s_per_step"], 2)
            lines.append("| " + " | ".join(_cell(v) for v in (
                n, p.get("disco_step_s"), p.get("siamese_step_s"), p.get("disco_over_siamese"), dmoqf_ms,
                p.get("dmoqf_share_of_disco_step"), (p.get("achieved_tflops_per_s") or {}).get("disco"),
                p.get("peak_memory_gib"))) + " |")
        lines.append("")
    lines += ["## Goals", "", "| goal | value | target | met |", "|---|---|---|---|"]
    for name, g in result["goals"].items():
        lines.append(f"| {name} | {_cell(g['value'])} | {g['target']} | {_cell(g['met'])} |")
    lines.append(f"\nPeak used for shares: {_cell(result.get('peak_tflops'))} TFLOP/s. "
                 f"Whole check: {result['seconds']} s.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not torch.cuda.is_available() or not str(args.device).startswith("cuda"):
        print("gpu_check.py: needs a CUDA device (torch.cuda.is_available() is False here); nothing was run.",
              file=sys.stderr)
        raise SystemExit(2)
    import triton

    known = variant_steps()
    args.variants = args.variants or list(known)
    unknown = sorted(set(args.variants) - set(known))
    if unknown:
        raise SystemExit(f"gpu_check.py: unknown --variants {unknown}; the table has {sorted(known)}")

    device = torch.device(args.device)
    start = time.perf_counter()
    peak = load_tool("benchmark_gpu").peak_tflops(device, args.peak_tflops)
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "triton": triton.__version__,
              "peak_tflops": peak, "args": vars(args)}
    deadline = start + args.time_budget
    every = deadline if args.quick else None  # --quick: the budget holds for every unit after the tests
    if not args.skip_tests:
        result["tests"] = run_tests(args.tests_timeout)
    if not args.skip_kernel:
        result["kernel"] = kernel_figures(device, args, every)
    # compiled steps last: their compilation time is the least predictable part, and the budget cuts it short
    variants = [] if args.skip_variants else variant_figures(device, args, peak, compiled=False, deadline=every)
    if not args.skip_pretrain:
        result["pretrain"] = pretrain_figures(device, args, every)
    if not args.skip_variants and args.compile:
        variants += variant_figures(device, args, peak, compiled=True, deadline=deadline)
    if variants:
        result["variants"] = add_speedups(variants)
    result["goals"] = goals(result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    text = tables(result)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {os.path.join(args.out, 'gpu_check.json')} and gpu_check.md")
    return result

