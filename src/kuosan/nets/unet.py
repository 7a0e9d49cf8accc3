"""The kuosan UNet: F(x, c_noise, class_labels, guide) -> tensor of x's shape.

One sitting, in the spirit of nanoGPT: a typed config, a handful of layers, presets at the bottom.
It is a DDPM++/ADM-style UNet: a Fourier embedding of the noise level, residual blocks with
GroupNorm/SiLU and adaptive scale-shift conditioning, self-attention at chosen levels, and optional
class conditioning with a null class (label −1) for classifier-free guidance, and optional guide planes: images
beside x (e.g. the denoised luminance a chroma plane is denoised next to) through their own first convolution,
added to x's (zero-initialised, so a net given guide planes starts as it was; zeros = no guide). A guide enters
minus its local mean (``GUIDE_WINDOW``²): its edges are what x can use, and its level would only leak into x's
(a 256² tile of sky and one of shadow differ by their level). Any H×W works: the input is padded to a
multiple of 2^(levels−1) and the output cropped back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GUIDE_WINDOW = 5     # guide planes enter minus their mean over this × this window (see the module docstring)


def local_detail(planes: Tensor, window: int = GUIDE_WINDOW) -> Tensor:
    """``planes`` minus their mean over a window × window neighbourhood (edges reflected)."""
    r = window // 2
    padded = F.pad(planes, (r, r, r, r), mode="reflect" if min(planes.shape[-2:]) > r else "replicate")
    return planes - F.avg_pool2d(padded, window, stride=1)


@dataclass(frozen=True)
class UNetConfig:
    channels: int = 3                        # image channels in and out (1 = gray, 3 = RGB)
    base_channels: int = 64                  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; one level per entry
    num_res_blocks: int = 2                  # residual blocks per level (encoder side)
    attention_levels: tuple[int, ...] = (2,)  # level indices (0 = full resolution) with self-attention
    mid_attention: bool = True               # self-attention in the middle block
    attention_head_channels: int = 32
    num_classes: int = 0                     # 0 = unconditional
    dropout: float = 0.0
    embedding_mult: int = 4                  # noise-embedding width = base_channels × this
    groups: int = 8                          # GroupNorm groups (clipped to each width)
    normalization: str = "group"             # "group" (GroupNorm) or "none": no statistics over the
                                             # image, so the net is local and tiles give the same result
    guide_channels: int = 0                  # extra input planes beside x (0 = none; see module docstring)

    def __post_init__(self):
        if self.channels < 1 or self.base_channels < 1 or not self.channel_mult:
            raise ValueError("channels, base_channels and channel_mult must be positive")
        if self.guide_channels < 0:
            raise ValueError(f"guide_channels must be ≥ 0, got {self.guide_channels}")
        if self.normalization not in ("group", "none"):
            raise ValueError(f"normalization {self.normalization!r}: use 'group' or 'none'")
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attention_levels {bad} outside 0..{len(self.channel_mult) - 1}")

    @property
    def multiple(self) -> int:
        """H and W are padded to a multiple of this."""
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNet config key(s): {', '.join(unknown)}")
        d = dict(d)
        for key in ("channel_mult", "attention_levels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

PRESETS: dict[str, UNetConfig] = {
    # ~1M parameters: 28–32 px digits and icons on a CPU. Narrow at full resolution (16 channels), where
    # a CPU spends its time, wide below (64); measured 1.41× the images/s of the earlier (32, 64, 64) tiny
    # and a lower Fréchet distance after the same 15 minutes (README, benchmarks/train_speed.py).
    "tiny": UNetConfig(base_channels=16, channel_mult=(1, 4, 4), num_res_blocks=1, attention_levels=(2,),
                       embedding_mult=8),
    # ~8M parameters: 32–64 px colour images on a GPU (or patient CPUs).
    "small": UNetConfig(base_channels=64, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(2,),
                        embedding_mult=4),
    # ~5.9M parameters, purely local (no attention, no normalisation statistics): a prior for photo
    # restoration, trained on crops and applied to images of any size in tiles with identical results.
    "photo": UNetConfig(base_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=2, attention_levels=(),
                        mid_attention=False, normalization="none", embedding_mult=4),
    # ~30M parameters.
    "base": UNetConfig(base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(2,),
                       embedding_mult=4),
}

def preset(name: str, **overrides) -> UNetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)

def _norm(channels: int, groups: int, kind: str = "group") -> nn.Module:
    if kind == "none":
        return nn.Identity()
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)

class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise level c_noise (fixed frequencies, as in DDPM/ADM)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        # c_noise = ¼ ln σ lies in about [−1.6, 1.1]; scale it so the fastest frequencies resolve it.
        args = (c_noise.float() * 250.0)[:, None] * self.freqs[None]
        return torch.cat([args.cos(), args.sin()], dim=1)

class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, scale-shift by the embedding, GroupNorm → SiLU → dropout → conv, + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, norm: str = "group"):
        super().__init__()
        self.norm1 = _norm(cin, groups, norm)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups, norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) / math.sqrt(2)

class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, residual."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2)

class Block(nn.Module):
    """A residual block, followed by attention where the level asks for it."""

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, cfg.groups, cfg.dropout, cfg.normalization)
        self.attn = SelfAttention(cout, cfg.attention_head_channels, cfg.groups) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x

class UNet(nn.Module):
    """F(x, c_noise, class_labels=None, guide=None): the raw network that ``EDMDenoiser`` preconditions."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        self.channels = cfg.channels
        self.guide_channels = cfg.guide_channels
        emb_dim = cfg.base_channels * cfg.embedding_mult
        self.noise_embedding = FourierEmbedding(cfg.base_channels)
        self.embedding_mlp = nn.Sequential(nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(),
                                           nn.Linear(emb_dim, emb_dim))
        # Index num_classes is the null class; label −1 maps to it.
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None

        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.stem = nn.Conv2d(cfg.channels, widths[0], 3, padding=1)
        self.guide_stem = None
        if cfg.guide_channels:
            self.guide_stem = nn.Conv2d(cfg.guide_channels, widths[0], 3, padding=1, bias=False)
            nn.init.zeros_(self.guide_stem.weight)
        self.down = nn.ModuleList()
        skips = [widths[0]]
        cur = widths[0]
        for level, width in enumerate(widths):
            attn = level in cfg.attention_levels
            for _ in range(cfg.num_res_blocks):
                self.down.append(Block(cur, width, emb_dim, cfg, attn))
                cur = width
                skips.append(cur)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid = nn.ModuleList([Block(cur, cur, emb_dim, cfg, cfg.mid_attention),
                                  Block(cur, cur, emb_dim, cfg, False)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            attn = level in cfg.attention_levels
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(Block(cur + skips.pop(), widths[level], emb_dim, cfg, attn))
                cur = widths[level]
            if level > 0:
                self.up.append(Upsample())
        self.out_norm = _norm(cur, cfg.groups, cfg.normalization)
        self.out_conv = nn.Conv2d(cur, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        # Gradient checkpointing (a run-time switch, not part of the config): when gradients are being
        # recorded, each block keeps only its input and recomputes its insides during the backward pass.
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None,
                guide: Tensor | None = None) -> Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"this network takes {self.channels}-channel images, got {x.shape[1]} channels")
        if guide is not None:
            want = (x.shape[0], self.guide_channels, *x.shape[2:])
            if self.guide_stem is None:
                raise ValueError("this network takes no guide planes (guide_channels = 0)")
            if tuple(guide.shape) != want:
                raise ValueError(f"guide must have shape {want}, got {tuple(guide.shape)}")
        height, width = x.shape[-2:]
        m = self.config.multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            # Reflection keeps image statistics at the border; fall back to replicate for tiny inputs.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            guide = F.pad(guide, (0, pad_w, 0, pad_h), mode=mode) if guide is not None else None

        emb = self.embedding_mlp(self.noise_embedding(c_noise.expand(x.shape[0])))
        if self.class_embedding is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
            null = self.config.num_classes
            emb = emb + self.class_embedding(torch.where(class_labels < 0, null, class_labels))
        emb = F.silu(emb)

        h = self.stem(x)
        if guide is not None:      # no guide = zero guide planes, whose convolution (no bias) is zero
            h = h + self.guide_stem(local_detail(guide))
        hs = [h]
        run = _checkpointed if self.gradient_checkpointing and torch.is_grad_enabled() else _direct
        for layer in self.down:
            h = run(layer, h, emb) if isinstance(layer, Block) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = run(layer, h, emb)
        for layer in self.up:
            h = run(layer, h, emb, hs.pop()) if isinstance(layer, Block) else layer(h)
        out = self.out_conv(F.silu(self.out_norm(h)))
        return out[..., :height, :width]


def _direct(block: Block, h: Tensor, emb: Tensor, skip: Tensor | None = None) -> Tensor:
    return block(h if skip is None else torch.cat([h, skip], dim=1), emb)


def _checkpointed(block: Block, h: Tensor, emb: Tensor, skip: Tensor | None = None) -> Tensor:
    # The skip is concatenated inside the checkpoint, so the concatenation is not kept either.
    from torch.utils.checkpoint import checkpoint

    return checkpoint(_direct, block, h, emb, skip, use_reentrant=False)


class Upsample(nn.Module):
    """Nearest-neighbour ×2. No convolution here: the next residual block's convolutions do the mixing,
    and a full-resolution conv at the widest width would be the most expensive layer of the net on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


def set_gradient_checkpointing(module: nn.Module, enabled: bool) -> dict[nn.Module, bool]:
    """Turn gradient checkpointing on or off in every submodule of ``module`` that has the switch (e.g.
    ``UNet``); returns each one's previous setting, so a caller can put them back."""
    previous = {m: m.gradient_checkpointing for m in module.modules() if hasattr(m, "gradient_checkpointing")}
    for switchable in previous:
        switchable.gradient_checkpointing = enabled
    return previous


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

