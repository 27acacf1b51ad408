from .box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    inverse_sigmoid,
    normalized_cxcywh,
)
from .mlp import MLP
from .position_encoding import PositionEmbeddingSine, sine_embed_points

__all__ = [
    "MLP",
    "PositionEmbeddingSine",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "inverse_sigmoid",
    "normalized_cxcywh",
    "sine_embed_points",
]
from .attention import MultiheadAttention, multi_head_attention  # noqa: E402
from .transformer import FFN, DETREncoder, DETREncoderLayer  # noqa: E402

__all__ += ["FFN", "DETREncoder", "DETREncoderLayer", "MultiheadAttention", "multi_head_attention"]
from .ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn_sample  # noqa: E402

__all__ += ["MultiScaleDeformableAttention", "ms_deform_attn_sample"]
from .checkpointing import CHECKPOINT_PARTS, LayerCheckpointing, set_layer_checkpointing  # noqa: E402

__all__ += ["CHECKPOINT_PARTS", "LayerCheckpointing", "set_layer_checkpointing"]
