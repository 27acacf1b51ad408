"""Figures of the paper's analysis (matplotlib, Agg backend: PNG files, no display needed).

Every function takes plain arrays and writes one PNG. Coordinates: images are (H, W, 3)
uint8 RGB; points and boxes are in pixels of that image (x right, y down), boxes xyxy.
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

__all__ = ["plot_convergence_stability", "plot_distance_curves", "plot_ap_vs_time", "plot_arrows",
           "plot_decoder_attention", "plot_encoder_attention", "plot_budget_study",
           "plot_label_efficiency"]


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_convergence_stability(runs: list[dict], path: str) -> str:
    """Figure 4 style. runs: dicts with "label", "trajectory" (T, Q, 2) normalised (x, y)
    reference points of Q queries (per image x query) at T recorded iterations, "iterations"
    (T,), "cs" (mean CS) and "per_query" (Q,) CS_n. Left: CS per run (bar = mean, dots = queries);
    then one panel per run with every query's path (circle = first record, cross = last)."""
    n = len(runs)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4.2), squeeze=False)
    ax = axes[0, 0]
    xs = np.arange(n)
    ax.bar(xs, [r["cs"] for r in runs], color="tab:blue", alpha=0.6, label="mean over queries (eq. 13)")
    rng = np.random.default_rng(0)
    for i, r in enumerate(runs):
        pq = np.asarray(r["per_query"]).ravel()
        ax.scatter(i + rng.uniform(-0.2, 0.2, len(pq)), pq, s=8, color="k", alpha=0.5,
                   label="single query" if i == 0 else None)
        ax.text(i, 0.03, f"CS = {r['cs']:.3f}", ha="center", va="bottom", fontweight="bold")
    ax.set_xticks(xs, [r["label"] for r in runs], rotation=15)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("convergence stability CS (1 = straight path)")
    ax.set_title("Convergence stability of reference points")
    ax.legend(loc="lower right", fontsize=8)
    for ax, r in zip(axes[0, 1:], runs):
        traj = np.asarray(r["trajectory"])
        colours = plt.cm.viridis(np.linspace(0, 1, traj.shape[1]))
        for q in range(traj.shape[1]):
            ax.plot(traj[:, q, 0], traj[:, q, 1], "-", color=colours[q], lw=0.8, alpha=0.8)
            ax.plot(traj[0, q, 0], traj[0, q, 1], "o", color=colours[q], ms=3)
            ax.plot(traj[-1, q, 0], traj[-1, q, 1], "x", color=colours[q], ms=4)
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)  # image coordinates: y down
        ax.set_aspect("equal")
        ax.set_xlabel("reference x (fraction of image width)")
        ax.set_ylabel("reference y (fraction of image height)")
        its = r["iterations"]
        ax.set_title(f"{r['label']}: CS = {r['cs']:.3f}\n{traj.shape[1]} queries, iterations {its[0]}..{its[-1]} "
                     f"({len(its)} records)", fontsize=9)
    return _save(fig, path)


def plot_distance_curves(curves: list[dict], path: str) -> str:
    """Figure 6. curves: dicts with "label", "iterations" (K,), "distance" (K,) mean matched
    query reference -> object centre distance in normalised image units."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for c in curves:
        ax.plot(c["iterations"], c["distance"], "o-", label=c["label"], ms=4)
    ax.set_xlabel("fine-tuning iteration")
    ax.set_ylabel("mean distance query reference -> matched object\n(fraction of image size)")
    ax.set_title("Average distance between queries and their matched objects")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_ap_vs_time(runs: list[dict], path: str, unit: str = "auto") -> str:
    """Figure 8. runs: dicts with "label", "seconds" (K,) training seconds at each evaluation,
    "ap" (K,) bbox AP, optional "offset_s" (pre-training seconds already spent, drawn as the
    curve's starting offset)."""
    top = max((float(np.max(r["seconds"])) for r in runs if len(r["seconds"])), default=1.0)
    if unit == "auto":
        unit = "h" if top > 7200 else ("min" if top > 120 else "s")
    div = {"h": 3600.0, "min": 60.0, "s": 1.0}[unit]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in runs:
        ax.plot(np.asarray(r["seconds"]) / div, r["ap"], "o-", ms=4, label=r["label"])
        if r.get("offset_s"):
            ax.axvline(r["offset_s"] / div, color=ax.lines[-1].get_color(), ls=":", lw=1)
    counted = any(r.get("offset_s") for r in runs)
    ax.set_xlabel(f"wall-clock training time ({unit})" + ("; dotted: end of pre-training" if counted else ""))
    ax.set_ylabel("bbox AP (COCO-style, %)")
    ax.set_title("Detection AP against training time")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_arrows(panels: list[dict], path: str) -> str:
    """Figure 5. panels: dicts with "title", "image" (H, W, 3) uint8, "references" (N, 2) pixels
    of every query's initial reference point, "boxes" (T, 4) xyxy pixels of the objects,
    "pairs" (K, 2) (query id, object id). Arrows go from each matched query's reference point
    to its object's centre; unmatched queries are grey dots."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, p in zip(axes[0], panels):
        ax.imshow(p["image"])
        boxes = np.asarray(p["boxes"]).reshape(-1, 4)
        colours = plt.cm.tab10(np.arange(max(len(boxes), 1)) % 10)
        for t, b in enumerate(boxes):
            ax.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, color=colours[t], lw=1.5))
        refs = np.asarray(p["references"])
        pairs = np.asarray(p["pairs"], dtype=int).reshape(-1, 2)
        matched = set(pairs[:, 0].tolist())
        others = [q for q in range(len(refs)) if q not in matched]
        ax.scatter(refs[others, 0], refs[others, 1], s=10, color="0.6", label="unmatched query reference")
        for q, t in pairs:
            cx, cy = (boxes[t, 0] + boxes[t, 2]) / 2, (boxes[t, 1] + boxes[t, 3]) / 2
            ax.annotate("", xy=(cx, cy), xytext=refs[q], arrowprops=dict(arrowstyle="->", color=colours[t], lw=1.3))
            ax.plot(*refs[q], "o", color=colours[t], ms=3)
        ax.set_title(p["title"], fontsize=9)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle("Matched queries: arrow from the query's initial reference point to its object's centre")
    return _save(fig, path)


def _overlay(ax, image, heat, title):
    ax.imshow(image)
    if heat is not None:
        heat = np.asarray(heat, dtype=np.float64)
        if heat.max() > 0:
            heat = heat / heat.max()
        ax.imshow(heat, cmap="jet", alpha=0.5, extent=(0, image.shape[1], image.shape[0], 0), vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_decoder_attention(image, detections: list[dict], path: str, title: str = "") -> str:
    """Figure 3. image (H, W, 3) uint8; detections: dicts with "box" (4,) xyxy pixels, "label"
    (text), "score", "query" (id) and "attention" (H, W) the last decoder layer's cross-attention
    of that query (mean over heads; any scale, normalised to its maximum here)."""
    n = len(detections)
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 4), squeeze=False)
    _overlay(axes[0, 0], image, None, title or "detections")
    for d in detections:
        b = d["box"]
        axes[0, 0].add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, color="lime", lw=1.5))
        axes[0, 0].text(b[0], b[1], f"q{d['query']} {d['label']} {d['score']:.2f}", color="k", fontsize=7,
                        bbox=dict(facecolor="lime", alpha=0.7, pad=1))
    for ax, d in zip(axes[0, 1:], detections):
        _overlay(ax, image, d["attention"], f"query {d['query']} ({d['label']}, {d['score']:.2f}):\n"
                                            "last decoder layer cross-attention")
        b = d["box"]
        ax.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, color="white", lw=1.2))
    fig.suptitle("Detections and where their queries attend (red = most attention)")
    return _save(fig, path)


def plot_encoder_attention(image, maps: list, path: str, title: str = "") -> str:
    """Figure 7. image (H, W, 3) uint8; maps: per encoder layer (H, W), the attention each image
    location receives, averaged over heads and over all query locations."""
    n = len(maps)
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 4), squeeze=False)
    _overlay(axes[0, 0], image, None, title or "input")
    for i, (ax, m) in enumerate(zip(axes[0, 1:], maps)):
        _overlay(ax, image, m, f"encoder layer {i + 1}: attention received")
    fig.suptitle("Encoder attention heat maps (mean over heads and queries; red = most attended)")
    return _save(fig, path)


def _plot_mean_band(x, results: dict, path: str, *, repeats: str, xlabel: str, ylabel: str, title: str,
                    log_x: bool = False, tick_format: str = "{:g}") -> str:
    """results: label -> (len(x), repeats) array (NaN = missing), or (1, repeats) for a flat band; per label a
    mean line, a +- one (population, ddof=0) standard deviation band and every repeat as a dot."""
    x = np.asarray(x, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, values in results.items():
        v = np.asarray(values, dtype=float)
        if v.shape[0] == 1:
            v = np.repeat(v, len(x), 0)
        mean, std = np.nanmean(v, 1), np.nanstd(v, 1)
        line, = ax.plot(x, mean, "o-", label=f"{label} (mean +- std, {v.shape[1]} {repeats})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        for j in range(v.shape[1]):
            ax.scatter(x, v[:, j], s=10, color=line.get_color(), alpha=0.6)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(x, [tick_format.format(t) for t in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_budget_study(budgets, results: dict, path: str, metric: str = "AP") -> str:
    """Fine-tuning AP against pre-training budget. results: start label -> (len(budgets), seeds)
    array of the metric (NaN = missing); mean line with +- one (population, ddof=0) standard deviation band and the
    single seeds as dots. A start without pre-training may be given as (1, seeds): a flat band."""
    return _plot_mean_band(budgets, results, path, repeats="seeds", xlabel="pre-training budget (iterations)",
                           ylabel=f"fine-tuning {metric} (%)",
                           title=f"Does pre-training help? Fine-tuning {metric} against pre-training budget")


def plot_label_efficiency(percents, results: dict, path: str, metric: str = "AP") -> str:
    """Fine-tuning AP against the labelled fraction (x: percent of the training set, log scale). results: start
    label -> (len(percents), folds) array of the metric (NaN = missing); one line per start (mean), a +- one
    (population) standard deviation band over folds, and every fold as a dot."""
    return _plot_mean_band(percents, results, path, repeats="folds", log_x=True, tick_format="{:g} %",
                           xlabel="labelled images (% of the training set)", ylabel=f"fine-tuning {metric} (%)",
                           title=f"Label efficiency: fine-tuning {metric} against the labelled fraction")
