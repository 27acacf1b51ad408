"""The project's one image reader and its one list of image-file extensions.

:func:`read_rgb_image` is what fine-tuning (``DetrDatasetMapper``), pre-training (``PairedViewMapper``,
``DetRegMapper``), the proposal tool (``tooling/proposal_methods.py``) and deployment (``deploy.py``)
read images with, so all of them see the same pixels for the same file. It reads the file's bytes through
detectron2's ``PathManager`` and decodes them with :func:`disco_detr_runtime.image_io.decode_rgb_image`, the
torch-free decoder that ``tools/predict.py --model`` also reads with (the rules: EXIF orientation, grey /
palette / CMYK, transparency on white, 16-bit scaling, simplejpeg for plain JPEGs, are stated there).
Output: (H, W, 3) uint8 RGB, a new writable C-contiguous array, H x W the size after EXIF orientation (the
size that :func:`disco_detr.data.voc.image_size` reports and that proposals are stored for). A missing,
truncated or non-image file raises ``OSError`` whose message names the file.
"""
from __future__ import annotations

import numpy as np
from detectron2.utils.file_io import PathManager

from disco_detr_runtime.image_io import IMAGE_EXTENSIONS, decode_rgb_image, simplejpeg  # noqa: F401 (re-exported)

__all__ = ["IMAGE_EXTENSIONS", "read_rgb_image"]


def read_rgb_image(file_name: str) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, EXIF orientation applied (rules:
    :mod:`disco_detr_runtime.image_io`).

    Raises ``OSError`` naming ``file_name`` when it is missing, truncated or not an image.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            data = f.read()
    except Exception as e:  # the file system and PathManager's handlers raise several types
        raise OSError(f"Cannot read image {file_name!r}: {e}") from e
    return decode_rgb_image(data, file_name)
