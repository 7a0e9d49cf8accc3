"""The EDM training loss (Karras et al. 2022, §5 and Table 1)."""

from __future__ import annotations

import torch
from torch import Tensor


class EDMLoss:
    """Per-sample weighted denoising loss λ(σ)·mean‖D(x0 + σn; σ) − x0‖² with ln σ ~ N(P_mean, P_std²).

    λ(σ) = (σ² + σ_data²)/(σ·σ_data)² makes the effective target of the raw network unit-variance at every
    σ. Returns one value per sample (shape [B]) so callers can weight or mask samples.
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5):
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)
        self.sigma_data = float(sigma_data)

    def sample_sigmas(self, batch: int, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(batch, generator=generator, device=device)
        return (self.p_mean + self.p_std * z).exp()

    def weight(self, sigma: Tensor) -> Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def __call__(self, denoiser, x0: Tensor, generator: torch.Generator | None = None,
                 sigma: Tensor | None = None, noise: Tensor | None = None, **cond) -> Tensor:
        """σ and then n are drawn from ``generator`` unless given (a distributed trainer draws them for the
        global batch and passes each process its share)."""
        if sigma is None:
            sigma = self.sample_sigmas(x0.shape[0], x0.device, generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x0_hat = denoiser(x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma, **cond)
        per_sample = (x0_hat.float() - x0.float()).pow(2).flatten(1).mean(1)
        return self.weight(sigma) * per_sample



def _sure_setup(y: Tensor, sigma: float, generator, epsilon: float,
                mask: Tensor | None) -> tuple[Tensor, float, Tensor, Tensor | float]:
    """The probe b (zero outside the mask), the step ε, the σ batch, and the number of pixels counted."""
    probe = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    count: Tensor | float = float(y.numel())
    if mask is not None:
        weight = mask.to(y.dtype).expand_as(y)
        count = weight.sum()
        if count.item() == 0:
            raise ValueError("SURE's mask leaves no pixel to estimate the error on")
        probe = probe * weight
    return probe, epsilon * sigma, torch.full((y.shape[0],), sigma, device=y.device, dtype=y.dtype), count


def _sure_fit_term(y: Tensor, estimate: Tensor, probe: Tensor, sigma: float, step: float, count,
                   mask: Tensor | None) -> Tensor:
    """The part of SURE that depends on D(y): mean((y − D(y))²) − σ² − 2σ²·mean(b·D(y))/ε."""
    residual = (y - estimate).pow(2)
    if mask is not None:
        residual = residual * mask.to(y.dtype)
    return residual.sum() / count - sigma**2 - 2 * sigma**2 * (probe * estimate).sum() / (step * count)


def _sure_probe_term(nudged: Tensor, probe: Tensor, sigma: float, step: float, count) -> Tensor:
    """The part that depends on D(y + εb): 2σ²·mean(b·D(y + εb))/ε."""
    return 2 * sigma**2 * (probe * nudged).sum() / (step * count)


def sure(denoiser, y: Tensor, sigma: float, *, generator: torch.Generator | None = None,
         epsilon: float = 1e-3, mask: Tensor | None = None, **cond) -> Tensor:
    """Stein's unbiased risk estimate of ``denoiser`` at σ for one noisy batch y = x0 + σ·n (n white, unit):
    an estimate of mean((D(y; σ) − x0)²) that needs no x0 (Stein 1981),

        SURE = mean((y − D(y))²) − σ² + 2σ²·div D(y) / N,

    the divergence by Monte Carlo (Ramani, Blu & Unser 2008): bᵀ(D(y + εb) − D(y))/ε with b ~ N(0, I) and
    ε = ``epsilon``·σ, exact in expectation for a locally linear D. Differentiable, so a denoiser's parameters can
    be fitted to a noisy image by minimising it (``sure_backward`` does so in half the memory). Run D in float32:
    bf16 rounding would swamp the ε-sized difference.

    ``mask`` (broadcastable to y, true where the noise model holds) restricts the estimate to those pixels: the
    squared residual is summed over them, the probe is zero elsewhere (so the divergence is that of those
    pixels' outputs with respect to their own inputs), and the mean is over them. The error of D on those
    pixels is what it estimates. It is for pixels whose noise is not N(0, σ²), where SURE would be biased: those
    clipped at the ends of an 8-bit image's range, say."""
    probe, step, sigmas, count = _sure_setup(y, sigma, generator, epsilon, mask)
    estimate = denoiser(y, sigmas, **cond)
    nudged = denoiser(y + step * probe, sigmas, **cond)
    return (_sure_fit_term(y, estimate, probe, sigma, step, count, mask)
            + _sure_probe_term(nudged, probe, sigma, step, count))


def sure_backward(denoiser, y: Tensor, sigma: float, *, generator: torch.Generator | None = None,
                  epsilon: float = 1e-3, mask: Tensor | None = None, **cond) -> float:
    """``sure(...)``'s value, its gradient accumulated into the parameters' ``.grad`` as ``sure(...).backward()``
    would, but in two backward passes, one per network evaluation: SURE is a sum of a term in D(y) and one in
    D(y + εb), so each evaluation's graph is freed before the next is built (half the peak memory)."""
    probe, step, sigmas, count = _sure_setup(y, sigma, generator, epsilon, mask)
    fit = _sure_fit_term(y, denoiser(y, sigmas, **cond), probe, sigma, step, count, mask)
    fit.backward()
    nudged = _sure_probe_term(denoiser(y + step * probe, sigmas, **cond), probe, sigma, step, count)
    nudged.backward()
    return fit.item() + nudged.item()
