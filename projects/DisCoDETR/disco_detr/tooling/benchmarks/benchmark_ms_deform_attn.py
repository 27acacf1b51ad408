"""Benchmarks multi-scale deformable attention (pure PyTorch) against dense multi-head attention of the same width.

Layers: ``MultiScaleDeformableAttention(d, heads, levels, points)`` and ``MultiheadAttention(d, heads)``, both from
``disco_detr.modeling.layers``. Settings, at Deformable DETR sizes (an 800 x 1066 image: levels 100x134, 50x67,
25x34, 13x17, S = 17,821 tokens), batch --batch:

* encoder: Nq = S queries attend to the S memory tokens (deformable: reference points at the pixel centres of
  every level; dense: self-attention over all S tokens, i.e. an S x S attention per head);
* decoder: Nq = --queries (300) queries attend to the S memory tokens (cross-attention).

For each: median milliseconds (wall, and process CPU time over all threads) of a forward pass under
``torch.no_grad()`` and of a training step (forward, sum, backward), and the peak extra memory of each.

Memory, CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call (the module,
its inputs and outputs of earlier calls excluded). Memory, CPU: the growth of the process's peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) from just after the module and inputs were built
to the end of the call (the training figure is measured after the forward one and includes it: the larger
of the two). It is only meaningful in a fresh process, so each CPU setting runs in its own subprocess
(--no-isolate runs them in this process: later figures are then lower bounds, and the output says so).

The first call of each kind is the memory measurement and doubles as warm-up; then up to --iters timed
calls, fewer if one setting's calls exceed --time-budget seconds; when the first call alone took longer
than that (the dense encoder on CPU: S^2 attention), its time is reported and the "timed" column shows 0.

Prints a table and ends with one JSON line.

    python tools/benchmarks/benchmark_ms_deform_attn.py                 # CPU, plus CUDA when available
    python tools/benchmarks/benchmark_ms_deform_attn.py --quick         # tiny smoke run (seconds, in-process)
    python tools/benchmarks/benchmark_ms_deform_attn.py --device cuda --batch 2 --dtype float16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from tqdm import tqdm

from disco_detr.modeling.layers import MultiheadAttention, MultiScaleDeformableAttention

FULL_LEVELS = [(100, 134), (50, 67), (25, 34), (13, 17)]
QUICK_LEVELS = [(8, 10), (4, 5), (2, 3), (1, 2)]
CASES = [(layer, setting) for setting in ("encoder", "decoder") for layer in ("deformable", "dense")]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cpu, plus cuda when available)")
    parser.add_argument("--quick", action="store_true", help="tiny maps and width, 2 iterations, in-process")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--queries", type=int, default=300, help="decoder queries")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--iters", type=int, default=3, help="timed calls per measurement (at most)")
    parser.add_argument("--time-budget", type=float, default=6.0,
                        help="stop timing a measurement after this many seconds (at least one timed call)")
    parser.add_argument("--no-isolate", action="store_true", help="run CPU settings in this process")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # "layer:setting:device", for subprocesses
    args = parser.parse_args(argv)
    if args.quick:
        args.d_model, args.heads, args.points, args.queries, args.iters = 64, 8, 2, 30, 2
    if min(args.batch, args.queries, args.d_model, args.heads, args.points, args.iters) <= 0:
        parser.error("--batch, --queries, --d-model, --heads, --points and --iters must be positive")
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
    return args


class CPUPeakMemory:
    """Growth of the process's peak RSS since the meter was made (after the module and inputs were built), in MiB.

    ru_maxrss never decreases, so a later measurement is max(its own peak, earlier peaks): the forward pass is
    measured first, then the training step (which needs more). ru_maxrss is in KiB on Linux, bytes on macOS.
    """

    unit = 1 if sys.platform == "darwin" else 1024

    def __init__(self):
        self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def start(self) -> None:
        pass

    def stop(self) -> float:
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) * self.unit / 2**20


class CUDAPeakMemory:
    """Peak of torch.cuda.memory_allocated over a call, minus what was allocated before it, in MiB."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)

    def stop(self) -> float:
        torch.cuda.synchronize(self.device)
        return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20


def level_layout(levels, device):
    shapes = torch.tensor(levels, dtype=torch.long, device=device)
    areas = shapes.prod(1)
    return shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def encoder_reference_points(levels, batch, device, dtype):
    """(B, S, L, 2): each token's own pixel centre (normalised x, y), the same for every level (no padding)."""
    centres = []
    for h, w in levels:
        ys, xs = torch.meshgrid((torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
                                (torch.arange(w, device=device, dtype=dtype) + 0.5) / w, indexing="ij")
        centres.append(torch.stack([xs.flatten(), ys.flatten()], -1))
    ref = torch.cat(centres)                                                     # (S, 2)
    return ref[None, :, None, :].expand(batch, -1, len(levels), -1).contiguous()


def build_case(layer: str, setting: str, levels, args, device, dtype):
    """Returns (module, call) where call() runs the layer once on fixed random inputs and returns its output."""
    gen = torch.Generator().manual_seed(0)
    s = sum(h * w for h, w in levels)
    nq = s if setting == "encoder" else args.queries
    memory = torch.randn(args.batch, s, args.d_model, generator=gen).to(device, dtype)
    pos = torch.randn(args.batch, s, args.d_model, generator=gen).to(device, dtype)
    if layer == "deformable":
        module = MultiScaleDeformableAttention(args.d_model, args.heads, len(levels), args.points).to(device, dtype)
        shapes, starts = level_layout(levels, device)
        if setting == "encoder":
            query, ref = memory + pos, encoder_reference_points(levels, args.batch, device, dtype)
        else:
            query = torch.randn(args.batch, nq, args.d_model, generator=gen).to(device, dtype)
            ref = torch.rand(args.batch, nq, 1, 2, generator=gen).to(device, dtype).expand(-1, -1, len(levels), -1)
        return module, nq, lambda: module(query, ref, memory, shapes, starts)
    module = MultiheadAttention(args.d_model, args.heads).to(device, dtype)
    if setting == "encoder":
        return module, nq, lambda: module(memory + pos, memory + pos, memory)
    query = torch.randn(args.batch, nq, args.d_model, generator=gen).to(device, dtype)
    return module, nq, lambda: module(query, memory + pos, memory)


def measure(call, train: bool, meter, device, iters: int, budget: float) -> tuple[float, float, float, int]:
    """(median wall ms, median process CPU ms, peak extra MiB of the first call, timed calls).

    0 timed calls: the figures are the first call's. Process CPU time (all threads) is what the call cost on a
    shared machine, where wall time also counts waiting for other processes; it means little on CUDA.
    """

    def once():
        if train:
            call().float().sum().backward()
        else:
            with torch.no_grad():
                call()

    def timed() -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 1e3 * (time.perf_counter() - wall), 1e3 * (time.process_time() - cpu)

    meter.start()
    first = timed()
    peak = meter.stop()
    if first[0] > 1e3 * budget:   # too slow to repeat (the dense encoder on CPU): the first call is the figure
        return first[0], first[1], peak, 0
    times = []
    spent = time.perf_counter()
    while len(times) < iters and (not times or time.perf_counter() - spent < budget):
        times.append(timed())
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times), peak, len(times)


def run_case(layer: str, setting: str, device: torch.device, args) -> dict:
    levels = QUICK_LEVELS if args.quick else FULL_LEVELS
    dtype = DTYPES[args.dtype]
    module, nq, call = build_case(layer, setting, levels, args, device, dtype)
    meter = CUDAPeakMemory(device) if device.type == "cuda" else CPUPeakMemory()
    fwd_ms, fwd_cpu, fwd_mem, fwd_n = measure(call, False, meter, device, args.iters, args.time_budget)
    module.zero_grad(set_to_none=True)
    train_ms, train_cpu, train_mem, train_n = measure(call, True, meter, device, args.iters, args.time_budget)
    return {"layer": layer, "setting": setting, "device": str(device), "batch": args.batch, "nq": nq,
            "s": sum(h * w for h, w in levels), "forward_ms": round(fwd_ms, 2), "train_ms": round(train_ms, 2),
            "forward_cpu_ms": round(fwd_cpu, 2), "train_cpu_ms": round(train_cpu, 2),
            "peak_mem_forward_mib": round(fwd_mem, 1), "peak_mem_train_mib": round(train_mem, 1),
            "timed_forward": fwd_n, "timed_train": train_n,
            "params": sum(p.numel() for p in module.parameters())}


def run_isolated(layer: str, setting: str, device: str, argv: list[str]) -> dict:
    cmd = [sys.executable, "-m", __spec__.name, *argv, "--case", f"{layer}:{setting}:{device}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess for {layer}/{setting} on {device} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_method(device: torch.device, isolated: bool) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated minus allocated before the call"
    how = "growth of getrusage(RUSAGE_SELF).ru_maxrss from after building module+inputs to the end of the call"
    return how + (", one fresh subprocess per setting" if isolated else
                  ", all settings in one process (a lower bound after the process's first peak)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:   # child: one setting on one device, one JSON line
        layer, setting, device = args.case.split(":", 2)
        print(json.dumps(run_case(layer, setting, torch.device(device), args)))
        return
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    for device in devices:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: CUDA is not available")
    isolate = not (args.no_isolate or args.quick)
    levels = QUICK_LEVELS if args.quick else FULL_LEVELS
    results = []
    for device in devices:
        dev = torch.device(device)
        for layer, setting in tqdm(CASES, desc=f"ms_deform_attn benchmark ({device})", leave=False):
            if dev.type == "cpu" and isolate:
                results.append(run_isolated(layer, setting, device, argv))
            else:
                results.append(run_case(layer, setting, dev, args))
    methods = {device: memory_method(torch.device(device), isolate) for device in devices}

    print(f"levels {levels} (S = {sum(h * w for h, w in levels)}), d = {args.d_model}, heads = {args.heads}, "
          f"points = {args.points}, batch = {args.batch}, {args.dtype}, torch threads {torch.get_num_threads()}")
    for device, how in methods.items():
        print(f"peak memory on {device}: {how}")
    print("ms: median wall time; cpu ms: process CPU time, all threads (robust to other load on a shared CPU)")
    header = f"{'device':7s} {'setting':8s} {'layer':10s} {'Nq':>6s} {'fwd ms':>9s} {'cpu ms':>9s} " \
             f"{'fwd+bwd ms':>10s} {'cpu ms':>9s} {'fwd MiB':>8s} {'fwd+bwd MiB':>11s} {'timed':>5s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['device']:7s} {r['setting']:8s} {r['layer']:10s} {r['nq']:6d} {r['forward_ms']:9.1f} "
              f"{r['forward_cpu_ms']:9.1f} {r['train_ms']:10.1f} {r['train_cpu_ms']:9.1f} "
              f"{r['peak_mem_forward_mib']:8.1f} {r['peak_mem_train_mib']:11.1f} "
              f"{r['timed_forward']:2d}/{r['timed_train']:<2d}")
    print(json.dumps({"benchmark": "ms_deform_attn", "quick": args.quick, "levels": levels,
                      "d_model": args.d_model, "heads": args.heads, "points": args.points, "dtype": args.dtype,
                      "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "memory_method": methods, "results": results}))


if __name__ == "__main__":  # run_isolated starts one setting per process with python -m
    main()
