"""GainTuning (kuosan.tasks.adapt): fitted gains on exact examples, the network left alone, and the API."""

import numpy as np
import pytest
import torch

import kuosan
from kuosan.tasks.adapt import gain_tune
from kuosan.tasks.restore import adapt_prior
from tests.tasks.test_tiling_and_color import local_denoiser


class OneConv(torch.nn.Module):
    """D(y) = conv1×1(y) with weight 1 and bias 0: gain-tuned it becomes the Wiener filter g·y (+ g·0)."""

    sigma_min, sigma_max, channels = 0.002, 80.0, 1

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(0.0)

    def forward(self, y, sigma):
        return self.conv(y)


def test_gain_tuning_finds_the_wiener_gain_for_gaussian_data_and_leaves_the_network_alone():
    g = torch.Generator().manual_seed(0)
    s, sigma = 0.5, 0.5                                   # Wiener gain s²/(s² + σ²) = 0.5
    y = s * torch.randn(1, 1, 128, 128, generator=g) + sigma * torch.randn(1, 1, 128, 128, generator=g)
    net = OneConv()
    tuned = gain_tune(net, y, sigma, steps=300, lr=1e-2)
    assert tuned.conv.weight.item() == pytest.approx(0.5, abs=0.03)
    assert net.conv.weight.item() == 1.0                  # the original is untouched
    assert not tuned.conv._forward_hooks                   # gains folded into the weights
    assert not any(p.requires_grad for p in tuned.parameters())


def test_gain_tuning_lowers_the_true_error_of_a_trained_prior():
    """builtin:photo on a synthetic picture unlike its photos (soft shapes and ramps): SURE-fitted gains lower
    the true MSE, which the fit never saw."""
    yy, xx = np.mgrid[:96, :96] / 96.0
    clean = 0.3 * xx + 0.2 * np.sin(9 * yy) + 0.4 * (((xx - 0.5) ** 2 + (yy - 0.4) ** 2) < 0.08)
    x0 = torch.from_numpy(clean * 2 - 1).float()[None, None]
    sigma = 2 * 25 / 255
    y = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    prior = kuosan.load("builtin:photo")
    with torch.no_grad():
        before = (prior(y, sigma) - x0).pow(2).mean().item()
        after = (adapt_prior(prior, y, sigma, steps=8)(y, sigma) - x0).pow(2).mean().item()
    assert after < 0.985 * before         # measured: 0.973 (+0.12 dB)


def test_denoise_adapt_runs_on_colour_and_rejects_bad_requests(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    prior = local_denoiser(1, guided=True)
    weights = {k: v.clone() for k, v in prior.state_dict().items()}
    out = kuosan.denoise(image, 20, model=prior, adapt=2, precision="fp32")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert all(torch.equal(weights[k], v) for k, v in prior.state_dict().items())   # caller's model kept
    plain = kuosan.denoise(image, 20, model=prior, precision="fp32")
    assert not np.array_equal(out, plain)
    with pytest.raises(kuosan.KuosanError, match="adapt"):
        kuosan.denoise(image, 20, model=prior, adapt=2, mode="sample")
    with pytest.raises(kuosan.KuosanError, match="adapt"):
        kuosan.denoise(image, 20, model=prior, adapt=-1)
