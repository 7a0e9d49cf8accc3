"""A Gaussian mixture with its exact denoiser: ground truth for samplers, with no network error.

x0 ~ Σ_k w_k·N(μ_k, s_k²·I) in d dimensions. Noised at σ, each component becomes N(μ_k, (s_k² + σ²)·I), so

    D(x; σ) = E[x0 | x_σ = x] = Σ_k r_k(x, σ)·[μ_k + s_k²/(s_k² + σ²)·(x − μ_k)],

with responsibilities r_k ∝ w_k·N(x; μ_k, (s_k² + σ²)·I), computed in log space in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class GaussianMixture:
    """Isotropic Gaussian mixture; usable as a kuosan denoiser on [B, d] or [B, C, H, W] tensors (d = C·H·W)."""

    def __init__(self, means: Sequence | Tensor, stds: Sequence[float] | Tensor, weights: Sequence[float] | Tensor,
                 sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim == 1:
            self.means = self.means[:, None]
        k, self.dim = self.means.shape
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(k)
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(k)
        if (self.stds <= 0).any() or (weights <= 0).any():
            raise ValueError("mixture stds and weights must be positive")
        self.weights = weights / weights.sum()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.channels = self.dim

    @property
    def num_components(self) -> int:
        return len(self.weights)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n exact samples [n, d] (float64) and the component each came from [n]."""
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[components] + self.stds[components, None] * noise, components

    def log_responsibilities(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log r_k(x, σ) [B, K]; at σ = 0 this is the posterior over components of a clean sample."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        var = self.stds[None] ** 2 + sigma**2                                       # [B or 1, K]
        sq = torch.cdist(x, self.means).pow(2)                                      # [B, K]
        log_p = self.weights.log()[None] - 0.5 * self.dim * torch.log(2 * math.pi * var) - sq / (2 * var)
        return log_p - torch.logsumexp(log_p, dim=1, keepdim=True)

    def __call__(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(shape[0], -1).to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(shape[0]).reshape(-1, 1, 1)
        r = self.log_responsibilities(flat, sigma.flatten()).exp()[:, :, None]     # [B, K, 1]
        shrink = (self.stds[None, :, None] ** 2) / (self.stds[None, :, None] ** 2 + sigma**2)
        per_component = self.means[None] + shrink * (flat[:, None] - self.means[None])   # [B, K, d]
        return (r * per_component).sum(1).reshape(shape).to(dtype)

    def assign(self, x: Tensor) -> Tensor:
        """Most likely component of each clean sample."""
        return self.log_responsibilities(x).argmax(1)

    def mode_statistics(self, x: Tensor, min_members: int = 1) -> tuple[Tensor, Tensor]:
        """For samples x [n, d]: the fraction assigned to each component [K], and each component's spread
        [K] — the RMS per-dimension distance of its samples to μ_k over s_k (1 = exact; NaN where fewer than
        ``min_members`` samples were assigned)."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        assigned = self.assign(x)
        counts = torch.bincount(assigned, minlength=self.num_components)
        spreads = torch.full((self.num_components,), math.nan, dtype=torch.float64)
        for k in range(self.num_components):
            if counts[k] >= max(1, min_members):
                spreads[k] = ((x[assigned == k] - self.means[k]) ** 2).mean().sqrt() / self.stds[k]
        return counts.double() / len(x), spreads


def sliced_w2(a: Tensor, b: Tensor, directions: Tensor) -> float:
    """Sliced Wasserstein-2 distance between two equal-size sample sets [n, d] along unit ``directions``
    [d, L]: the RMS over directions of the 1-D W2, which for equal sizes pairs sorted projections."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())
