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

# the parity check lives in disco_detr/deploy.py (shared with benchmark_onnx); named here for this tool's users
from disco_detr.deploy import (  # noqa: F401
    FP32_TOLERANCE,
    HALF_TOLERANCE,
    check_parity,
    drop_outputs,
    match_detections,
)


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
