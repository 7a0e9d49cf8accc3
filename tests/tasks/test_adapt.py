"""GainTuning (kuosan.tasks.adapt): fitted gains on exact examples, the network left alone, and the API."""

import numpy as np
import pytest
import torch

import kuosan
from kuosan.diffusion.color import OpponentColorDenoiser
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


def test_checkpointed_fit_gives_the_same_gains_and_restores_the_switch():
    """Gradient checkpointing changes what is kept for the backward pass, not the gradients: the colour fit
    (three network passes per evaluation) ends at the same weights with it on or off."""
    y = 0.5 * torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    prior = local_denoiser(1, guided=True)
    fitted = adapt_prior(prior, y, 0.2, steps=3)
    plain = gain_tune(prior, y, 0.2, steps=3, wrap=lambda net: OpponentColorDenoiser(net))
    checkpointed = gain_tune(prior, y, 0.2, steps=3, wrap=lambda net: OpponentColorDenoiser(net),
                             checkpointing=True)
    assert not checkpointed.net.gradient_checkpointing and not prior.net.gradient_checkpointing
    changed = False
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=name)
        changed |= not torch.equal(a, prior.state_dict()[name])
    assert changed                                          # the fit did move the weights
    for a, b in zip(fitted.state_dict().values(), checkpointed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a)                    # adapt_prior checkpoints colour fits


def test_clearance_is_the_distance_to_the_ends_of_the_range_in_units_of_sigma():
    from kuosan.tasks.adapt import clearance

    estimate = torch.tensor([-1.0, -0.8, -0.7, -0.6, 0.0, 0.7])
    # σ = 0.1: 0 within 2σ of an end, 1 beyond 4σ, linear between
    torch.testing.assert_close(clearance(estimate, 0.1), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0, 0.5]))


def test_denoise_adapt_keeps_the_plain_result_near_black_and_white():
    """A clipped 8-bit image: where the unadapted result is within 2σ of black or white it is returned as is,
    elsewhere the adapted one is."""
    rng = np.random.default_rng(3)
    clean = np.full((48, 48), 128.0)
    clean[:, :16], clean[:, 32:] = 0.0, 255.0
    image = np.clip(np.round(clean + 25 * rng.standard_normal(clean.shape)), 0, 255).astype(np.uint8)
    prior = local_denoiser(1, guided=True)
    plain = kuosan.denoise(image, 25, model=prior, precision="fp32").astype(int)
    out = kuosan.denoise(image, 25, model=prior, adapt=3, precision="fp32").astype(int)
    near_ends = (plain <= 40) | (plain >= 215)       # 2σ = 50 levels, less a margin for rounding
    assert near_ends.sum() > 500
    assert np.array_equal(out[near_ends], plain[near_ends])
    assert not np.array_equal(out, plain)
