"""Signal-dependent (Poisson–Gaussian) noise: the generalized Anscombe transform, its exact unbiased inverse, the
noise curve estimate, and denoising through them."""

import math

import numpy as np
import pytest
import torch

import kuosan
from kuosan.tasks.noise_level import NoiseCurve, _fit_curve, estimate_noise_curve
from kuosan.tasks.vst import GeneralizedAnscombe
from tests.tasks.test_noise_level import astronaut


def poisson_gaussian(clean: np.ndarray, gain: float, floor: float, seed: int = 0) -> np.ndarray:
    """A camera's noise on ``clean`` (0–255), saved as 8 bits: variance gain·x + floor, rounded and clipped."""
    rng = np.random.default_rng(seed)
    noisy = gain * rng.poisson(clean / gain) + math.sqrt(floor) * rng.standard_normal(clean.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def psnr(a, b) -> float:
    return float(10 * np.log10(255**2 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


CURVES = [(1.0, 0.0), (2.0, 4.0), (6.0, 4.0), (1.0, 100.0)]


def draws(curve, level, n=400_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.full((n,), level / curve[0], dtype=torch.float64), generator=g)
    return curve[0] * counts + math.sqrt(curve[1]) * torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("curve", CURVES, ids=[f"{g}x+{f}" for g, f in CURVES])
def test_the_transform_makes_the_noise_unit_variance_and_the_inverse_undoes_its_expectation(curve):
    """Monte Carlo, 400,000 draws per level: from 10 photons up the stabilised noise has variance 1 within 3 %, and
    the exact unbiased inverse gives back the clean level from E[f(z)] within 0.5 % (the algebraic inverse of f is
    biased dark by about a quarter of the gain)."""
    transform = GeneralizedAnscombe(NoiseCurve(*curve))
    for level in (10 * curve[0], 20.0, 60.0, 128.0, 240.0):
        z = draws(curve, level)
        f = transform.forward(z)
        assert float(f.var()) == pytest.approx(1.0, abs=0.03)
        assert float(transform.inverse(f.mean())) == pytest.approx(level, rel=0.005)
        algebraic = (transform.curve.gain * f.mean() ** 2 / 4 - 0.375 * curve[0] - curve[1] / curve[0])
        assert float(level - algebraic) > 0.15 * curve[0]
    # darker than f of a dark pixel: nothing there
    assert float(transform.inverse(torch.tensor(0.5))) == 0.0


def test_model_units_keep_black_and_white_at_the_ends_and_sigma_is_the_stabilised_noise():
    transform = GeneralizedAnscombe(NoiseCurve(2.0, 4.0))
    ends = transform.to_model(torch.tensor([-1.0, 1.0]))
    assert torch.allclose(ends, torch.tensor([-1.0, 1.0]), atol=1e-6)
    z = draws((2.0, 4.0), 128.0)
    stabilised = transform.to_model(z / 127.5 - 1)
    assert float(stabilised.std()) == pytest.approx(transform.sigma, rel=0.02)
    assert float(transform.from_model(stabilised.mean()[None])) == pytest.approx(128 / 127.5 - 1, abs=2e-3)
    with pytest.raises(ValueError, match="gain > 0"):
        GeneralizedAnscombe(NoiseCurve(0.0, 4.0))
    with pytest.raises(ValueError, match="gain ≥ 0"):
        NoiseCurve(-1.0, 4.0)


def test_the_fit_is_exact_on_a_line_and_keeps_gain_and_floor_non_negative():
    levels = torch.tensor([10.0, 60.0, 120.0, 200.0], dtype=torch.float64)
    fit = _fit_curve(levels, 2.0 * levels + 4.0)
    assert (fit.gain, fit.floor) == (pytest.approx(2.0), pytest.approx(4.0))
    falling = _fit_curve(levels, 300.0 - levels)       # no camera's: the best constant
    assert falling.gain == 0.0 and 100.0 < falling.floor < 290.0
    through_zero = _fit_curve(levels, 3.0 * levels - 5.0)     # floor < 0: a line through 0
    assert through_zero.floor == 0.0 and through_zero.gain == pytest.approx(3.0, rel=0.1)
    # one bin of eight read a third too low bends the curve by under 2 % elsewhere (Huber)
    levels = torch.linspace(40.0, 200.0, 8, dtype=torch.float64)
    variances = 8.0 * levels + 16.0
    variances[5] /= 2.2
    astray = _fit_curve(levels, variances)
    for level in (40.0, 120.0, 200.0):
        assert astray.sigma(level) == pytest.approx(math.sqrt(8.0 * level + 16.0), rel=0.02)


@pytest.mark.parametrize("gray", [True, False], ids=["gray", "rgb"])
@pytest.mark.parametrize("curve", [(2.0, 4.0), (6.0, 4.0), (0.0, 225.0)], ids=["2x+4", "6x+4", "white σ15"])
def test_the_noise_curve_is_read_within_ten_percent_where_the_photo_has_its_values(gray, curve):
    """Levels 50–200, where the photo has patches clear of black and white (its black background is clipped
    by the noise nearly everywhere, so nothing is read below ~40 and the curve is extrapolated there)."""
    clean = astronaut(gray)
    noisy = poisson_gaussian(clean, *curve) if curve[0] else np.clip(
        np.round(clean + 15 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    t = torch.from_numpy(noisy.astype(np.float64))
    estimate = estimate_noise_curve(t[None] if gray else t.permute(2, 0, 1), clip_range=(0, 255))
    for level in (50.0, 100.0, 150.0, 200.0):
        truth = math.sqrt(curve[0] * level + curve[1])
        assert estimate.sigma(level) == pytest.approx(truth, rel=0.10)


def test_denoising_a_cameras_noise_through_the_transform_beats_one_sigma_for_the_whole_photo():
    """The shipped astronaut crop (gray) with noise of variance 6·x + 4, saved as 8 bits (σ 2 in the shadows, 39
    at white): one σ for the whole photo, estimated (26.2), 28.77 dB; told the noise's RMS σ (28.9) instead,
    29.97; variance-stabilised with the curve estimated (5.96·x + 36), 30.87; with the true curve, 30.89."""
    clean = astronaut(gray=True)
    noisy = poisson_gaussian(clean, 6.0, 4.0)
    one_sigma = psnr(kuosan.denoise(noisy), clean)
    rms_told = psnr(kuosan.denoise(noisy, math.sqrt(float(np.mean(6.0 * clean + 4.0)))), clean)
    stabilised = psnr(kuosan.denoise(noisy, noise_curve="auto"), clean)
    assert stabilised > max(one_sigma + 1.5, rms_told + 0.6)
    assert psnr(kuosan.denoise(noisy, noise_curve=(6.0, 4.0)), clean) == pytest.approx(stabilised, abs=0.2)
    with pytest.raises(kuosan.KuosanError, match="not both"):
        kuosan.denoise(noisy, 10, noise_curve="auto")
    with pytest.raises(kuosan.KuosanError, match="noise_curve"):
        kuosan.denoise(noisy, noise_curve=(1.0,))


def test_a_small_image_gets_fewer_bins_and_a_flat_one_no_noise():
    g = torch.Generator().manual_seed(0)
    small = estimate_noise_curve(100 + 7 * torch.randn(1, 40, 40, generator=g, dtype=torch.float64))
    assert small.sigma(100.0) == pytest.approx(7.0, rel=0.15)      # 2 bins of 578 patches
    assert estimate_noise_curve(torch.full((1, 64, 64), 128.0, dtype=torch.float64)) == NoiseCurve(0.0, 0.0)
    flat = np.full((64, 64), 128, np.uint8)
    assert np.array_equal(kuosan.denoise(flat, noise_curve="auto"), flat)
