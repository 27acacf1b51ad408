"""Predictions from an exported detector, without torch or detectron2: ``tools/predict.py --model model.onnx``.

    python tools/predict.py --model output/demo/cond.onnx --input datasets/demo/images/val \\
        --output output/demo/predictions_onnx [--runtime openvino] [--confidence 0.5]

The same outputs as the PyTorch path (``disco_detr/tooling/predict.py``, whose file listing, picture names and
COCO writer live here and are shared): ``<output>/<name>`` pictures with every detection of score >=
--confidence drawn (boxes drawn here with Pillow), ``<output>/predictions.json`` (COCO results: ``image_id``,
``category_id`` (the dataset's ids, from the model's metadata), ``bbox`` [x, y, w, h] in pixels of the
original image, ``score``, ``category``, ``file_name``) and ``<output>/images.json`` (COCO ``images`` and
``categories``). Class names come from the model's metadata. Images are read by
:func:`disco_detr_runtime.image_io.read_rgb_image` (the project's decoder: EXIF orientation, grey, palette,
16-bit and RGBA images as the PyTorch path reads them); a file that cannot be read is skipped with a message
naming it.

The resize: a graph with a fixed input size (``input_size`` ``HxW`` in the metadata) gets every image
resized to H x W (bilinear, as detectron2's ``T.Resize``); a ``--dynamic`` graph gets the fine-tuning
config's own test resize recorded at export (``test_resize``: the short side to ``min_size`` with the long
side at most ``max_size``, as ``T.ResizeShortestEdge``, or a ``square`` resize), so its detections equal the
PyTorch path's. A fixed-size graph equals the PyTorch path where the config's test resize gives H x W (the
square configs such as RT-DETR's, or images whose resize lands on the export size). Detections whose box
has no area are dropped, as detectron2's ``detector_postprocess`` drops them in the PyTorch path.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .image_io import IMAGE_EXTENSIONS, read_rgb_image
from .session import RUNTIMES, RuntimeDetector

__all__ = ["PredictionWriter", "draw_detections", "empty_result_hint", "list_inputs", "main", "output_name",
           "resize_image", "resized_shape"]


# ---- shared with the PyTorch path (disco_detr/tooling/predict.py) ---------------------------------------
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


def empty_result_hint(num_results: int, best_score: float | None, confidence: float) -> str:
    """The line that follows a summary with no detection: the highest score seen and the --confidence that
    would keep it, so that a weak model does not look like an empty one; "" when something was kept."""
    if num_results:
        return ""
    if best_score is None:
        return "The model returned no detection at all."
    return (f"No detection reached --confidence {confidence}; the highest score was {best_score:.3f} "
            f"(--confidence {np.floor(best_score * 100) / 100:.2f} keeps it).")


class PredictionWriter:
    """Collects one run's detections and writes the pictures, ``predictions.json`` and ``images.json``.

    ``add(path, image, boxes, scores, labels, draw)``: one image ((H, W, 3) uint8 RGB as displayed) and its
    detections (boxes (N, 4) xyxy in its pixels, scores (N,), labels (N,) contiguous indices); those with
    score >= ``confidence`` are written, and ``draw(image, keep)`` ((N,) bool mask of them) returns the
    picture. ``skip(path, error)`` records an unreadable file; ``finish()`` writes the JSON files and
    returns the summary lines.
    """

    def __init__(self, output: str, class_names: list[str], category_ids: list[int], confidence: float):
        self.output, self.class_names, self.category_ids = output, class_names, category_ids
        self.confidence = confidence
        self.results, self.images, self.skipped, self.used = [], [], [], set()
        self.best: float | None = None   # the highest score over all images, before the --confidence cut
        os.makedirs(output, exist_ok=True)

    def add(self, path: str, image: np.ndarray, boxes, scores, labels,
            draw: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        boxes, scores, labels = np.asarray(boxes, np.float64), np.asarray(scores, np.float64), np.asarray(labels)
        if len(scores):
            self.best = max(self.best if self.best is not None else -np.inf, float(scores.max()))
        keep = scores >= self.confidence
        image_id = len(self.images) + 1
        name = output_name(path, self.used)
        self.images.append({"id": image_id, "file_name": path, "height": image.shape[0], "width": image.shape[1],
                            "picture": name})
        for (x0, y0, x1, y1), score, label in zip(boxes[keep].tolist(), scores[keep].tolist(),
                                                  labels[keep].tolist()):
            self.results.append({"image_id": image_id, "file_name": path, "category_id": self.category_ids[label],
                                 "category": self.class_names[label], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                 "score": score})
        Image.fromarray(draw(image, keep)).save(os.path.join(self.output, name))

    def skip(self, path: str) -> None:
        self.skipped.append(path)

    def finish(self) -> list[str]:
        with open(os.path.join(self.output, "predictions.json"), "w") as f:
            json.dump(self.results, f)
        categories = [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names)]
        with open(os.path.join(self.output, "images.json"), "w") as f:
            json.dump({"images": self.images, "categories": categories, "annotations": []}, f, indent=1)
        lines = [f"{len(self.images)} images, {len(self.results)} detections with score >= {self.confidence} "
                 f"-> {self.output}/ (predictions.json, images.json, pictures)"
                 + (f"; skipped {len(self.skipped)} unreadable: {', '.join(self.skipped)}" if self.skipped else "")]
        hint = empty_result_hint(len(self.results), self.best, self.confidence)
        return lines + ([hint] if hint else [])


# ---- the runtime path ------------------------------------------------------------------------------------
def resized_shape(height: int, width: int, resize: dict) -> tuple[int, int]:
    """The (h, w) an image of ``height`` x ``width`` is resized to by a ``test_resize`` entry: ``{"square": s}``
    (s x s), or ``{"min_size": s, "max_size": m}`` (short side s, long side at most m, rounded half up: the
    arithmetic of detectron2's ``ResizeShortestEdge.get_output_shape``)."""
    if "square" in resize:
        return int(resize["square"]), int(resize["square"])
    size, max_size = float(resize["min_size"]), float(resize["max_size"])
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (3, height, width) float32 in [0, 255]: Pillow's bilinear resize, the one
    detectron2's ``ResizeTransform`` applies to uint8 images (the same pixels)."""
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)


def _colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class index (golden-angle hues)."""
    hue = (label * 0.618034) % 1.0
    r, g, b = (min(1.0, max(0.0, abs((hue * 6 + shift) % 6 - 3) - 1)) for shift in (0, 4, 2))
    return int(255 * r), int(255 * g), int(255 * b)


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 RGB with each detection (boxes (N, 4) xyxy in its pixels) drawn as a box and a
    "name score" caption; small images are scaled up (long side 480) so the captions stay legible."""
    scale = max(1.0, 480 / max(image.shape[:2]))
    picture = Image.fromarray(image)
    if scale > 1:
        picture = picture.resize((round(image.shape[1] * scale), round(image.shape[0] * scale)), Image.BILINEAR)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    width = max(1, round(picture.width / 300))
    for (x0, y0, x1, y1), score, label in zip(np.asarray(boxes) * scale, scores, labels):
        colour = _colour(int(label))
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{class_names[int(label)]} {100 * float(score):.0f}%"
        left, top, right, bottom = pen.textbbox((x0, y0), text, font=font)
        pen.rectangle([left, top, right + 2, bottom], fill=colour)
        pen.text((x0 + 1, y0), text, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an ONNX file written by tools/export_model.py")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    p.add_argument("--input", required=True, action="append",
                   help="an image file, a folder or a quoted glob pattern (repeat --input for more)")
    p.add_argument("--output", required=True, help="folder for the pictures and predictions.json")
    p.add_argument("--confidence", type=float, default=0.5, help="lowest score drawn and written (0 keeps all)")
    p.add_argument("--batch-size", type=int, default=4, help="images per run of a dynamic graph (same size only)")
    p.add_argument("--threads", type=int, default=None, help="the runtime's intra-op threads (default: its own)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    try:
        files = list_inputs(args.input)
        if not os.path.isfile(args.model):
            raise FileNotFoundError(f"--model {args.model!r} does not exist")
        detector = RuntimeDetector(args.model, args.runtime, threads=args.threads)
    except (ValueError, FileNotFoundError) as e:
        print(f"predict: {e}", file=sys.stderr)
        return 2
    class_names = detector.class_names
    if class_names is None:
        print(f"predict: {args.model} has no class_names in its metadata; export it with tools/export_model.py",
              file=sys.stderr)
        return 2
    category_ids = detector.category_ids or list(range(len(class_names)))
    fixed = detector.height is not None and detector.width is not None
    resize = detector.test_resize
    # a fixed batch is filled up to its size; a dynamic one takes up to --batch-size images of one size
    batch_limit = detector.batch_size or max(1, args.batch_size)
    writer = PredictionWriter(args.output, class_names, category_ids, args.confidence)

    def input_size(image: np.ndarray) -> tuple[int, int]:
        if fixed:
            return detector.height, detector.width
        return resized_shape(*image.shape[:2], resize) if resize else image.shape[:2]

    def run(batch):
        inputs = np.stack([resize_image(image, *size) for _, image, size in batch])
        orig = np.array([image.shape[:2] for _, image, _ in batch], dtype=np.int64)
        filler = (detector.batch_size or len(batch)) - len(batch)
        if filler:       # a fixed-batch graph: repeat the last image, drop its results
            inputs = np.concatenate([inputs, np.repeat(inputs[-1:], filler, 0)])
            orig = np.concatenate([orig, np.repeat(orig[-1:], filler, 0)])
        boxes, scores, labels = detector(inputs, orig)
        for i, (path, image, _) in enumerate(batch):
            b, s, lab = boxes[i], scores[i], labels[i]
            nonempty = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, s, lab = b[nonempty], s[nonempty], lab[nonempty]
            writer.add(path, image, b, s, lab,
                       lambda im, keep, b=b, s=s, lab=lab: draw_detections(im, b[keep], s[keep], lab[keep], class_names))
        progress.update(len(batch))

    with tqdm(total=len(files), desc="predict", unit="image") as progress:
        batch = []
        for path in files:
            try:
                image = read_rgb_image(path)
            except OSError as e:
                writer.skip(path)
                tqdm.write(f"predict: skipped {path}: {e}")
                progress.update(1)
                continue
            size = input_size(image)
            if batch and (len(batch) == batch_limit or batch[-1][2] != size):
                run(batch)
                batch = []
            batch.append((path, image, size))
        if batch:
            run(batch)
    for line in writer.finish():
        print(line)
    return 0
