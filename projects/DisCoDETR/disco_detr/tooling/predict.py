"""Run a fine-tuned detector on your own images: pictures with the detections drawn, and one COCO results JSON.

    python tools/predict.py --config-file configs/demo/cond.py \\
        --weights output/demo/finetune_disco/model_final.pth \\
        --input datasets/demo/images/val --output output/demo/predictions [--confidence 0.5]
    python tools/predict.py --config-file configs/finetune_dino_coco.py --weights zoo://<name> \\
        --input "photos/*.jpg" --output out/ --device cuda --batch-size 8

--input is an image file, a folder (its image files, sorted; not recursive) or a glob pattern (repeatable). Any variant's
fine-tuning config works; images go through the config's test resize, in batches, on --device (default: CUDA
when available, else CPU). For each image ``<output>/<name>`` (the input's name, ``.png`` for formats other
than JPEG / PNG) shows every detection with score >= --confidence: box, class name and score (detectron2's
Visualizer). ``<output>/predictions.json`` holds the same detections in COCO results format (``image_id``,
``category_id`` (the dataset's ids), ``bbox`` [x, y, w, h] in pixels of the original image, ``score``, plus
``file_name``), and ``<output>/images.json`` the COCO ``images`` / ``categories`` they refer to, so that
``COCO("images.json").loadRes("predictions.json")`` reads them. EXIF-rotated, grey, palette, 16-bit and RGBA
images work (boxes refer to the image as displayed, after the EXIF rotation). A file that cannot be read is
skipped with a message naming it, and the run goes on. The class names come from the dataset the config
fine-tunes on (``dataloader.train.dataset.names``). Config overrides (key=value) go last; without --weights, a
``train.init_checkpoint=<file>`` override names the weights (as for ``lazyconfig_train_net.py --eval-only``),
else ``<train.output_dir>/model_final.pth``.

``--model model.onnx`` (an exported graph, ``--runtime onnxruntime|openvino``) runs the torch-free path
instead: :mod:`disco_detr_runtime.predict`, which also holds the file listing and the COCO writer both share.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from disco_detr_runtime.predict import PredictionWriter, empty_result_hint, list_inputs, output_name  # noqa: F401


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a fine-tuning LazyConfig (configs/finetune_*.py, configs/demo/*)")
    p.add_argument("--weights", default=None,
                   help="fine-tuned checkpoint, a path or a zoo:// name (default: a train.init_checkpoint=... override, else "
                        "<train.output_dir>/model_final.pth)")
    p.add_argument("--input", required=True, action="append",
                   help="an image file, a folder or a quoted glob pattern (repeat --input for more)")
    p.add_argument("--output", required=True, help="folder for the pictures and predictions.json")
    p.add_argument("--confidence", type=float, default=0.5, help="lowest score drawn and written (0 keeps all)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p.parse_args(argv)


def draw(image: np.ndarray, instances, class_names: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 RGB with ``instances`` (boxes in its pixels) drawn by detectron2's Visualizer."""
    from detectron2.data import Metadata
    from detectron2.utils.visualizer import Visualizer

    vis = Visualizer(image, Metadata(thing_classes=class_names), scale=max(1.0, 480 / max(image.shape[:2])))
    return vis.draw_instance_predictions(instances).get_image()


def weights_path(args, cfg) -> str:
    """--weights; else a ``train.init_checkpoint=...`` override among the command's config overrides (as
    ``lazyconfig_train_net.py --eval-only`` loads it; the config file's own ``init_checkpoint`` is the
    fine-tuning's starting point, not its result, and is not used); else ``<train.output_dir>/model_final.pth``."""
    if args.weights:
        return args.weights
    if any(opt.split("=", 1)[0] == "train.init_checkpoint" for opt in args.opts) and cfg.train.init_checkpoint:
        return cfg.train.init_checkpoint
    return os.path.join(cfg.train.output_dir, "model_final.pth")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--model" in argv or any(a.startswith("--model=") for a in argv):   # an exported graph: no torch needed
        from disco_detr_runtime.predict import main as runtime_main

        return runtime_main(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from detectron2.config import instantiate
    from detectron2.data import transforms as T

    from disco_detr.config import load_config
    from disco_detr.deploy import build_finetuned_detector, dataset_category_ids, dataset_class_names, read_image
    from disco_detr.engine import resolve_device
    from disco_detr.utils.progress import progress_bar

    try:
        cfg = load_config(args.config_file, args.opts)
        files = list_inputs(args.input)
        weights = weights_path(args, cfg)
        device = resolve_device(args.device)
        detector = build_finetuned_detector(cfg, weights, device, args.config_file)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"predict: {e}", file=sys.stderr)
        return 2
    class_names = dataset_class_names(cfg, detector.num_classes)
    writer = PredictionWriter(args.output, class_names, dataset_category_ids(cfg, detector.num_classes),
                              args.confidence)
    # the config's own test resize (the mapper's deterministic augmentation)
    resize = instantiate(cfg.dataloader.test.mapper).augmentation

    def run(batch):
        inputs = []
        for _, image in batch:
            aug = T.AugInput(image)
            resize(aug)
            inputs.append({"image": torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))),
                           "height": image.shape[0], "width": image.shape[1]})
        with torch.no_grad():
            outputs = detector(inputs)
        for (path, image), out in zip(batch, outputs):
            inst = out["instances"].to("cpu")
            writer.add(path, image, inst.pred_boxes.tensor.numpy(), inst.scores.numpy(), inst.pred_classes.numpy(),
                       lambda im, keep, inst=inst: draw(im, inst[torch.from_numpy(keep)], class_names))
        progress.update(len(batch))

    with progress_bar(total=len(files), desc="predict", unit="image") as progress:  # messages go above the bar
        batch = []
        for path in files:
            try:
                batch.append((path, read_image(path)))
            except OSError as e:
                writer.skip(path)
                tqdm.write(f"predict: skipped {path}: {e}")
                progress.update(1)
                continue
            if len(batch) == args.batch_size:
                run(batch)
                batch = []
        if batch:
            run(batch)
    for line in writer.finish():
        print(line)
    return 0
