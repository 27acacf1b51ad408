"""Export a fine-tuned detector's inference graph to ONNX, and check it against PyTorch with onnxruntime.

    python tools/export_model.py --config-file configs/demo/cond.py \\
        --weights output/demo/finetune_disco/model_final.pth --output output/demo/cond.onnx
    python tools/export_model.py --config-file configs/finetune_rtdetr_coco.py --weights model_final.pth \\
        --output rtdetr_640.onnx --height 640 --width 640
    python tools/export_model.py ... --dynamic        # any H x W (Conditional DETR and DAB-DETR only)
    python tools/export_model.py ... --sampling gather  # deformable attention without GridSample (TensorRT)

Every variant exports (Conditional, Deformable SS / MS, DAB, DINO, RT-DETR); inputs ``images`` (B, 3, H, W)
float32 RGB in [0, 255] resized to H x W and ``orig_sizes`` (B, 2) int64 (height, width) of the originals;
outputs ``boxes`` (B, K, 4) xyxy pixels of the originals, ``scores`` (B, K), ``labels`` (B, K) int64: the
detector's own top-k (see ``disco_detr/deploy.py`` and docs/deployment.md). The class names of the dataset
the config fine-tunes on are stored in the model's metadata (``class_names``, JSON).

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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a fine-tuning LazyConfig (configs/finetune_*.py, configs/demo/*)")
    p.add_argument("--weights", required=True, help="fine-tuned checkpoint: a path or a zoo:// name")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--height", type=int, default=None, help="input height (default: the config's test size)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the config's test size)")
    p.add_argument("--dynamic", action="store_true", help="free height and width (Conditional DETR, DAB-DETR)")
    p.add_argument("--batch-size", type=int, default=1, help="the graph's fixed batch size")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--sampling", choices=("grid_sample", "gather"), default="grid_sample",
                   help="deformable attention's bilinear sampling in the graph: ONNX GridSample, or gathers and corner "
                        "weights (no GridSample; pick it for TensorRT, see docs/deployment.md)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest accepted |difference| of scores, and of boxes relative to the image size")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p.parse_args(argv)


def default_size(cfg) -> tuple[int, int]:
    """The config's test resize as a square: the RT-DETR square size or the test mapper's short side."""
    mapper = cfg.dataloader.test.mapper
    square = mapper.get("square_sizes")
    side = square[0] if square else mapper.get("min_sizes", (800,))[0]
    return int(side), int(side)


def check_parity(detector, path: str, height: int, width: int, batch_size: int, dynamic: bool,
                 tolerance: float) -> dict:
    """Run the exported graph and the PyTorch model (``DETRDetector.forward`` with the original sizes) on
    random images; return the max abs differences (boxes as a fraction of the image size)."""
    from disco_detr.deploy import OnnxDetector

    session = OnnxDetector(path)
    gen = torch.Generator().manual_seed(0)
    sizes = [(height, width)] + ([(height + 32, max(width - 32, 32))] if dynamic else [])
    report = {}
    for h, w in sizes:
        images = torch.randint(0, 256, (batch_size, 3, h, w), generator=gen).float()
        orig = np.array([[2 * h, 3 * w]] * batch_size, dtype=np.int64)   # boxes mapped to a larger original
        boxes, scores, labels = session(images.numpy(), orig)
        with torch.no_grad():
            outputs = detector([{"image": im, "height": int(o[0]), "width": int(o[1])}
                                for im, o in zip(images.to(detector.device), orig)])
        box_err = score_err = 0.0
        labels_equal = True
        for i, out in enumerate(outputs):
            inst = out["instances"].to("cpu")
            nonempty = (boxes[i, :, 2] > boxes[i, :, 0]) & (boxes[i, :, 3] > boxes[i, :, 1])
            scale = np.array([orig[i, 1], orig[i, 0]] * 2, dtype=np.float64)
            b = boxes[i][nonempty]
            if len(b) != len(inst):
                raise RuntimeError(f"{path}: onnxruntime gives {len(b)} non-empty boxes, PyTorch {len(inst)}")
            box_err = max(box_err, float(np.abs((b - inst.pred_boxes.tensor.numpy()) / scale).max(initial=0)))
            score_err = max(score_err, float(np.abs(scores[i][nonempty] - inst.scores.numpy()).max(initial=0)))
            labels_equal &= bool((labels[i][nonempty] == inst.pred_classes.numpy()).all())
        report[f"{h}x{w}"] = {"boxes": box_err, "scores": score_err, "labels_equal": labels_equal}
        if box_err > tolerance or score_err > tolerance or not labels_equal:
            raise RuntimeError(f"{path}: onnxruntime and PyTorch differ at {h}x{w}: {report[f'{h}x{w}']} "
                               f"(tolerance {tolerance})")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from disco_detr.config import load_config
    from disco_detr.deploy import build_finetuned_detector, dataset_class_names, export_onnx

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
        export_onnx(detector, args.output, height, width, batch_size=args.batch_size, dynamic=args.dynamic,
                    opset=args.opset, sampling=args.sampling, metadata={"class_names": json.dumps(class_names),
                                                "config_file": args.config_file, "weights": args.weights})
    except ValueError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({type(detector).__name__}, input {'H x W' if args.dynamic else f'{height}x{width}'}, "
          f"batch {args.batch_size}, {len(class_names)} classes) in {time.perf_counter() - start:.1f} s")
    if not args.no_check:
        report = check_parity(detector, args.output, height, width, args.batch_size, args.dynamic, args.tolerance)
        for size, r in report.items():
            print(f"onnxruntime vs PyTorch at {size}: max |boxes| {r['boxes']:.2e} of the image size, "
                  f"max |scores| {r['scores']:.2e}, labels equal: {r['labels_equal']}")
    return 0
