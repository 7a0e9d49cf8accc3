import pytest
import torch

from kuosan.diffusion.mixture import GaussianMixture
from tests.conftest import GaussianDenoiser


def test_one_component_is_the_gaussian_denoiser():
    mixture = GaussianMixture([[0.3]], [0.5], [1.0])
    x = torch.randn(6, 1, 1, 1) * 3
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 10.0, 80.0])
    torch.testing.assert_close(mixture(x, sigma), GaussianDenoiser(0.3, 0.5)(x, sigma))


def test_denoiser_is_the_posterior_mean_by_monte_carlo():
    """E[x0 | x_σ] estimated from exact joint samples in a thin slab around a point matches D."""
    mixture = GaussianMixture([[-1.0], [1.0]], [0.3, 0.2], [0.3, 0.7])
    g = torch.Generator().manual_seed(0)
    x0, _ = mixture.sample(2_000_000, g)
    sigma = 0.8
    xs = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for point in (-1.2, 0.0, 0.4, 1.5):
        near = (xs[:, 0] - point).abs() < 0.01
        mc = x0[near].mean().item()
        exact = mixture(torch.tensor([[point]], dtype=torch.float64), sigma).item()
        assert mc == pytest.approx(exact, abs=0.02)


def test_sampling_weights_and_assignment():
    mixture = GaussianMixture([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], [0.3, 0.3, 0.3], [2, 1, 1])
    x, components = mixture.sample(40_000, torch.Generator().manual_seed(1))
    counts = torch.bincount(components, minlength=3).double() / len(components)
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), atol=0.01, rtol=0)
    assert (mixture.assign(x) == components).double().mean() > 0.999
    assert mixture(x[:5], 1e-6).sub(x[:5]).abs().max() < 1e-5  # D → identity as σ → 0


def test_responsibilities_stay_finite_far_from_every_mode():
    mixture = GaussianMixture([[0.0], [1.0]], [0.01, 0.01], [0.5, 0.5])
    out = mixture(torch.tensor([[1e4], [-1e4]], dtype=torch.float64), torch.tensor([0.001, 0.001]))
    assert torch.isfinite(out).all()


def test_mode_statistics_of_exact_samples():
    mixture = GaussianMixture([[0.0, 0.0], [5.0, 0.0]], [0.2, 0.5], [3, 1])
    x, _ = mixture.sample(20_000, torch.Generator().manual_seed(2))
    weights, spreads = mixture.mode_statistics(x)
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.25], dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(spreads, torch.ones(2, dtype=torch.float64), atol=0.02, rtol=0)
    _, spreads = mixture.mode_statistics(x[:3], min_members=10)
    assert torch.isnan(spreads).all()
