"""Export a fine-tuned detector's inference graph to ONNX, and check it against PyTorch with onnxruntime.

    python tools/export_model.py --config-file configs/demo/cond.py \\
        --weights output/demo/finetune_disco/model_final.pth --output output/demo/cond.onnx
    python tools/export_model.py --config-file configs/finetune_rtdetr_coco.py --weights model_final.pth \\
        --output rtdetr_640.onnx --height 640 --width 640
    python tools/export_model.py ... --dynamic        # any batch size and H x W (every variant)
    python tools/export_model.py ... --sampling gather  # deformable attention without GridSample (TensorRT)
    python tools/export_model.py ... --half             # fp16 (disco_detr/onnx_half.py; checked against fp32 PyTorch)

Every variant exports (Conditional, Deformable SS / MS, DAB, DINO, RT-DETR); inputs ``images`` (B, 3, H, W)
float32 RGB in [0, 255] resized to H x W and ``orig_sizes`` (B, 2) int64 (height, width) of the originals;
outputs ``boxes`` (B, K, 4) xyxy pixels of the originals, ``scores`` (B, K), ``labels`` (B, K) int64: the
detector's own top-k (see ``disco_detr/deploy.py`` and docs/deployment.md). The class names of the dataset
the config fine-tunes on are stored in the model's metadata (``class_names``, JSON), with the dataset's category
ids (``category_ids``) and the config's test resize (``test_resize``, JSON; see ``disco_detr_runtime/predict.py``),
which ``tools/predict.py --model`` reads.

The default size is the config's test size (the test mapper's short side, square); without --no-check the
exported graph is run by onnxruntime on random images and compared with the PyTorch model (max abs
differences printed; an error when they exceed --tolerance). Needs the ``export`` extra (onnx, onnxruntime).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np
import torch

#: the parity check's default tolerance of an fp32 graph, and of an fp16 one (against the fp32 PyTorch model)
FP32_TOLERANCE, HALF_TOLERANCE = 1e-3, 2e-2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a fine-tuning LazyConfig (configs/finetune_*.py, configs/demo/*)")
    p.add_argument("--weights", required=True, help="fine-tuned checkpoint: a path or a zoo:// name")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--height", type=int, default=None, help="input height (default: the config's test size)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the config's test size)")
    p.add_argument("--dynamic", action="store_true", help="free batch size, height and width (every variant)")
    p.add_argument("--batch-size", type=int, default=1, help="the graph's fixed batch size (with --dynamic, the example's)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--sampling", choices=("grid_sample", "gather"), default="grid_sample",
                   help="deformable attention's bilinear sampling in the graph: ONNX GridSample, or gathers and corner "
                        "weights (no GridSample; pick it for TensorRT, see docs/deployment.md)")
    p.add_argument("--half", action="store_true",
                   help="fp16 weights and activations (sampling locations, box arithmetic, softmax and top-k in fp32; "
                        "grid_sample only; errors per variant in docs/deployment.md)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest accepted |difference| of logits and scores, and of boxes relative to the image size "
                        f"(default {FP32_TOLERANCE:g}, with --half {HALF_TOLERANCE:g})")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p.parse_args(argv)


def default_size(cfg) -> tuple[int, int]:
    """The config's test resize as a square: the RT-DETR square size or the test mapper's short side."""
    resize = config_test_resize(cfg)
    side = resize.get("square", resize.get("min_size"))
    return side, side


def config_test_resize(cfg) -> dict:
    """The config's test resize as the ``test_resize`` metadata entry that ``tools/predict.py --model`` applies
    to a dynamic graph's images: ``{"square": s}`` (RT-DETR's s x s) or ``{"min_size": s, "max_size": m}``."""
    mapper = cfg.dataloader.test.mapper
    square = mapper.get("square_sizes")
    if square:
        return {"square": int(square[0])}
    return {"min_size": int(mapper.get("min_sizes", (800,))[0]), "max_size": int(mapper.get("max_size", 1333))}


def match_detections(got, want, tolerance: float, runtime: str = "onnxruntime") -> tuple[float, float, int]:
    """Pair one image's top-k detections of two runs as sets, within near-tied scores.

    got, want: (boxes (K, 4) as fractions of the image size, scores (K,), labels (K,)) numpy arrays. Each
    detection is paired with one of the other run of the same label whose score and box are within
    ``tolerance`` (closest pairs first). A detection left without a partner is accepted only at the top-k
    boundary: its score within ``tolerance`` of the lowest score kept, where float rounding may swap near-tied
    (query, class) pairs in and out of the top-k. Returns (max |box| difference, max |score| difference over
    the pairs, number of detections left unpaired); raises RuntimeError on any other unpaired detection.
    """
    (gb, gs, gl), (wb, ws, wl) = got, want
    dist = np.maximum(np.abs(gb[:, None] - wb[None]).max(-1, initial=0), np.abs(gs[:, None] - ws[None]))
    dist[(gl[:, None] != wl[None]) | ~(dist <= tolerance)] = np.inf                  # (Kg, Kw); NaN never pairs
    paired_g, paired_w = np.zeros(len(gs), bool), np.zeros(len(ws), bool)
    box_err = score_err = 0.0
    for i, j in zip(*np.unravel_index(np.argsort(dist, axis=None), dist.shape)):
        if not np.isfinite(dist[i, j]):
            break
        if paired_g[i] or paired_w[j]:
            continue
        paired_g[i] = paired_w[j] = True
        box_err = max(box_err, float(np.abs(gb[i] - wb[j]).max()))
        score_err = max(score_err, float(abs(gs[i] - ws[j])))
    boundary = max(gs.min(initial=np.inf), ws.min(initial=np.inf)) + tolerance
    for name, scores, labels, paired in ((runtime, gs, gl, paired_g), ("PyTorch", ws, wl, paired_w)):
        lone = ~paired & ~(scores <= boundary)
        if lone.any():
            k = int(np.flatnonzero(lone)[0])
            raise RuntimeError(f"the {name} detection of score {scores[k]:.6g} and label {labels[k]} has no "
                               f"counterpart within tolerance {tolerance} (and is above the top-k boundary)")
    return box_err, score_err, int((~paired_g).sum() + (~paired_w).sum())


def check_parity(detector, path: str, sizes, tolerance: float, runtime: str = "onnxruntime") -> dict:
    """Run the exported graph (exported with ``per_query_outputs=True``) by ``runtime`` ("onnxruntime" or
    "openvino") and the PyTorch model on random images.

    Two comparisons, so that near-tied scores (a barely trained detector's top-k scores lie within 1e-5 of one
    another, and float rounding reorders them) do not fail a correct graph:

    * per query index, before the top-k: the graph's class logits and normalised boxes against
      :class:`~disco_detr.deploy.ExportableDetector` run in PyTorch (max abs differences);
    * the top-k detections against ``DETRDetector.forward`` (with the original sizes), as sets paired within
      tied scores (:func:`match_detections`; boxes as fractions of the original image size).

    sizes: ``[(H, W, B), ...]`` input sizes and batch sizes to run (random images; the boxes are mapped to
    originals of twice the height and three times the width). Returns, per size ``"HxW, batch B"``, the max abs
    differences and the number of detections swapped at tied scores;
    raises RuntimeError when a difference exceeds ``tolerance``.
    """
    from disco_detr.deploy import OUTPUT_NAMES, PER_QUERY_OUTPUT_NAMES, ExportableDetector
    from disco_detr_runtime import RuntimeDetector

    session = RuntimeDetector(path, runtime)
    wrapper = ExportableDetector(detector, per_query_outputs=True).eval()
    gen = torch.Generator().manual_seed(0)
    report = {}
    for h, w, batch_size in sizes:
        images = torch.randint(0, 256, (batch_size, 3, h, w), generator=gen).float()
        orig = np.array([[2 * h, 3 * w]] * batch_size, dtype=np.int64)   # boxes mapped to a larger original
        boxes, scores, labels, query_logits, query_boxes = session.run(images.numpy(), orig,
                                                                       OUTPUT_NAMES + PER_QUERY_OUTPUT_NAMES)
        with torch.no_grad():
            want_logits, want_boxes = (t.cpu().numpy() for t in wrapper(images.to(detector.device),
                                                                         torch.from_numpy(orig).to(detector.device))[3:])
            outputs = detector([{"image": im, "height": int(o[0]), "width": int(o[1])}
                                for im, o in zip(images.to(detector.device), orig)])
        r = {"query_logits": float(np.abs(query_logits - want_logits).max()),
             "query_boxes": float(np.abs(query_boxes - want_boxes).max()), "boxes": 0.0, "scores": 0.0, "swapped": 0}
        report[f"{h}x{w}, batch {batch_size}"] = r
        if not (r["query_logits"] <= tolerance and r["query_boxes"] <= tolerance):
            raise RuntimeError(f"{path}: {runtime} and PyTorch differ per query at {h}x{w}: {r} (tolerance {tolerance})")
        for i, out in enumerate(outputs):
            inst = out["instances"].to("cpu")
            nonempty = (boxes[i, :, 2] > boxes[i, :, 0]) & (boxes[i, :, 3] > boxes[i, :, 1])
            scale = np.array([orig[i, 1], orig[i, 0]] * 2, dtype=np.float64)
            try:
                box_err, score_err, swapped = match_detections(
                    (boxes[i][nonempty] / scale, scores[i][nonempty], labels[i][nonempty]),
                    (inst.pred_boxes.tensor.numpy() / scale, inst.scores.numpy(), inst.pred_classes.numpy()), tolerance,
                    runtime)
            except RuntimeError as e:
                raise RuntimeError(f"{path}: {runtime} and PyTorch differ in the top-k at {h}x{w}, image {i}: {e}") from None
            r.update(boxes=max(r["boxes"], box_err), scores=max(r["scores"], score_err), swapped=r["swapped"] + swapped)
    return report


def drop_outputs(path: str, names) -> None:
    """Remove the graph outputs ``names`` from the ONNX file ``path``, with the nodes and initializers that only
    they used (the metadata stays)."""
    import onnx

    model = onnx.load(path)
    graph = model.graph
    kept = [o for o in graph.output if o.name not in set(names)]
    del graph.output[:]
    graph.output.extend(kept)
    needed = {o.name for o in kept}
    nodes = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
            needed.update(n for a in node.attribute for g in [a.g, *a.graphs] for sub in g.node for n in sub.input)
    del graph.node[:]
    graph.node.extend(reversed(nodes))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from disco_detr.config import load_config
    from disco_detr.deploy import build_finetuned_detector, dataset_category_ids, dataset_class_names, export_onnx

    try:
        cfg = load_config(args.config_file, args.opts)
        detector = build_finetuned_detector(cfg, args.weights, "cpu", args.config_file)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    height, width = default_size(cfg)
    height, width = args.height or height, args.width or width
    class_names = dataset_class_names(cfg, detector.num_classes)
    start = time.perf_counter()
    try:
        metadata = {"class_names": json.dumps(class_names), "config_file": args.config_file, "weights": args.weights,
                    "category_ids": json.dumps(dataset_category_ids(cfg, detector.num_classes)),
                    "test_resize": json.dumps(config_test_resize(cfg))}
        export_onnx(detector, args.output, height, width, batch_size=args.batch_size, dynamic=args.dynamic,
                    opset=args.opset, sampling=args.sampling, per_query_outputs=not args.no_check, metadata=metadata,
                    half=args.half)
    except ValueError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    shape = ("any batch and size" if args.dynamic else f"{height}x{width}, batch {args.batch_size}") + \
        (", fp16" if args.half else "")
    print(f"wrote {args.output} ({type(detector).__name__}, input {shape}, {len(class_names)} classes) "
          f"in {time.perf_counter() - start:.1f} s")
    if not args.no_check:
        from disco_detr.deploy import PER_QUERY_OUTPUT_NAMES

        try:
            sizes = [(height, width, args.batch_size)]
            if args.dynamic:   # another size and batch through the same graph
                sizes.append((height + 32, max(width - 32, 32), args.batch_size + 2))
            tolerance = args.tolerance or (HALF_TOLERANCE if args.half else FP32_TOLERANCE)
            report = check_parity(detector, args.output, sizes, tolerance)
        finally:   # the written graph has only the documented outputs
            drop_outputs(args.output, PER_QUERY_OUTPUT_NAMES)
        for size, r in report.items():
            print(f"onnxruntime vs PyTorch at {size}: per query max |logits| {r['query_logits']:.2e}, max |boxes| "
                  f"{r['query_boxes']:.2e}; top-k max |boxes| {r['boxes']:.2e} of the image size, max |scores| "
                  f"{r['scores']:.2e}, labels equal, {r['swapped']} detections swapped at tied scores")
    return 0
