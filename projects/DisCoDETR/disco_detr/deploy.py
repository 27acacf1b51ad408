"""From a fine-tuned checkpoint to a deployed detector: what ``tools/predict.py``, ``tools/export_model.py``
and ``tools/benchmarks/benchmark_onnx.py`` share.

* :func:`build_finetuned_detector`: a config's detector with a fine-tuned checkpoint (a local path or a
  ``zoo://`` name, loaded by :class:`~disco_detr.checkpoint.DisCoCheckpointer`); a pre-training checkpoint,
  or one that leaves detector weights uninitialised, is refused with a message naming the file.
* :func:`dataset_class_names`: the class names of the dataset the config fine-tunes on.
* ``read_image``: the project's one image reader, :func:`disco_detr.data.image_io.read_rgb_image` (any
  image file -> (H, W, 3) uint8 RGB, the pixels training and the proposal tool see).
* :class:`ExportableDetector` / :func:`export_onnx`: the inference graph of a detector as ONNX, and
  :class:`OnnxDetector` to run it with onnxruntime;
* :func:`check_parity` / :func:`match_detections`: an exported graph against PyTorch (per query, and the
  top-k as sets paired within tied scores), :func:`drop_outputs` to remove the check's extra outputs.

The ONNX graph
--------------
Inputs:

* ``images``: (B, 3, H, W) float32, RGB in [0, 255], already resized to the export size H x W (the graph
  normalises with the detector's ``pixel_mean`` / ``pixel_std``; there is no padding: every image of the
  batch fills the whole H x W);
* ``orig_sizes``: (B, 2) int64, ``(height, width)`` in pixels of each image before it was resized; boxes are
  returned in these pixels (pass ``(H, W)`` for pixels of the input tensor).

Outputs (K = ``min(num_detections, num_queries * num_classes)``, the detector's own top-k):

* ``boxes``: (B, K, 4) float32, ``(x0, y0, x1, y1)`` in pixels of the original image, clipped to it;
* ``scores``: (B, K) float32, sigmoid class probabilities, highest first;
* ``labels``: (B, K) int64, contiguous class indices 0..C-1 (the order of the metadata ``class_names``).

These are exactly the detector's inference top-k over (query, class) pairs (``DETRDetector.inference``);
unlike detectron2's ``detector_postprocess`` nothing is dropped, so zero-area boxes (rare) stay in the output.
The graph is the inference path only: no denoising queries, no criterion, no encoder-stage outputs.
The deformable attention is exported as ONNX ``GridSample`` (``sampling="grid_sample"``, opset >= 16) or, with
``sampling="gather"``, as index gathers and corner weights without ``GridSample`` (for TensorRT; docs/deployment.md).

Exporter: the TorchScript tracer, ``torch.onnx.export(..., dynamo=False)``; why not the dynamo exporter:
``docs/deployment.md``. ``dynamic=True`` frees B, H and W for every variant: while tracing, the detectors read
their level sizes from the graph (``torch.jit.is_tracing()`` branches in ``flatten_levels`` and
``ms_deform_attn_checks.level_sizes``) and an unpadded batch skips the per-image mask loop.
"""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.structures import ImageList
from torch import Tensor, nn

from disco_detr_runtime import RuntimeDetector
from disco_detr_runtime.predict import resize_image
from disco_detr_runtime.session import INPUT_NAMES, OUTPUT_NAMES

from .checkpoint import DisCoCheckpointer
from .data.image_io import read_rgb_image as read_image  # the one reader, under deploy's public name
from .engine.num_classes import resolve_num_classes
from .modeling.detectors.base import DETRDetector
from .modeling.layers.ms_deform_attn import MS_DEFORM_ATTN_SAMPLINGS, ms_deform_attn_sampling
from .modeling.pretrain.base import DETECTOR_PREFIX

__all__ = ["ExportableDetector", "FinetunedCheckpointer", "OnnxDetector", "build_finetuned_detector", "check_parity",
           "drop_outputs", "match_detections", "FP32_TOLERANCE", "HALF_TOLERANCE",
           "dataset_category_ids", "dataset_class_names", "export_onnx", "read_image", "resize_for_onnx",
           "INPUT_NAMES", "OUTPUT_NAMES", "PER_QUERY_OUTPUT_NAMES"]

logger = logging.getLogger(__name__)

#: the extra outputs of a graph exported with ``per_query_outputs=True`` (for parity checks): the last decoder
#: layer's class logits (B, Q, C) and boxes (B, Q, 4) normalised cxcywh, per query index, before the top-k
PER_QUERY_OUTPUT_NAMES = ("query_logits", "query_boxes")
#: ONNX opset of the export (GridSample needs >= 16)
DEFAULT_OPSET = 17
#: the parity check's default tolerance of an fp32 graph, and of an fp16 one (against the fp32 PyTorch model)
FP32_TOLERANCE, HALF_TOLERANCE = 1e-3, 2e-2


# ---- checkpoints ---------------------------------------------------------------------------------------
class FinetunedCheckpointer(DisCoCheckpointer):
    """:class:`DisCoCheckpointer` for deployment: only a fine-tuned detector's own weights load.

    A DisCo / Siamese DETR pre-training checkpoint (its keys start with ``detector.``, its class head is
    object / no-object and the pre-training heads come with it) would be silently *transferred* by the
    training checkpointer, leaving a freshly initialised class head; here it is refused. So is any
    checkpoint that leaves some detector weight uninitialised (e.g. backbone weights alone) or whose tensors
    have other shapes than the detector's (another config's checkpoint).
    """

    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        model_state = self.model.state_dict()
        if any(k.startswith(DETECTOR_PREFIX) for k in state) and not any(k.startswith(DETECTOR_PREFIX) for k in model_state):
            pretrain_only = sorted({k.split(".")[0] for k in state if not k.startswith(DETECTOR_PREFIX)})
            raise ValueError(
                f"{self._source!r} is a pre-training checkpoint (its keys are 'detector.*'"
                + (f", with the pre-training modules {', '.join(pretrain_only)}" if pretrain_only else "")
                + "): its class head only tells object from background. Fine-tune it first "
                "(tools/lazyconfig_train_net.py --config-file configs/finetune_<variant>_<dataset>.py "
                "train.init_checkpoint=<this file>), then use the fine-tuning run's model_final.pth.")
        missing = sorted(k for k in model_state if k not in state)
        if missing:
            raise ValueError(
                f"{self._source!r} lacks {len(missing)} of the detector's {len(model_state)} weights (e.g. "
                f"{', '.join(missing[:3])}): it is not a fine-tuned checkpoint of this config's detector, and "
                "the missing weights would stay random.")
        mismatched = [f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
                      for k, v in model_state.items() if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
        if mismatched:
            raise ValueError(f"{self._source!r} does not fit this config's detector ({len(mismatched)} shapes differ, e.g. "
                             f"{mismatched[0]}): was it fine-tuned with another config?")
        return super()._load_model(checkpoint)


def build_finetuned_detector(cfg, weights: str, device: str | torch.device = "cpu",
                             config_file: str = "the config") -> DETRDetector:
    """``instantiate(cfg.model)`` in eval mode with the fine-tuned ``weights`` (path or ``zoo://`` name).

    Raises ``ValueError`` naming ``config_file`` when the config builds no DETR detector (e.g. a pre-training
    config), and naming ``weights`` when it is a pre-training checkpoint or lacks detector weights;
    ``FileNotFoundError`` when the file does not exist.
    """
    resolve_num_classes(cfg)  # model.num_classes = None: the training dataset's count, as in training
    model = instantiate(cfg.model)
    if not isinstance(model, DETRDetector):
        raise ValueError(f"{config_file} builds a {type(model).__name__}, not a fine-tuning DETR detector; "
                         "pass a fine-tuning config (configs/finetune_*.py or configs/demo/<variant>.py)")
    if not weights:
        raise ValueError("no checkpoint given (--weights)")
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"checkpoint {weights!r} does not exist")
    allow_pickle = bool(cfg.train.get("checkpoint_allow_pickle", False)) if "train" in cfg else False
    FinetunedCheckpointer(model, "", allow_pickle=allow_pickle).load(weights)
    return model.to(device).eval()


# ---- class names ---------------------------------------------------------------------------------------
def _dataset_name(cfg) -> str:
    for split in ("train", "test"):
        try:
            names = cfg.dataloader[split].dataset.names
        except (AttributeError, KeyError):
            continue
        if names:
            return names if isinstance(names, str) else list(names)[0]
    raise ValueError("the config names no dataset (dataloader.train.dataset.names)")


def _metadata(cfg):
    name = _dataset_name(cfg)
    meta = MetadataCatalog.get(name)
    if not meta.get("thing_classes"):
        # a COCO-json dataset records its class names when its json is read
        from detectron2.data import DatasetCatalog

        if name in DatasetCatalog.list():
            try:
                DatasetCatalog.get(name)
            except Exception as e:  # the dataset's files are not on this machine
                logger.warning("Cannot read dataset %r for its class names (%s)", name, e)
        meta = MetadataCatalog.get(name)
    return name, meta


def dataset_class_names(cfg, num_classes: int) -> list[str]:
    """The ``thing_classes`` of the dataset the config fine-tunes on (``dataloader.train.dataset.names``,
    its first name), as many as the detector has classes; ``class_<i>`` names, with a warning, when the
    dataset cannot be found. Raises ``ValueError`` when their number differs from ``num_classes``."""
    name, meta = _metadata(cfg)
    classes = meta.get("thing_classes")
    if not classes:
        logger.warning("Dataset %r has no class names on this machine; using class_0 .. class_%d",
                       name, num_classes - 1)
        return [f"class_{i}" for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"dataset {name!r} has {len(classes)} classes but the detector has {num_classes}")
    return list(classes)


def dataset_category_ids(cfg, num_classes: int) -> list[int]:
    """The dataset's own category id of each contiguous class index (COCO's 1..90 ids where the
    dataset maps them, else the index itself)."""
    _, meta = _metadata(cfg)
    mapping = meta.get("thing_dataset_id_to_contiguous_id")
    if not mapping:
        return list(range(num_classes))
    inverse = {v: k for k, v in mapping.items()}
    return [int(inverse.get(i, i)) for i in range(num_classes)]


# ---- images --------------------------------------------------------------------------------------------
def resize_for_onnx(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (3, height, width) float32 in [0, 255] (bilinear, the pixels of detectron2's
    ``T.Resize``), the ``images`` input of an exported graph (stack them for a batch)."""
    return resize_image(image, height, width)


# ---- export --------------------------------------------------------------------------------------------
class ExportableDetector(nn.Module):
    """The inference graph of a DETR detector: see the module docstring for inputs and outputs.

    forward(images (B, 3, H, W) float RGB in [0, 255], orig_sizes (B, 2) int64 (h, w)) ->
    boxes (B, K, 4) xyxy pixels of the original image, scores (B, K), labels (B, K) int64.

    With ``per_query_outputs`` it also returns :data:`PER_QUERY_OUTPUT_NAMES`: logits (B, Q, C) and boxes
    (B, Q, 4) normalised cxcywh of the last decoder layer, before the top-k.
    """

    def __init__(self, detector: DETRDetector, per_query_outputs: bool = False):
        super().__init__()
        self.detector = detector
        self.per_query_outputs = per_query_outputs

    def forward(self, images: Tensor, orig_sizes: Tensor) -> tuple[Tensor, ...]:
        det = self.detector
        x = (images.float() - det.pixel_mean) / det.pixel_std
        size = x.shape[-2:]
        batch = ImageList(x, [size] * x.shape[0])
        _, decoded = det.run(batch)
        # the detector's own top-k (batched: B stays free), boxes in normalised xyxy clipped to [0, 1], then
        # scaled to the originals
        scores, labels, boxes = det.topk_detections(decoded.logits[-1], decoded.boxes[-1])
        scale = orig_sizes.to(boxes.dtype).flip(-1).repeat(1, 2)[:, None]          # (B, 1, 4) (w, h, w, h)
        boxes = boxes.clamp(0, 1) * scale
        if self.per_query_outputs:
            return boxes, scores, labels, decoded.logits[-1], decoded.boxes[-1]
        return boxes, scores, labels


def export_onnx(detector: DETRDetector, path: str, height: int, width: int, *, batch_size: int = 1,
                dynamic: bool = False, opset: int = DEFAULT_OPSET, metadata: dict | None = None,
                sampling: str = "grid_sample", per_query_outputs: bool = False, half: bool = False) -> str:
    """Export ``detector``'s inference graph (:class:`ExportableDetector`) to ``path``.

    height, width, batch_size: the export size and batch B (with ``dynamic``, only the example's: B, H and W
    are then free axes of the graph, for every variant; the level sizes, level start indices and valid ratios
    are computed in the graph).
    metadata: strings written to the model's ``metadata_props`` (e.g. ``class_names`` as JSON).
    sampling: the deformable attention's bilinear sampling in the graph, "grid_sample" (ONNX GridSample) or
    "gather" (Gather ops and corner weights; see ``modeling/layers/ms_deform_attn.py``).
    per_query_outputs: also output :data:`PER_QUERY_OUTPUT_NAMES` (see :class:`ExportableDetector`).
    half: fp16 weights and activations, the sampling locations, box arithmetic, softmax and top-k in fp32
    (:func:`disco_detr.onnx_half.convert_to_half`; the grid_sample path only); inputs and outputs keep their types.
    """
    import onnx

    div = detector.size_divisibility
    if div and (height % div or width % div):
        raise ValueError(f"{type(detector).__name__} pads images to multiples of {div} (size_divisibility); export it "
                         f"at a size that is one (got {height}x{width}), so that no padding is needed")
    if sampling not in MS_DEFORM_ATTN_SAMPLINGS:
        raise ValueError(f"sampling must be one of {MS_DEFORM_ATTN_SAMPLINGS}, got {sampling!r}")
    if half and sampling != "grid_sample":
        raise ValueError("half precision takes the grid_sample path (the gather path's pixel coordinates lose "
                         "precision in fp16; docs/deployment.md)")
    if opset < 16 and sampling == "grid_sample":
        raise ValueError(f"opset {opset} < 16: ONNX GridSample (the deformable attention) needs opset 16")
    wrapper = ExportableDetector(detector, per_query_outputs).eval()
    output_names = list(OUTPUT_NAMES) + (list(PER_QUERY_OUTPUT_NAMES) if per_query_outputs else [])
    device = detector.device
    images = torch.rand(batch_size, 3, height, width, device=device) * 255
    sizes = torch.tensor([[height, width]] * batch_size, dtype=torch.int64, device=device)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}, "orig_sizes": {0: "batch"},
                        **{name: {0: "batch"} for name in output_names}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), ms_deform_attn_sampling(sampling):
        # the trace records Python-level shapes and checks for the export size: expected, and said above
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the TorchScript exporter is chosen on purpose (module docstring); its deprecation notice is known
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(wrapper, (images, sizes), path, dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    props = {"detector": type(detector).__name__, "input_size": "dynamic" if dynamic else f"{height}x{width}",
             "batch_size": "dynamic" if dynamic else str(batch_size), "num_classes": str(detector.num_classes),
             "sampling": sampling, "precision": "fp16" if half else "fp32",
             "images": "(B, 3, H, W) float32 RGB in [0, 255], resized to the input size",
             "orig_sizes": "(B, 2) int64 (height, width) of the original images",
             "boxes": "(B, K, 4) float32 x0, y0, x1, y1 in pixels of the original image",
             "scores": "(B, K) float32 sigmoid probabilities, highest first",
             "labels": "(B, K) int64 contiguous class indices (class_names)",
             **(metadata or {})}
    if half:
        from .onnx_half import convert_to_half

        model = convert_to_half(model)
    onnx.helper.set_model_props(model, {k: str(v) for k, v in props.items()})
    onnx.save(model, path)
    return path


class OnnxDetector(RuntimeDetector):
    """An exported graph run by onnxruntime (CPU unless ``providers`` say otherwise): the torch-free
    :class:`disco_detr_runtime.RuntimeDetector` with ``runtime="onnxruntime"``.

    ``__call__(images (B, 3, H, W) float32, orig_sizes (B, 2) int64)`` -> (boxes, scores, labels) numpy arrays
    as documented in the module docstring; ``metadata`` holds the model's metadata (``class_names`` ...);
    ``session`` is the ``onnxruntime.InferenceSession``.
    """

    def __init__(self, path: str, providers: list[str] | None = None, threads: int | None = None):
        super().__init__(path, "onnxruntime", threads=threads, providers=providers)


# ---- parity of an exported graph with PyTorch ----------------------------------------------------------
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
