"""Transformer pieces shared by the DETR variants: the post-norm DETR encoder and the FFN."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .attention import MultiheadAttention
from .checkpointing import LayerCheckpointing

__all__ = ["FFN", "DETREncoderLayer", "DETREncoder"]


class FFN(nn.Module):
    """Linear-ReLU-Dropout-Linear with a residual connection and a post LayerNorm: (...,d)->(...,d)."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        # ReLU in place on linear1's fresh output (which its backward does not keep): one fewer (..., ffn)
        # tensor per layer, whose first touch is most of an out-of-place ReLU's cost on CPU.
        return self.norm(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x), inplace=True)))))


class DETREncoderLayer(nn.Module):
    """Post-norm self-attention layer; position embeddings are added to queries and keys only."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        q = k = src + pos
        src = self.norm(src + self.dropout(self.self_attn(q, k, src, key_padding_mask)))
        return self.ffn(src)


class DETREncoder(LayerCheckpointing, nn.Module):
    """Stack of :class:`DETREncoderLayer`.

    forward(src (B, HW, d), pos (B, HW, d), key_padding_mask (B, HW) True on padding)
    -> memory (B, HW, d).
    """

    def __init__(self, num_layers: int = 6, d_model: int = 256, num_heads: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(
            DETREncoderLayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_layers)
        )

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            src = self.run_layer(layer, src, pos, key_padding_mask)
        return src
