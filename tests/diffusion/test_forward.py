import math

import pytest
import torch

from kuosan.diffusion import add_noise, alpha_bar_to_sigma, sigma_to_alpha_bar, sigma_to_vp, vp_to_sigma


@pytest.mark.parametrize("sigma", [0.0, 0.1, 1.0, 10.0])
def test_noised_variance_is_data_variance_plus_sigma_squared(sigma):
    g = torch.Generator().manual_seed(0)
    sigma_data = 0.5
    x0 = torch.randn(200_000, 1, 1, 1, generator=g) * sigma_data
    xs = add_noise(x0, sigma, generator=g)
    expected = sigma_data**2 + sigma**2
    assert xs.var().item() == pytest.approx(expected, rel=0.01)


def test_per_sample_sigma_broadcasts_over_pixels():
    x0 = torch.zeros(3, 2, 4, 4)
    noise = torch.ones_like(x0)
    out = add_noise(x0, torch.tensor([0.0, 1.0, 2.0]), noise=noise)
    assert torch.equal(out[:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))


def test_vp_and_sigma_forms_describe_the_same_noisy_image():
    g = torch.Generator().manual_seed(1)
    x0, n = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    alpha_bar = torch.tensor([0.9, 0.5, 0.1, 0.01])
    sigma = alpha_bar_to_sigma(alpha_bar)
    ab = alpha_bar.reshape(-1, 1, 1, 1)
    x_vp = ab.sqrt() * x0 + (1 - ab).sqrt() * n
    x_sigma = add_noise(x0, sigma, noise=n)
    torch.testing.assert_close(sigma_to_vp(x_sigma, sigma), x_vp)
    torch.testing.assert_close(vp_to_sigma(x_vp, sigma), x_sigma)
    torch.testing.assert_close(sigma_to_alpha_bar(sigma), alpha_bar)
    assert sigma[1].item() == pytest.approx(1.0)  # ᾱ = ½ ↔ σ = 1
    assert sigma[0].item() == pytest.approx(math.sqrt(0.1 / 0.9))
