"""Preconditioning: turn a raw network into a denoiser ``D(x, sigma, **cond) -> x0_hat``.

``EDMDenoiser`` follows Karras et al. 2022, Table 1 ("EDM" column):

    c_skip(σ)  = σ_data² / (σ² + σ_data²)
    c_out(σ)   = σ·σ_data / √(σ² + σ_data²)
    c_in(σ)    = 1 / √(σ² + σ_data²)
    c_noise(σ) = ¼·ln σ
    D(x; σ)    = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))

``VPEpsDenoiser`` wraps a DDPM ε-prediction network with discrete timesteps onto the same contract.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from kuosan.diffusion.forward import alpha_bar_to_sigma, sigma_to_vp


class Denoiser(Protocol):
    """The contract every part of kuosan agrees on (see DESIGN.md)."""

    sigma_min: float
    sigma_max: float
    channels: int

    def __call__(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor: ...


def as_sigma_batch(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Accept a float, a scalar tensor or a [B] tensor; return σ as a [B] tensor on x's device."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or a tensor of shape [{x.shape[0]}], got {tuple(sigma.shape)}")
    return sigma


def edm_scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1, each of σ's shape."""
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


class EDMDenoiser(nn.Module):
    """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise, class_labels, guide) around a raw network F.

    ``net(x, c_noise, class_labels=None)`` must keep x's shape. ``class_labels`` of −1 means "no label"
    (the null class used by classifier-free guidance). ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs F alone
    under autocast; the scalings and the skip path stay in x's dtype, so F's rounding enters D scaled by
    c_out(σ) ≤ σ.
    """

    autocast_dtype: torch.dtype | None = None

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, channels: int | None = None):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.channels = int(channels if channels is not None else net.channels)

    @property
    def guide_channels(self) -> int:
        """Guide planes the network takes beside x (0 for most)."""
        return int(getattr(self.net, "guide_channels", 0))

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                guide: Tensor | None = None) -> Tensor:
        sigma = as_sigma_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in edm_scalings(sigma, self.sigma_data))
        # A guide is an image in [-1, 1] (no noise of σ to normalise away): it enters F as it is.
        extra = {"guide": guide} if guide is not None else {}
        if self.autocast_dtype is None:
            f = self.net(x * c_in, c_noise.flatten(), class_labels=class_labels, **extra)
        else:
            with torch.autocast(x.device.type, dtype=self.autocast_dtype):
                f = self.net(x * c_in, c_noise.flatten(), class_labels=class_labels, **extra)
        return c_skip * x + c_out * f.to(x.dtype)


class VPEpsDenoiser(nn.Module):
    """A DDPM ε-network ``eps_net(x_vp, t, **cond)`` with discrete timesteps, as a σ-space denoiser.

    For timestep t the network saw x_vp = √ᾱ_t·x0 + √(1−ᾱ_t)·n, i.e. σ_t = √((1−ᾱ_t)/ᾱ_t). Given σ, the
    (fractional) t is found by linear interpolation in log σ over the σ_t table; ``quantize=True`` rounds it
    to the nearest integer timestep. Then x0_hat = x − σ·ε(x/√(1+σ²), t).
    """

    def __init__(self, eps_net: nn.Module, alphas_cumprod: Tensor, channels: int | None = None,
                 quantize: bool = False):
        super().__init__()
        self.eps_net = eps_net
        sigmas = alpha_bar_to_sigma(torch.as_tensor(alphas_cumprod, dtype=torch.float64))
        if not bool((sigmas[1:] > sigmas[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing in t")
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)
        self.sigma_min = float(sigmas[0])
        self.sigma_max = float(sigmas[-1])
        self.channels = int(channels if channels is not None else getattr(eps_net, "channels", 3))
        self.quantize = quantize

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep for σ, interpolated in log σ and clamped to [0, T−1]."""
        log_sigma = sigma.float().log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        hi = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)
        lo = hi - 1
        w = (log_sigma - self.log_sigmas[lo]) / (self.log_sigmas[hi] - self.log_sigmas[lo])
        t = lo.float() + w.clamp(0, 1)
        return t.round() if self.quantize else t

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """σ at a (fractional) timestep, interpolated in log σ."""
        t = t.float().clamp(0, len(self.log_sigmas) - 1)
        lo = t.floor().long().clamp(max=len(self.log_sigmas) - 2)
        w = t - lo.float()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]).exp()

    def forward(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        sigma = as_sigma_batch(sigma, x)
        eps = self.eps_net(sigma_to_vp(x, sigma), self.sigma_to_t(sigma), **cond)
        return x - sigma.reshape(-1, 1, 1, 1) * eps.to(x.dtype)


