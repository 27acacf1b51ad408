# D-FINE with the release's HGNetV2 backbones: d_fine_hgnetv2_model(size) for size "S", "M" or "L" builds
# configs/common/models/d_fine_r50vd.py's detector with that size's backbone, encoder and decoder from
# d_fine_hgnetv2_sizes.py (the release's dfine_hgnetv2_{s,m,l}_coco). "X" is refused: its encoder (d=384) is
# wider than its decoder (d=256), and our D-FINE has no encoder-to-decoder projection (docs/detectors.md).
import copy

from detectron2.config import LazyCall as L

from disco_detr.modeling import build_hgnetv2

from .d_fine_hgnetv2_sizes import DFINE_HGNETV2_SIZES
from .d_fine_r50vd import model as _r50vd

HGNETV2_FEATURES = ("stage2", "stage3", "stage4")


def d_fine_hgnetv2_model(size: str):
    """A fresh D-FINE model config of the release's ``size`` (S / M / L) on HGNetV2 (RGB in [0, 1] input)."""
    if size not in ("S", "M", "L"):
        raise ValueError(f"D-FINE size {size!r}: S, M or L (X's wider encoder needs a projection we do not have)")
    row = DFINE_HGNETV2_SIZES[size]
    model = copy.deepcopy(_r50vd)
    model.backbone = L(build_hgnetv2)(out_features=HGNETV2_FEATURES, **row["backbone"])
    model.in_features = HGNETV2_FEATURES
    model.encoder.in_channels = row["encoder"]["in_channels"]
    model.encoder.d_model = row["encoder"]["hidden_dim"]
    model.encoder.dim_feedforward = row["encoder"]["dim_feedforward"]
    model.encoder.expansion = row["encoder"]["expansion"]
    model.encoder.depth_mult = row["encoder"]["depth_mult"]
    model.decoder.d_model = row["decoder"]["hidden_dim"]
    model.decoder.num_layers = row["decoder"]["num_layers"]
    model.decoder.points_per_level = row["decoder"]["num_points"]
    model.max_num_bins = row["decoder"]["reg_max"]
    model.reg_scale = row["decoder"]["reg_scale"]
    return model
