"""Multi-head attention on batch-first tensors, with separate query/key and value widths."""
from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from .recording import emit, is_recording

__all__ = ["multi_head_attention", "MultiheadAttention"]


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor, num_heads: int,
                         key_padding_mask: Tensor | None = None, dropout: float = 0.0,
                         record: tuple[str, nn.Module | None] | None = None,
                         attn_mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention split into ``num_heads`` heads.

    q: (B, Nq, Eqk), k: (B, Nk, Eqk), v: (B, Nk, Ev); Eqk and Ev divisible by num_heads and
    possibly different (Conditional DETR's cross-attention concatenates content and position
    per head, so its queries/keys are twice as wide as its values).
    key_padding_mask: (B, Nk) bool, True where the key must be ignored (padding).
    attn_mask: (Nq, Nk) bool, True where query i must not see key j (e.g. denoising groups), or None.
    record: (site, module) to emit the attention weights (B, heads, Nq, Nk) under when a
    :func:`~.recording.record_attention` block is open (see :mod:`.recording`).
    Returns (B, Nq, Ev), heads concatenated in order.
    """
    b, nq, _ = q.shape
    nk = k.shape[1]
    q = q.view(b, nq, num_heads, -1).transpose(1, 2)
    k = k.view(b, nk, num_heads, -1).transpose(1, 2)
    v = v.view(b, nk, num_heads, -1).transpose(1, 2)
    allowed = None  # True = may attend
    if key_padding_mask is not None:
        allowed = ~key_padding_mask[:, None, None, :]
    if attn_mask is not None:
        allowed = ~attn_mask if allowed is None else allowed & ~attn_mask
    if dropout > 0 and q.device.type == "cpu":
        out = _attention_with_dropout(q, k, v, allowed, dropout)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
    if record is not None and is_recording():
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        emit(record[0], record[1], weights=logits.softmax(-1))
    return out.transpose(1, 2).reshape(b, nq, -1)


def _attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, dropout: float) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) with dropout on the weights, times v: (B, h, Nq, Dh), (B, h, Nk, Dh),
    (B, h, Nk, Dv), ``allowed`` broadcastable to (B, h, Nq, Nk) (True = may attend) -> (B, h, Nq, Dv).

    What ``F.scaled_dot_product_attention`` computes with ``dropout_p > 0`` on CPU, where it has no fused
    kernel: its generic path scales q and k separately, turns the boolean mask into an additive one and
    runs a "safe" softmax (three more passes over the (Nq, Nk) weights, to zero rows that see no key).
    Here the mask is one in-place fill and the softmax the plain one; every query must see at least one
    key (true of padding masks and of denoising-group masks).
    """
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if allowed is not None:
        logits = logits.masked_fill_(~allowed, float("-inf"))
    weights = F.dropout(logits.softmax(-1), dropout, training=True)
    return weights @ v


class MultiheadAttention(nn.Module):
    """Standard multi-head attention with its own q/k/v/output projections (batch first).

    forward(query (B,Nq,d), key (B,Nk,d), value (B,Nk,d), key_padding_mask (B,Nk) or None,
    attn_mask (Nq,Nk) bool True = blocked, or None) -> (B, Nq, d).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, site: str = "self_attn"):
        super().__init__()
        self.site = site
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        out = multi_head_attention(
            self.q_proj(query), self.k_proj(key), self.v_proj(value), self.num_heads,
            key_padding_mask, self.dropout if self.training else 0.0, (self.site, self), attn_mask,
        )
        return self.out_proj(out)
