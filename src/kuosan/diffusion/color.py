"""A gray (1-channel) denoiser used on colour images, in an orthonormal opponent colour space.

The same idea as CBM3D's colour transform: with the orthonormal matrix M (rows: luminance (R+G+B)/√3 and
two chroma directions), u = M·x has i.i.d. noise of the same σ when x does, so u's three planes can be
denoised separately. The luminance plane is the channel mean scaled by √3; the gray prior sees the mean
itself, whose noise is σ/√3 — averaging three channels is what a colour image buys. The wrapper is an
exact 3-channel denoiser for the contract D(x, sigma): every sampler and restoration task takes it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kuosan.diffusion.precond import as_sigma_batch

_S3, _S2, _S6 = math.sqrt(3.0), math.sqrt(2.0), math.sqrt(6.0)
OPPONENT = torch.tensor([[1 / _S3, 1 / _S3, 1 / _S3],
                         [1 / _S2, 0.0, -1 / _S2],
                         [1 / _S6, -2 / _S6, 1 / _S6]], dtype=torch.float64)


def to_opponent(x: Tensor) -> Tensor:
    """[B, 3, H, W] RGB → [B, 3, H, W] (√3·luminance, chroma 1, chroma 2); orthonormal."""
    return torch.einsum("ij,bjhw->bihw", OPPONENT.to(x), x)


def from_opponent(u: Tensor) -> Tensor:
    return torch.einsum("ij,bihw->bjhw", OPPONENT.to(u), u)


class OpponentColorDenoiser(nn.Module):
    """Wrap a 1-channel denoiser as a 3-channel one (see module docstring). Condition keywords pass through
    to every plane."""

    channels = 3

    def __init__(self, gray: nn.Module):
        super().__init__()
        self.gray = gray
        self.sigma_min = getattr(gray, "sigma_min", 0.002)
        self.sigma_max = getattr(gray, "sigma_max", 80.0)

    def forward(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"OpponentColorDenoiser takes 3-channel images, got {x.shape[1]}")
        b, _, h, w = x.shape
        sigma = as_sigma_batch(sigma, x)
        u = to_opponent(x)
        # Luminance plane as the gray prior sees it: the channel mean (= u0/√3) at noise σ/√3.
        planes = torch.cat([u[:, :1] / _S3, u[:, 1:2], u[:, 2:3]], dim=0)
        sigmas = torch.cat([sigma / _S3, sigma, sigma])
        cond = {k: torch.cat([v] * 3) if torch.is_tensor(v) and v.shape[:1] == (b,) else v
                for k, v in cond.items()}
        d = self.gray(planes, sigmas, **cond)
        lum, c1, c2 = d[:b] * _S3, d[b:2 * b], d[2 * b:]
        return from_opponent(torch.cat([lum, c1, c2], dim=1))
