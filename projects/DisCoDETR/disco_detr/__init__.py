"""DisCo DETR: distance-aware multi-view contrastive pre-training for DETR detectors.

Importing the package first keeps one warning out of every tool's output: fvcore and detectron2 call
``torch.jit.script`` while they are imported, which PyTorch >= 2.5 answers with a FutureWarning ("torch.jit.script
is deprecated"). Only those imports run with that warning filtered; a later ``torch.jit.script`` call still warns.
"""
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import detectron2.modeling  # noqa: F401
    import fvcore.nn  # noqa: F401

from . import data, modeling  # noqa: E402, F401  (registers datasets and meta-architectures)

__version__ = "0.1.0"
