"""Degradation operators y = A(x) for restoration, each with a pseudo-inverse A⁺ (A·A⁺ = I) and the
projection of an estimate onto the set {x : A(x) = y}, as DDNM (Wang et al. 2023) uses it:

    x ← x − A⁺(A(x) − y)        (keeps x's null-space part, takes the range-space part from y)

Tensors are [B, C, H, W] in model units. ``Identity`` (plain denoising), ``BoxDownsample`` (s×s averaging,
super-resolution) and ``Mask`` (missing pixels, inpainting) are here; blur or gray→colour are later work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class Operator:
    """Base class: subclasses give ``forward`` (A) and ``pinv`` (A⁺ with A·A⁺ = I)."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """The point of {A(x) = y} nearest to x (exact for the operators here, whose A⁺ is the
        Moore–Penrose inverse)."""
        return x - self.pinv(self.forward(x) - y)

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


class Identity(Operator):
    def forward(self, x: Tensor) -> Tensor:
        return x

    def pinv(self, y: Tensor) -> Tensor:
        return y


class BoxDownsample(Operator):
    """Average over scale×scale blocks. A⁺ repeats each pixel scale×scale times (nearest upsampling): since
    A·Aᵀ = I/scale², A⁺ = scale²·Aᵀ. Image sides must be multiples of ``scale``."""

    def __init__(self, scale: int):
        if scale < 1:
            raise ValueError(f"scale must be ≥ 1, got {scale}")
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} are not multiples of {self.scale}")
        return F.avg_pool2d(x, self.scale)

    def pinv(self, y: Tensor) -> Tensor:
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)


class Mask(Operator):
    """Keep the known pixels. ``known`` is a {0, 1} tensor broadcastable to x ([H, W], [1, 1, H, W], …);
    y has x's shape with zeros where unknown. A is a diagonal 0/1 matrix, so A⁺ = A and the projection
    pastes y over the known pixels."""

    def __init__(self, known: Tensor):
        self.known = (known > 0.5).float()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.known.to(x)

    def pinv(self, y: Tensor) -> Tensor:
        return y * self.known.to(y)

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        known = self.known.to(x)
        return known * y + (1 - known) * x


class ConsistentDenoiser(torch.nn.Module):
    """D'(x, σ) = project(D(x, σ), y): the denoiser's estimate moved onto {A(x) = y} at every call, so any
    sampler becomes a DDNM-style restoration sampler with no change to the sampler."""

    def __init__(self, denoiser, operator: Operator, y: Tensor):
        super().__init__()
        self.denoiser, self.operator, self.y = denoiser, operator, y
        self.sigma_min = denoiser.sigma_min
        self.sigma_max = denoiser.sigma_max
        self.channels = denoiser.channels

    def forward(self, x: Tensor, sigma, **cond) -> Tensor:
        return self.operator.project(self.denoiser(x, sigma, **cond), self.y)
