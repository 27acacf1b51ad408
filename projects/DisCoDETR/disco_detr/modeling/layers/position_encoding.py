"""Sine position embeddings for feature maps and for box reference points."""
import math

import torch
from torch import Tensor, nn

__all__ = ["PositionEmbeddingSine", "sine_embed_points"]


def _sine_features(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """(...,) coordinates already multiplied by the scale -> (..., num_feats) interleaved sin/cos."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-d sine embedding of a padded feature map (DETR's, normalised by default).

    forward(mask): mask (B, H, W) bool, True on padding -> (B, 2 * num_pos_feats, H, W),
    channels ordered (y features, x features). With ``normalize`` the cumulative
    coordinates (1 for the first row/column) plus ``offset`` are divided by the un-padded
    extent, so the embedding is the same for an image whatever padding it received in the
    batch: ``y = (cumsum_y + offset) / (y_last + eps) * scale``. ``offset`` is 0 in the
    DETR / Conditional DETR / DAB-DETR releases and -0.5 in Deformable DETR and DINO.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi, eps: float = 1e-6, offset: float = 0.0):
        super().__init__()
        self.offset = offset
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = (~mask).float()
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        pos_x = _sine_features(x_embed, self.num_pos_feats, self.temperature)
        pos_y = _sine_features(y_embed, self.num_pos_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_embed_points(points: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """Sine embedding of normalised 2-d points (Conditional DETR's spatial query).

    points: (..., 2) (x, y) in [0, 1] -> (..., d_model), ordered (y features, x features),
    matching :class:`PositionEmbeddingSine` so that query and key positions live in one space.
    """
    scaled = points * (2 * math.pi)
    half = d_model // 2
    pos_x = _sine_features(scaled[..., 0], half, temperature)
    pos_y = _sine_features(scaled[..., 1], half, temperature)
    return torch.cat((pos_y, pos_x), dim=-1)
