"""DisCo DETR: distance-aware multi-view contrastive pre-training for DETR detectors."""
from . import data, modeling  # noqa: F401  (registers datasets and meta-architectures)

__version__ = "0.1.0"
