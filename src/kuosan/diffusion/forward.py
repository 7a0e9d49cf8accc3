"""The forward process in σ-space and its variance-preserving (VP, DDPM) form.

σ-space (variance exploding):  x_σ  = x0 + σ·n
VP form (DDPM):                x_vp = √ᾱ·x0 + √(1−ᾱ)·n

They describe the same noisy image up to a scale: with σ² = (1−ᾱ)/ᾱ, x_vp = x_σ·√ᾱ = x_σ/√(1+σ²).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    """Reshape a [B] (or scalar) σ so that it broadcasts over [B, C, H, W]."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.reshape(-1, *([1] * (like.ndim - 1))) if sigma.ndim else sigma


def add_noise(x0: Tensor, sigma: Tensor | float, noise: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """x_σ = x0 + σ·n with n ~ N(0, I); ``sigma`` is a float or a [B] tensor."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return x0 + _per_sample(sigma, x0) * noise


def alpha_bar_to_sigma(alpha_bar: Tensor) -> Tensor:
    """σ = √((1−ᾱ)/ᾱ)."""
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def sigma_to_alpha_bar(sigma: Tensor) -> Tensor:
    """ᾱ = 1/(1+σ²)."""
    return 1 / (1 + sigma**2)


def sigma_to_vp(x_sigma: Tensor, sigma: Tensor | float) -> Tensor:
    """x_vp = x_σ/√(1+σ²)."""
    return x_sigma / (1 + _per_sample(sigma, x_sigma) ** 2).sqrt()


def vp_to_sigma(x_vp: Tensor, sigma: Tensor | float) -> Tensor:
    """x_σ = x_vp·√(1+σ²)."""
    return x_vp * (1 + _per_sample(sigma, x_vp) ** 2).sqrt()
