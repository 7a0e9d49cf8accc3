"""tune_sigmas: a σ ladder fitted to one model from its own accurate ODE solutions."""

import math

import pytest
import torch

from kuosan import samplers
from kuosan.diffusion.ladders import loglinear_sigmas
from kuosan.diffusion.mixture import GaussianMixture
from kuosan.samplers.tuning import tune_sigmas


def test_euler_on_a_gaussian_finds_the_best_middle_level(gaussian):
    # Euler from σ to σ' on N(m, s²) scales x − m by (s² + σσ')/(s² + σ²), and the last step (σ₂ → 0) by
    # s²/(s² + σ₂²); the exact flow scales it by s/√(s² + σ_max²). With 3 steps the lowest level stays at σ_min
    # (it may only move down), so the best middle level σ₁ is the one whose product is nearest the exact one.
    s, top, low = gaussian.std, gaussian.sigma_max, gaussian.sigma_min
    grid = torch.logspace(math.log10(low * 1.01), math.log10(top * 0.99), 200_001, dtype=torch.float64)
    product = (s**2 + top * grid) / (s**2 + top**2) * (s**2 + grid * low) / (s**2 + grid**2) * s**2 / (s**2 + low**2)
    best = float(grid[(product - s / math.sqrt(s**2 + top**2)).abs().argmin()])
    z = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ladder = tune_sigmas(gaussian, "euler", z, 3)
    assert ladder.shape == (4,) and ladder[0] == top and ladder[-1] == 0
    assert float(ladder[2]) == pytest.approx(low, rel=1e-5)
    assert abs(math.log(float(ladder[1]) / best)) < 0.04


@pytest.mark.parametrize(("name", "nfe"), [("unipc", 7), ("heun", 7), ("dpmpp_2m", 4)])
def test_a_tuned_ladder_fits_the_budget_and_the_model_range(name, nfe, gaussian):
    z = torch.randn(32, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ladder = tune_sigmas(gaussian, name, z, nfe, max_evaluations=30)
    gaussian.calls = 0
    samplers.get(name)(gaussian, z * ladder[0], ladder)
    assert gaussian.calls <= nfe
    assert ladder[0] == gaussian.sigma_max and ladder[-1] == 0
    assert (ladder[:-1] >= gaussian.sigma_min * (1 - 1e-6)).all() and (ladder.diff() < 0).all()


def test_stochastic_samplers_are_refused(gaussian):
    with pytest.raises(ValueError, match="deterministic"):
        tune_sigmas(gaussian, "euler_ancestral", torch.randn(4, 1, 1, 1), 5)


def test_on_narrow_modes_a_tuned_ladder_strands_fewer_samples_between_modes_on_fresh_noise():
    # Four modes of width s = 0.05 on a ring: with 6 calls the recommended ladder leaves samples between modes.
    # The ladder is tuned on 2048 draws and judged on 8000 others against the exact ODE endpoints.
    angles = torch.arange(4) * (math.pi / 2)
    mixture = GaussianMixture(torch.stack([angles.cos(), angles.sin()], 1) * 1.5, [0.05] * 4, [0.4, 0.3, 0.2, 0.1])
    tuned = tune_sigmas(mixture, "unipc", torch.randn(2048, 2, 1, 1, generator=torch.Generator().manual_seed(1)), 6,
                        max_evaluations=100, reference_steps=128)
    noise = torch.randn(8000, 2, 1, 1, generator=torch.Generator().manual_seed(2))
    exact = samplers.unipc(mixture, noise * 80, loglinear_sigmas(128, 0.002, 80.0))

    def errors(ladder):
        out = samplers.unipc(mixture, noise * ladder[0], ladder).reshape(-1, 1, 2).double()
        stranded = (out - mixture.means[None]).norm(dim=2).min(1).values > 4 * 0.05
        return float((out[:, 0] - exact.reshape(-1, 2)).norm(dim=1).median()), float(stranded.float().mean())

    median_tuned, stranded_tuned = errors(tuned)
    median_default, stranded_default = errors(samplers.recommended_sigmas("unipc", 6))
    # Measured: median error 0.028 vs 0.093, stranded 0.025 % vs 2.6 %.
    assert median_tuned < median_default / 2
    assert stranded_tuned < stranded_default / 10
