"""Samplers: pure functions ``f(denoiser, x, sigmas, *, generator=None, callback=None, **options) -> x``.

``x`` enters as ``noise * sigmas[0]``, or as ``mean_start(denoiser, noise, sigmas[0])``, which adds the data
mean; ``sigmas`` is descending and ends with 0 (see ``kuosan.diffusion`` for ladders). ``callback`` receives
``dict(i=, x=, sigma=, denoised=)`` after each step. Extra keywords that are not a sampler's own options
(``class_labels`` …) are passed through to the denoiser.

| name              | kind          | order | denoiser calls for N steps |
|-------------------|---------------|-------|----------------------------|
| euler             | ODE (DDIM η=0)| 1     | N                          |
| heun              | ODE (+churn)  | 2     | 2N − 1                     |
| dpmpp_2m          | ODE multistep | 2     | N                          |
| ipndm             | ODE multistep | 4     | N                          |
| unipc             | ODE multistep, predictor-corrector | 3 | N              |
| euler_ancestral   | SDE (DDPM)    | 1     | N                          |
| dpmpp_2m_sde      | SDE multistep | 2     | N                          |

``tune_sigmas`` fits a ladder to one model for a deterministic sampler and a small budget (see its doc).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from kuosan.diffusion.ladders import karras_sigmas, knee_sigmas, loglinear_sigmas
from kuosan.samplers.common import mean_start
from kuosan.samplers.ode import dpmpp_2m, euler, heun, ipndm, unipc
from kuosan.samplers.sde import dpmpp_2m_sde, euler_ancestral
from kuosan.samplers.tuning import tune_sigmas


@dataclass(frozen=True)
class SamplerInfo:
    fn: Callable[..., Tensor]
    stochastic: bool
    order: int
    calls: Callable[[int], int]  # denoiser calls for N steps
    ladder: Callable[..., Tensor] = karras_sigmas  # the σ ladder recommended for it

    def steps_for(self, nfe: int) -> int:
        """The largest number of steps whose denoiser calls fit in ``nfe``."""
        steps = max(1, nfe)
        while steps > 1 and self.calls(steps) > nfe:
            steps -= 1
        return steps


_REGISTRY: dict[str, SamplerInfo] = {
    "euler": SamplerInfo(euler, False, 1, lambda n: n),
    "heun": SamplerInfo(heun, False, 2, lambda n: 2 * n - 1),
    # Multistep solvers in log σ do best with steps uniform in log σ (DPM-Solver's uniform-logSNR choice);
    # measured on the Gaussian-mixture benchmark (benchmarks/samplers.py), issue 3.
    "dpmpp_2m": SamplerInfo(dpmpp_2m, False, 2, lambda n: n, loglinear_sigmas),
    "ipndm": SamplerInfo(ipndm, False, 4, lambda n: n, loglinear_sigmas),
    # UniPC with the knee ladder is the most accurate per call on the mixture benchmark at 5–20 calls.
    "unipc": SamplerInfo(unipc, False, 3, lambda n: n, knee_sigmas),
    "euler_ancestral": SamplerInfo(euler_ancestral, True, 1, lambda n: n),
    "dpmpp_2m_sde": SamplerInfo(dpmpp_2m_sde, True, 2, lambda n: n, loglinear_sigmas),
}


def available() -> list[str]:
    return list(_REGISTRY)


def info(name: str) -> SamplerInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(_REGISTRY)}") from None


def get(name: str) -> Callable[..., Tensor]:
    return info(name).fn


def recommended_sigmas(name: str, nfe: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """The σ ladder kuosan recommends for ``name`` within ``nfe`` denoiser calls: Karras ρ = 7 (EDM) for
    euler, heun and euler_ancestral; uniform in log σ for the other multistep solvers; for unipc one step
    from σ_max to σ = 5, then uniform in log σ down to 0.005 (``knee_sigmas``)."""
    if nfe < 1:
        raise ValueError(f"nfe must be at least 1, got {nfe}")
    sampler = info(name)
    return sampler.ladder(sampler.steps_for(nfe), sigma_min, sigma_max)


__all__ = ["available", "get", "info", "mean_start", "recommended_sigmas", "tune_sigmas", "SamplerInfo",
           "euler", "heun", "dpmpp_2m", "ipndm", "unipc", "euler_ancestral", "dpmpp_2m_sde"]
