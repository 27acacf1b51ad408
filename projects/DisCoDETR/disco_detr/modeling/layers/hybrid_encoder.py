"""RT-DETR's efficient hybrid encoder (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
section 4.2): AIFI (one transformer layer on the stride-32 map, eq. 1) followed by CCFM (the CNN cross-scale fusion
of fig. 3, built from CSP blocks of RepVGG blocks).

Per level a conv1x1 (no bias) + BN maps the backbone channels to d; AIFI is a post-norm transformer layer (GELU FFN)
with a 2-d sin-cos position embedding (temperature 10000, built for the actual map size) added to queries and keys;
CCFM runs top-down (lateral conv1x1+BN+SiLU, nearest upsample, concat with the finer level, :class:`CSPRepLayer`)
then bottom-up (conv3x3/s2+BN+SiLU, concat with the top-down map, :class:`CSPRepLayer`). The upsample goes to the
finer map's size (not a fixed x2), so odd image sizes work (the backbone rounds sizes up at every stride). Padding
(True in the masks) is masked out of AIFI's keys.

BatchNorm is :class:`~.sync_batch_norm.SyncBatchNorm2d`: plain ``BatchNorm2d`` in one process and in eval,
statistics of the whole global batch under DDP (the release trains with ``sync_bn``), so N processes normalise as one would.

Module attribute names follow the release (``input_proj``, ``aifi``, ``lateral_convs``, ``fpn_blocks``,
``downsample_convs``, ``pan_blocks``), which the checkpoint converters of :mod:`disco_detr.checkpoint.rtdetr` rely on.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .attention import MultiheadAttention
from .checkpointing import LayerCheckpointing
from .sync_batch_norm import SyncBatchNorm2d

__all__ = ["AIFILayer", "CSPRepLayer", "ConvNormAct", "GELANBlock", "HybridEncoder", "RepVGGBlock", "SCDown",
           "sincos_position_embedding_2d"]


class ConvNormAct(nn.Module):
    """Conv2d (no bias, 'same' padding (k-1)//2) + BatchNorm2d (synchronised) + SiLU (or no activation):
    (B,Ci,H,W)->(B,Co,H',W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, act: bool = True,
                 groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                              bias=False)
        self.norm = SyncBatchNorm2d(out_channels)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class RepVGGBlock(nn.Module):
    """RepVGG block (training form): SiLU(conv3x3+BN (x) + conv1x1+BN (x)), same width."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, act=False)
        self.conv2 = ConvNormAct(channels, channels, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """CSP block of RepVGG blocks: conv3(bottlenecks(conv1(x)) + conv2(x)), hidden width
    ``int(out * expansion)``; conv3 is the identity when the hidden width equals the output width (R50: 1.0)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 3, expansion: float = 1.0):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormAct(in_channels, hidden, 1)
        self.conv2 = ConvNormAct(in_channels, hidden, 1)
        self.bottlenecks = nn.Sequential(*[RepVGGBlock(hidden) for _ in range(num_blocks)])
        self.conv3 = ConvNormAct(hidden, out_channels, 1) if hidden != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class GELANBlock(nn.Module):
    """D-FINE's fusion block (RepNCSPELAN4, after YOLOv9's GELAN): conv1 1x1 (2d -> 2d), split into halves
    (a, b); c = conv2(CSPRepLayer(b)), e = conv3(CSPRepLayer(c)) (3x3 convs, width ``hidden``); conv4 1x1 of
    [a, b, c, e] -> d. Every conv + BN + SiLU. (B, 2d, H, W) -> (B, d, H, W)."""

    def __init__(self, d_model: int, hidden: int, num_blocks: int):
        super().__init__()
        self.conv1 = ConvNormAct(2 * d_model, 2 * d_model, 1)
        self.csp_rep1 = CSPRepLayer(d_model, hidden, num_blocks)
        self.conv2 = ConvNormAct(hidden, hidden, 3)
        self.csp_rep2 = CSPRepLayer(hidden, hidden, num_blocks)
        self.conv3 = ConvNormAct(hidden, hidden, 3)
        self.conv4 = ConvNormAct(2 * d_model + 2 * hidden, d_model, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv1(x).chunk(2, 1)
        c = self.conv2(self.csp_rep1(b))
        e = self.conv3(self.csp_rep2(c))
        return self.conv4(torch.cat([a, b, c, e], 1))


class SCDown(nn.Module):
    """D-FINE's downsampling (spatial-channel decoupled, after YOLOv10): conv1x1 + BN, then a depth-wise
    conv3x3/s2 + BN, no activation. (B, d, H, W) -> (B, d, ceil(H / 2), ceil(W / 2))."""

    def __init__(self, d_model: int):
        super().__init__()
        self.conv1 = ConvNormAct(d_model, d_model, 1, act=False)
        self.conv2 = ConvNormAct(d_model, d_model, 3, 2, act=False, groups=d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


def sincos_position_embedding_2d(h: int, w: int, dim: int, temperature: float = 10000.0, layout: str = "hf",
                                 device=None) -> Tensor:
    """AIFI's 2-d sin-cos embedding of an h x w map: (h*w, dim), token k = y * w + x (row-major).

    With omega_i = temperature^(-i / (dim/4)), i < dim/4: ``[sin(a omega), cos(a omega), sin(b omega),
    cos(b omega)]`` where (a, b) = (y, x) for ``layout="hf"`` (transformers) and (k // h, k % h) for
    ``layout="release"`` (the RT-DETR release's transposed grid; equal to "hf" on square maps).
    """
    if dim % 4:
        raise ValueError(f"the 2-d sin-cos embedding needs a width divisible by 4, got {dim}")
    k = torch.arange(h * w, device=device, dtype=torch.float32)
    if layout == "hf":
        a, b = torch.div(k, w, rounding_mode="floor"), k % w
    elif layout == "release":
        a, b = torch.div(k, h, rounding_mode="floor"), k % h
    else:
        raise ValueError(f"layout must be 'hf' or 'release', got {layout!r}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    a, b = a[:, None] * omega[None], b[:, None] * omega[None]
    return torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], 1)


class AIFILayer(nn.Module):
    """Post-norm transformer encoder layer (AIFI): self-attention with the position embedding added to
    queries and keys, add + LayerNorm, FFN (GELU), add + LayerNorm. (B, S, d) -> (B, S, d)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, key_padding_mask)))
        ffn = self.linear2(self.dropout(F.gelu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class HybridEncoder(LayerCheckpointing, nn.Module):
    """RT-DETR's efficient hybrid encoder (AIFI + CCFM).

    forward(maps: list of L backbone maps (B, C_l, h_l, w_l), finest first; masks: list of (B, h_l, w_l) bool,
    True on padding, or None) -> list of L maps (B, d, h_l, w_l).

    Args:
        in_channels: backbone channels per level; d_model: the width d; aifi_levels: indices of the levels AIFI
        runs on (the release: the last, ``(2,)``); num_aifi_layers: layers per AIFI level (1);
        expansion / depth_mult: CSPRepLayer hidden width factor and ``round(3 * depth_mult)`` RepVGG blocks;
        aifi_position: "hf" or "release" (see :func:`sincos_position_embedding_2d`);
        fusion: "csp" (RT-DETR: :class:`CSPRepLayer` blocks, conv3x3/s2 downsampling) or "gelan" (D-FINE:
        :class:`GELANBlock` of width ``round(expansion * d_model // 2)``, :class:`SCDown` downsampling, no
        activation after the lateral convs).
    """

    def __init__(self, in_channels: list[int] | tuple[int, ...] = (512, 1024, 2048), d_model: int = 256,
                 num_heads: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0,
                 aifi_levels: tuple[int, ...] = (2,), num_aifi_layers: int = 1, temperature: float = 10000.0,
                 expansion: float = 1.0, depth_mult: float = 1.0, aifi_position: str = "hf", fusion: str = "csp"):
        super().__init__()
        self.in_channels = list(in_channels)
        self.d_model = d_model
        self.aifi_levels = tuple(aifi_levels)
        self.temperature = temperature
        if aifi_position not in ("hf", "release"):
            raise ValueError(f"aifi_position must be 'hf' or 'release', got {aifi_position!r}")
        self.aifi_position = aifi_position
        if fusion not in ("csp", "gelan"):
            raise ValueError(f"fusion must be 'csp' or 'gelan', got {fusion!r}")
        n = len(self.in_channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d_model, 1, bias=False), SyncBatchNorm2d(d_model)) for c in self.in_channels)
        self.aifi = nn.ModuleList(
            nn.ModuleList(AIFILayer(d_model, num_heads, dim_feedforward, dropout) for _ in range(num_aifi_layers))
            for _ in self.aifi_levels)
        blocks = round(3 * depth_mult)
        self.lateral_convs = nn.ModuleList(ConvNormAct(d_model, d_model, 1, act=fusion == "csp") for _ in range(n - 1))
        if fusion == "csp":
            def block():
                return CSPRepLayer(2 * d_model, d_model, blocks, expansion)

            def down():
                return ConvNormAct(d_model, d_model, 3, 2)
        else:
            def block():
                return GELANBlock(d_model, round(expansion * d_model // 2), blocks)

            def down():
                return SCDown(d_model)
        self.fpn_blocks = nn.ModuleList(block() for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(down() for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(block() for _ in range(n - 1))

    def forward(self, maps: list[Tensor], masks: list[Tensor] | None = None) -> list[Tensor]:
        if len(maps) != len(self.in_channels):
            raise ValueError(f"HybridEncoder built for {len(self.in_channels)} levels, got {len(maps)}")
        proj = [p(x) for p, x in zip(self.input_proj, maps)]
        for layers, lvl in zip(self.aifi, self.aifi_levels):
            b, d, h, w = proj[lvl].shape
            src = proj[lvl].flatten(2).transpose(1, 2)
            pos = sincos_position_embedding_2d(h, w, d, self.temperature, self.aifi_position, src.device)
            pos = pos.to(src.dtype)[None]
            key_mask = None
            if masks is not None and masks[lvl].any():
                key_mask = masks[lvl].flatten(1)
            for layer in layers:
                src = self.run_layer(layer, src, pos, key_mask)
            proj[lvl] = src.transpose(1, 2).reshape(b, d, h, w)

        n = len(proj)
        inner = [proj[-1]]                                   # top-down, coarsest first
        for i, idx in enumerate(range(n - 1, 0, -1)):
            high = self.lateral_convs[i](inner[0])
            inner[0] = high
            low = proj[idx - 1]
            up = F.interpolate(high, size=low.shape[-2:], mode="nearest")
            inner.insert(0, self.run_layer(self.fpn_blocks[i], torch.cat([up, low], 1)))
        outs = [inner[0]]                                    # bottom-up, finest first
        for i in range(n - 1):
            down = self.downsample_convs[i](outs[-1])
            high = inner[i + 1]
            if down.shape[-2:] != high.shape[-2:]:
                raise ValueError(f"level sizes do not halve: {down.shape[-2:]} vs {high.shape[-2:]}; the backbone "
                                 "must give ceil(H / stride) maps")
            outs.append(self.run_layer(self.pan_blocks[i], torch.cat([down, high], 1)))
        return outs
