"""generate(): options that change where sampling starts."""

import pytest
import torch

import kuosan
from tests.conftest import GaussianDenoiser


def test_mean_start_option_removes_the_start_bias_whatever_the_batch_size():
    # Data N(2, 1) per pixel, σ_max = 10: from σ_max·noise the samples' mean is off by m·s/√(s² + σ_max²) ≈ 0.199;
    # from the mean start by m·s³/(s² + σ_max²)^(3/2) ≈ 0.002 (tests/samplers: the exact flow map).
    data = GaussianDenoiser(mean=2.0, std=1.0)
    options = dict(size=4, sampler="unipc", steps=40, sigma_max=10.0, seed=1)
    plain = kuosan.generate(data, 500, **options)
    started = kuosan.generate(data, 500, mean_start=True, **options)
    noise_mean = torch.randn(500, 1, 4, 4, generator=torch.Generator().manual_seed(1)).mean().item()
    s = 1.0 / (1.0 + 100.0) ** 0.5  # the ODE's contraction s/√(s² + σ_max²)
    assert plain.mean().item() == pytest.approx(2.0 - 2.0 * s + 10.0 * s * noise_mean, abs=1e-3)
    assert started.mean().item() == pytest.approx(2.0 - 2.0 * s**3 + 10.0 * s * noise_mean, abs=1e-3)
    assert torch.allclose(kuosan.generate(data, 500, mean_start=True, batch_size=64, **options), started, atol=1e-6)
