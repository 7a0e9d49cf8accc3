"""σ ladders for sampling: ``f(n, sigma_min, sigma_max, ...) -> Tensor[n + 1]``, descending, ending in 0.

A sampler takes ``len(sigmas) - 1`` steps, from ``sigmas[0]`` down to exactly 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _finish(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas.to(torch.float64), sigmas.new_zeros(1, dtype=torch.float64)]).float()


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if n < 1:
        raise ValueError(f"a σ ladder needs at least 1 step, got n={n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """EDM eq. 5: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then 0."""
    _check(n, sigma_min, sigma_max)
    if n == 1:
        return _finish(torch.tensor([sigma_max], dtype=torch.float64))
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + ramp * (lo - hi)) ** rho)


def loglinear_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """σ uniform in log σ from σ_max to σ_min (uniform steps in the DPM-Solver time t = −log σ), then 0."""
    _check(n, sigma_min, sigma_max)
    if n == 1:
        return _finish(torch.tensor([sigma_max], dtype=torch.float64))
    return _finish(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def knee_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, knee: float = 5.0,
                floor: float = 0.005, max_ratio: float = 4.6) -> Tensor:
    """One step from σ_max down to ``knee``, then uniform in log σ from there down to the lowest level, then 0.

    For few-step multistep solvers. Above ~10·σ_data the denoiser barely depends on σ, and an exponential
    integrator crosses that range in one step almost exactly; the levels saved go where the samples take
    shape. The lowest level is max(σ_min, ``floor``, knee / max_ratio^(n−2)): the floor keeps the budget off σ
    levels too small to change an 8-bit image (0.005 model units = 0.6/255), and with very few levels the
    ladder stops higher rather than take steps larger than ``max_ratio`` in σ (5 levels: lowest 0.05).
    Chosen on the Gaussian-mixture benchmark (``benchmarks/samplers.py``). On the built-in digits model with
    unipc (500 samples) it is as good as uniform-in-log σ at 10 calls (FD 25.5 vs 25.0) and much better at 5
    (FD 23.8 vs 31.5) (issue 3).
    """
    _check(n, sigma_min, sigma_max)
    low = max(sigma_min, floor, knee / max_ratio ** max(n - 2, 0))
    if sigma_max <= knee or n <= 2 or low >= knee:
        return loglinear_sigmas(n, min(max(sigma_min, floor), sigma_max * 0.999), sigma_max)
    rest = torch.linspace(math.log(knee), math.log(low), n - 1, dtype=torch.float64).exp()
    return _finish(torch.cat([torch.tensor([sigma_max], dtype=torch.float64), rest]))


def vp_sigmas(n: int, sigma_min: float | None = None, sigma_max: float | None = None,
              beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-3) -> Tensor:
    """The ladder DDPM's linear β schedule implies (Song et al. 2021 VP-SDE; EDM Table 1 "VP").

    DDPM's β_t = linspace(1e-4, 0.02, 1000) is the discretisation of β(t) = β_min + t(β_max − β_min),
    t ∈ [0, 1], giving σ(t) = √(exp(½β_d t² + β_min t) − 1). Steps are uniform in t between t(σ_max) and
    t(σ_min); by default t runs from 1 to ``eps_t`` as in the VP-SDE sampler.
    """
    beta_d = beta_max - beta_min

    def sigma_of(t: Tensor) -> Tensor:
        return torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt()

    def t_of(sigma: float) -> float:  # root of ½β_d t² + β_min t − ln(1+σ²) = 0
        c = math.log1p(sigma**2)
        return (-beta_min + math.sqrt(beta_min**2 + 2 * beta_d * c)) / beta_d

    t_hi = 1.0 if sigma_max is None else t_of(sigma_max)
    t_lo = eps_t if sigma_min is None else t_of(sigma_min)
    _check(n, float(sigma_of(torch.tensor(t_lo))), float(sigma_of(torch.tensor(t_hi))))
    return _finish(sigma_of(torch.linspace(t_hi, t_lo, n, dtype=torch.float64)))


def cosine_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, s: float = 0.008) -> Tensor:
    """The ladder of the cosine schedule (Nichol & Dhariwal 2021): ᾱ(t) = cos²(π/2·(t+s)/(1+s))/ᾱ(0).

    σ(t) = √(1/ᾱ(t) − 1); steps are uniform in t between t(σ_max) and t(σ_min).
    """
    _check(n, sigma_min, sigma_max)
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2

    def t_of(sigma: float) -> float:
        alpha_bar = 1 / (1 + sigma**2)
        return math.acos(math.sqrt(alpha_bar * f0)) * 2 / math.pi * (1 + s) - s

    t = torch.linspace(t_of(sigma_max), t_of(sigma_min), n, dtype=torch.float64)
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / f0
    return _finish((1 / alpha_bar - 1).sqrt())


def ddpm_alphas_cumprod(num_timesteps: int = 1000, schedule: str = "linear",
                        beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """ᾱ_t for t = 0..T−1 of a discrete DDPM schedule ("linear" as in Ho et al. 2020, or "cosine")."""
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    elif schedule == "cosine":
        s = 0.008
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"unknown DDPM schedule {schedule!r}; use 'linear' or 'cosine'")
    return torch.cumprod(1 - betas, dim=0)
