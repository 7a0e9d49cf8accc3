import math

import pytest
import torch

from kuosan.diffusion import ClassifierFreeGuidance, EDMLoss
from tests.conftest import GaussianDenoiser


def test_loss_sigma_distribution_is_lognormal():
    loss = EDMLoss(p_mean=-1.2, p_std=1.2)
    log_sigma = loss.sample_sigmas(200_000, generator=torch.Generator().manual_seed(0)).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.01)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 5.0])
def test_loss_of_the_exact_denoiser_matches_the_analytic_value(sigma):
    """For x0 ~ N(m, s²) the optimal D leaves a per-pixel MSE of s²σ²/(s²+σ²)."""
    s = 0.5
    exact = GaussianDenoiser(mean=0.1, std=s)
    g = torch.Generator().manual_seed(0)
    x0 = 0.1 + s * torch.randn(4000, 1, 4, 4, generator=g)
    fn = EDMLoss(sigma_data=0.5)
    per_sample = fn(exact, x0, generator=g, sigma=torch.full((4000,), sigma))
    assert per_sample.shape == (4000,)
    expected = fn.weight(torch.tensor(sigma)) * s**2 * sigma**2 / (s**2 + sigma**2)
    assert per_sample.mean().item() == pytest.approx(expected.item(), rel=0.02)
    # With σ_data = s the weighting makes that optimum exactly 1 at every σ.
    assert expected.item() == pytest.approx(1.0)


class LabelShift:
    """A denoiser whose output reveals its label: x·0 + label (−1 = unconditional → 0)."""

    sigma_min, sigma_max, channels = 0.002, 80.0, 1

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        if class_labels is None:
            class_labels = torch.full((x.shape[0],), -1)
        value = torch.where(class_labels < 0, 0.0, class_labels.float() + 1)
        return torch.zeros_like(x) + value.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5])
def test_classifier_free_guidance_extrapolates_from_unconditional(scale):
    inner = LabelShift()
    guided = ClassifierFreeGuidance(inner, scale)
    labels = torch.tensor([0, 3])
    out = guided(torch.zeros(2, 1, 2, 2), torch.ones(2), class_labels=labels)
    expected = scale * (labels.float() + 1)  # uncond = 0, cond = label + 1
    torch.testing.assert_close(out[:, 0, 0, 0], expected)
    assert inner.calls == 1  # both branches in one batched call
    assert math.isclose(guided.sigma_max, 80.0)
