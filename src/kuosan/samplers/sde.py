"""Stochastic samplers: they inject fresh noise each step, so different generators give different samples."""

from __future__ import annotations

import torch
from torch import Tensor

from kuosan.samplers.common import Callback, denoise, report


def ancestral_split(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step σ → σ_next into a deterministic move to σ_down and fresh noise of std σ_up.

    σ_up = η·√(σ_next²(σ² − σ_next²)/σ²) and σ_down = √(σ_next² − σ_up²), so that the marginal
    at σ_next is exact for the true denoiser; η = 1 is DDPM's posterior (ancestral) sampling.
    """
    if sigma_next == 0:
        return sigma_next, sigma_next
    sigma_up = torch.clamp(eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt(), max=sigma_next)
    return (sigma_next**2 - sigma_up**2).sqrt(), sigma_up


def euler_ancestral(denoiser, x: Tensor, sigmas: Tensor, *, generator: torch.Generator | None = None,
                    callback: Callback | None = None, eta: float = 1.0, **cond) -> Tensor:
    """Euler ancestral sampling: an Euler step to σ_down, then noise of std σ_up (see ``ancestral_split``).

    With η = 1 each step samples DDPM's posterior q(x_{σ_next} | x_σ, x0 = D(x; σ)) (Ho et al. 2020);
    η = 0 reduces to ``euler``. Order 1 (weak). Denoiser calls: N for N steps.
    """
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        x0 = denoise(denoiser, x, sigma, cond)
        sigma_down, sigma_up = ancestral_split(sigma, sigmas[i + 1], eta)
        x = x + (sigma_down - sigma) * (x - x0) / sigma
        if sigma_up > 0:
            x = x + sigma_up * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        report(callback, i, x, sigma, x0)
    return x


def dpmpp_2m_sde(denoiser, x: Tensor, sigmas: Tensor, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None, eta: float = 1.0, **cond) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, §4 "SDE-DPM-Solver++2M"), midpoint form, data prediction.

    Exact integration of the linear part of the reverse SDE with noise fraction ``eta`` (1 = the reverse
    SDE, 0 = the ODE solver ``dpmpp_2m`` with a different 2nd-order correction). With h = log(σ_i/σ_{i+1}):
    x ← (σ_{i+1}/σ_i)·e^{−ηh}·x + (1 − e^{−(1+η)h})·D_i + c·(D_i − D_{i−1}) + σ_{i+1}·√(1 − e^{−2ηh})·z.
    The step onto σ = 0 returns D. Order 2 (weak). Denoiser calls: N for N steps.
    """
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0:
            x = x0
        else:
            h = (sigma / sigma_next).log()
            eta_h = eta * h
            x = (sigma_next / sigma) * (-eta_h).exp() * x - torch.expm1(-h - eta_h) * x0
            if x0_prev is not None:
                r = h_prev / h
                x = x - 0.5 * torch.expm1(-h - eta_h) * (x0 - x0_prev) / r
            if eta > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + sigma_next * (-torch.expm1(-2 * eta_h)).sqrt() * noise
            x0_prev, h_prev = x0, h
        report(callback, i, x, sigma, x0)
    return x
