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
fine-tunes on (``dataloader.train.dataset.names``). Config overrides (key=value) go last.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from disco_detr.data.image_io import IMAGE_EXTENSIONS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a fine-tuning LazyConfig (configs/finetune_*.py, configs/demo/*)")
    p.add_argument("--weights", default=None,
                   help="fine-tuned checkpoint, a path or a zoo:// name (default: <train.output_dir>/model_final.pth)")
    p.add_argument("--input", required=True, action="append",
                   help="an image file, a folder or a quoted glob pattern (repeat --input for more)")
    p.add_argument("--output", required=True, help="folder for the pictures and predictions.json")
    p.add_argument("--confidence", type=float, default=0.5, help="lowest score drawn and written (0 keeps all)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p.parse_args(argv)


def list_inputs(inputs: list[str]) -> list[str]:
    """Files named by ``inputs`` (a file, a folder's image files sorted, or a glob pattern), without repeats.
    Raises FileNotFoundError naming an input that matches nothing."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(f for f in glob.glob(item) if os.path.isfile(f))
        if not found:
            raise FileNotFoundError(f"--input {item!r}: no such file, no image in that folder, or no match")
        files += [f for f in found if f not in files]
    return files


def output_name(path: str, used: set[str]) -> str:
    """The picture's file name: the input's name (``.png`` unless JPEG / PNG), made unique with ``_<n>``."""
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower() if ext.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, n = stem + ext, 1
    while name in used:
        name, n = f"{stem}_{n}{ext}", n + 1
    used.add(name)
    return name


def draw(image: np.ndarray, instances, class_names: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 RGB with ``instances`` (boxes in its pixels) drawn by detectron2's Visualizer."""
    from detectron2.data import Metadata
    from detectron2.utils.visualizer import Visualizer

    vis = Visualizer(image, Metadata(thing_classes=class_names), scale=max(1.0, 480 / max(image.shape[:2])))
    return vis.draw_instance_predictions(instances).get_image()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from detectron2.config import instantiate
    from detectron2.data import transforms as T
    from PIL import Image

    from disco_detr.config import load_config
    from disco_detr.deploy import build_finetuned_detector, dataset_category_ids, dataset_class_names, read_image
    from disco_detr.engine import resolve_device
    from disco_detr.utils.progress import progress_bar

    try:
        cfg = load_config(args.config_file, args.opts)
        files = list_inputs(args.input)
        weights = args.weights or os.path.join(cfg.train.output_dir, "model_final.pth")
        device = resolve_device(args.device)
        detector = build_finetuned_detector(cfg, weights, device, args.config_file)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"predict: {e}", file=sys.stderr)
        return 2
    class_names = dataset_class_names(cfg, detector.num_classes)
    category_ids = dataset_category_ids(cfg, detector.num_classes)
    # the config's own test resize (the mapper's deterministic augmentation)
    mapper = instantiate(cfg.dataloader.test.mapper)
    resize = mapper.augmentation
    os.makedirs(args.output, exist_ok=True)

    results, images_meta, skipped, used = [], [], [], set()
    best = [None]                     # the highest score over all images, before the --confidence cut

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
            if len(inst):
                top = float(inst.scores.max())
                best[0] = top if best[0] is None else max(best[0], top)
            inst = inst[inst.scores >= args.confidence]
            image_id = len(images_meta) + 1
            name = output_name(path, used)
            images_meta.append({"id": image_id, "file_name": path, "height": image.shape[0],
                                "width": image.shape[1], "picture": name})
            for box, score, label in zip(inst.pred_boxes.tensor.tolist(), inst.scores.tolist(),
                                         inst.pred_classes.tolist()):
                x0, y0, x1, y1 = box
                results.append({"image_id": image_id, "file_name": path, "category_id": category_ids[label],
                                "category": class_names[label], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "score": score})
            Image.fromarray(draw(image, inst, class_names)).save(os.path.join(args.output, name))
        progress.update(len(batch))

    with progress_bar(total=len(files), desc="predict", unit="image") as progress:  # messages go above the bar
        batch = []
        for path in files:
            try:
                batch.append((path, read_image(path)))
            except OSError as e:
                skipped.append(path)
                tqdm.write(f"predict: skipped {path}: {e}")
                progress.update(1)
                continue
            if len(batch) == args.batch_size:
                run(batch)
                batch = []
        if batch:
            run(batch)

    with open(os.path.join(args.output, "predictions.json"), "w") as f:
        json.dump(results, f)
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, class_names)]
    with open(os.path.join(args.output, "images.json"), "w") as f:
        json.dump({"images": images_meta, "categories": categories, "annotations": []}, f, indent=1)
    print(f"{len(images_meta)} images, {len(results)} detections with score >= {args.confidence} "
          f"-> {args.output}/ (predictions.json, images.json, pictures)"
          + (f"; skipped {len(skipped)} unreadable: {', '.join(skipped)}" if skipped else ""))
    hint = empty_result_hint(len(results), best[0], args.confidence)
    if hint:
        print(hint)
    return 0


def empty_result_hint(num_results: int, best_score: float | None, confidence: float) -> str:
    """The line that follows a summary with no detection: the highest score seen and the --confidence that
    would keep it, so that a weak model does not look like an empty one; "" when something was kept."""
    if num_results:
        return ""
    if best_score is None:
        return "The model returned no detection at all."
    return (f"No detection reached --confidence {confidence}; the highest score was {best_score:.3f} "
            f"(--confidence {np.floor(best_score * 100) / 100:.2f} keeps it).")
