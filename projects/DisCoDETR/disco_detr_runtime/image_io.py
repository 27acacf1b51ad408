"""The project's image decoding without torch or detectron2: file bytes -> (H, W, 3) uint8 RGB.

:func:`decode_rgb_image` is the one decoder: ``disco_detr.data.image_io.read_rgb_image`` (training, pre-training,
the proposal tool, the PyTorch deployment) reads a file's bytes through detectron2's ``PathManager`` and decodes
them here, and :func:`read_rgb_image` (the runtime path of ``tools/predict.py --model``) reads them with ``open``;
both give the same pixels (tests/test_image_io.py). Output: (H, W, 3) uint8 RGB, a new writable C-contiguous
array, H x W the size after EXIF orientation. The rules:

* EXIF orientation (tag 0x0112, values 2-8) is applied; an unreadable EXIF block counts as upright.
* Grey (``1``, ``L``), palette, CMYK and YCbCr images are converted by Pillow's ``convert("RGB")``.
* Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, or a ``transparency`` entry such as a palette's or a
  PNG's tRNS) is composited on white, not dropped: a transparent pixel reads as (255, 255, 255).
* 16-bit grey (Pillow modes ``I;16*`` and ``I``, which 16-bit PNG / TIFF decode to) is scaled to 8 bits by
  the type's range, ``round(v * 255 / 65535)`` after clipping v to [0, 65535]; 32-bit float grey (``F``)
  is taken as intensities in [0, 1] (clipped, NaN -> 0). 16-bit colour PNGs are reduced to 8 bits by
  Pillow's decoder itself.
* A missing, truncated or non-image file raises ``OSError`` whose message names the file.

Plain JPEGs (Pillow mode RGB or L, no EXIF rotation) are decoded by simplejpeg when it is installed
(libjpeg-turbo with the same accurate integer DCT and fancy upsampling as Pillow's: the same pixels,
checked by tests/test_image_io.py; a JPEG it rejects goes to Pillow, which gives the verdict).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:  # libjpeg-turbo without Pillow's per-image overhead; everything decodes through Pillow without it
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where simplejpeg is not installed
    simplejpeg = None

__all__ = ["IMAGE_EXTENSIONS", "decode_rgb_image", "read_rgb_image"]

# Lower case; compare with ``name.lower().endswith(IMAGE_EXTENSIONS)`` (data/voc.py also tries the upper-case forms).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {  # EXIF orientation -> the transposition that makes the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _upright_transpose(im: Image.Image) -> Image.Transpose | None:
    """The transposition EXIF asks for, or None (upright, no EXIF, or an EXIF block Pillow cannot parse)."""
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # malformed EXIF: treated as upright
        return None
    return _TRANSPOSE.get(orientation)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """A loaded, upright Pillow image of any mode -> (H, W, 3) uint8 RGB by the rules of the module docstring."""
    if im.mode in _SIXTEEN_BIT or im.mode == "F":
        values = np.asarray(im)
        if im.mode == "F":
            grey = np.rint(np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0), 0.0, 1.0) * 255.0)
        else:
            grey = (np.clip(values.astype(np.int64), 0, 65535) * 255 + 32767) // 65535   # exact rounding
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
    if im.mode in _ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def decode_rgb_image(data: bytes, file_name: str) -> np.ndarray:
    """An image file's bytes -> (H, W, 3) uint8 RGB, EXIF orientation applied (rules: module docstring).

    Raises ``OSError`` naming ``file_name`` when the bytes are truncated or not an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:       # reads the header only
            transpose = _upright_transpose(im)
            if simplejpeg is not None and im.format == "JPEG" and im.mode in ("RGB", "L") and transpose is None:
                try:
                    return simplejpeg.decode_jpeg(data, colorspace="RGB")
                except ValueError:  # libjpeg-turbo's strict mode refused it: Pillow gives the verdict below
                    pass
            im.load()                                  # truncated data raises here
            return _to_rgb(im if transpose is None else im.transpose(transpose))
    except Exception as e:  # Pillow raises several types; all mean "unusable image"
        raise OSError(f"Cannot read image {file_name!r}: {e}") from e


def read_rgb_image(file_name: str) -> np.ndarray:
    """Read a local image file as (H, W, 3) uint8 RGB (:func:`decode_rgb_image`); ``OSError`` naming the file
    when it is missing or unusable."""
    try:
        with open(file_name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OSError(f"Cannot read image {file_name!r}: {e}") from e
    return decode_rgb_image(data, file_name)
