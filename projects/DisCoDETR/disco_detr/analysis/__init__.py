"""The DisCo DETR paper's analysis: convergence stability (its eq. 13, Figure 4), query -> object
distance (Figure 6), their trainer hooks (:mod:`.hooks`) and records (:mod:`.records`, which documents the
on-disk format). Figures: :mod:`.plots` (matplotlib) and :mod:`.runs` (model, images and
attention of a run folder), both imported on demand, driven by ``tools/analyze.py``."""
from .hooks import QueryDistanceHook, ReferenceRecorder, build_analysis_hooks
from .metrics import convergence_stability, cumulative_training_time, matched_centre_distances, path_lengths
from .records import DistanceStore, ReferenceStore, last_checkpoint, read_metrics_json

__all__ = [
    "QueryDistanceHook", "ReferenceRecorder", "build_analysis_hooks",
    "convergence_stability", "cumulative_training_time", "matched_centre_distances", "path_lengths",
    "DistanceStore", "ReferenceStore", "last_checkpoint", "read_metrics_json",
]
