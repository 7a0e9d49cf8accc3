"""The blind noise estimator on a real photo (the astronaut crop shipped for the demo) and flat images."""

from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.tasks.noise_level import estimate_noise_sigma


def astronaut(gray: bool) -> np.ndarray:
    with resources.files("kuosan.data.builtin").joinpath("astronaut.png").open("rb") as f:
        im = Image.open(f).convert("L" if gray else "RGB")
        return np.asarray(im, dtype=np.float64)


@pytest.mark.parametrize("gray", [True, False], ids=["gray", "rgb"])
@pytest.mark.parametrize("sigma", [5, 10, 15, 25, 50])
def test_within_ten_percent_on_a_clean_photo_with_added_noise(gray, sigma):
    clean = astronaut(gray)
    noisy = clean + sigma * np.random.default_rng(sigma).standard_normal(clean.shape)
    t = torch.from_numpy(noisy)
    t = t if gray else t.permute(2, 0, 1)
    assert abs(estimate_noise_sigma(t) / sigma - 1) < 0.10


def test_exact_on_pure_noise_and_near_zero_on_a_smooth_image():
    noise = 7.0 * torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert estimate_noise_sigma(noise) == pytest.approx(7.0, rel=0.03)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    assert estimate_noise_sigma(100 * (xx + yy**2)) < 0.5


def test_too_small_an_image_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        estimate_noise_sigma(torch.zeros(8, 8))


def test_sampled_patches_are_unfolds_patches_and_a_large_image_gives_the_same_estimate():
    from kuosan.tasks.noise_level import _patches

    x = torch.randn(3, 30, 41, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    all_cols, all_energy = _patches(x, 7)
    positions = torch.tensor([0, 5, 34, 35, 200, all_cols.shape[0] - 1])
    cols, energy = _patches(x, 7, positions)
    assert torch.equal(cols, all_cols[positions]) and torch.equal(energy, all_energy[positions])
    # Above max_patches only the drawn patches are gathered; the estimate is the one from all of them drawn alike.
    noisy = torch.from_numpy(astronaut(True) + 20 * np.random.default_rng(0).standard_normal((256, 256)))
    assert abs(estimate_noise_sigma(noisy, max_patches=20_000) / 20 - 1) < 0.10


@pytest.mark.parametrize("gray", [True, False], ids=["gray", "rgb"])
@pytest.mark.parametrize("sigma", [5, 15, 25, 50, 75])
def test_within_ten_percent_on_an_8_bit_photo_whose_noise_is_clipped_at_black_and_white(gray, sigma):
    clean = astronaut(gray)
    noisy = np.round(np.clip(clean + sigma * np.random.default_rng(sigma).standard_normal(clean.shape), 0, 255))
    t = torch.from_numpy(noisy)
    t = t if gray else t.permute(2, 0, 1)
    estimate = estimate_noise_sigma(t, clip_range=(0, 255))
    assert abs(estimate / sigma - 1) < 0.10
    if sigma >= 50:     # the clip-free patches' truncated noise is accounted for (without: −5 % to −22 %)
        assert abs(estimate / sigma - 1) < 0.04
    if sigma >= 15:     # over all patches the clipped noise reads weaker: what leaving them out corrects
        naive = estimate_noise_sigma(t)
        assert naive < estimate and abs(estimate - sigma) < 0.6 * abs(naive - sigma)


def test_clipped_marks_the_values_at_either_end_and_leaving_their_patches_out_changes_nothing_without_any():
    from kuosan.tasks.noise_level import clipped

    y = torch.tensor([[[-1.0, 0.3, 1.0], [0.0, 0.999, -0.5]]])
    assert clipped(y).tolist() == [[[True, False, True], [False, False, False]]]
    assert clipped(y.clamp(-0.9, 0.9)) is None and clipped(y, None) is None
    noisy = torch.from_numpy(astronaut(False) + 10 * np.random.default_rng(0).standard_normal((256, 256, 3)))
    noisy = noisy.permute(2, 0, 1)
    assert estimate_noise_sigma(noisy, clip_range=(-1e9, 1e9)) == estimate_noise_sigma(noisy)


def test_where_few_patches_escape_clipping_all_are_kept_and_their_noise_taken_as_censored(monkeypatch):
    """The astronaut mirrored out to 768², dimmed to 70 %, σ = 75 in 8 bits: 0.3 % of the 7×7 patches hold no
    clipped value, those whose noise happened to point inwards; leaving the rest out reads −16 %."""
    from kuosan.tasks import noise_level

    a = astronaut(True)
    big = 0.7 * np.block([[a, a[:, ::-1], a], [a[::-1], a[::-1, ::-1], a[::-1]], [a, a[:, ::-1], a]])
    noisy = np.round(np.clip(big + 75 * np.random.default_rng(75).standard_normal(big.shape), 0, 255))
    t = torch.from_numpy(noisy)[None]
    assert abs(estimate_noise_sigma(t, clip_range=(0, 255)) / 75 - 1) < 0.04
    monkeypatch.setattr(noise_level, "CLIP_FREE_SHARE", 0.0)
    assert estimate_noise_sigma(t, clip_range=(0, 255)) / 75 - 1 < -0.10


def test_clipped_noise_moments_are_those_of_draws_truncated_to_or_clipped_at_the_range():
    """The sd and mean of level + σ·n seen through clipping to [0, 1], given it fell inside (truncated) or
    clipped (censored), against 400,000 draws at levels inside, near and beyond the ends."""
    from kuosan.tasks.noise_level import _clipped_moments

    level = torch.tensor([0.5, 0.05, 0.97, 1.1, -0.2], dtype=torch.float64)
    sigma = torch.tensor(0.2, dtype=torch.float64)
    v = level[:, None] + sigma * torch.randn(5, 400_000, generator=torch.Generator().manual_seed(0),
                                             dtype=torch.float64)
    for truncated in (True, False):
        sd, mean = _clipped_moments(level, sigma, (0.0, 1.0), torch.tensor(truncated))
        for i in range(5):
            seen = v[i][(v[i] > 0) & (v[i] < 1)] if truncated else v[i].clamp(0, 1)
            assert float(mean[i]) == pytest.approx(float(seen.mean()), abs=4 * float(seen.std()) / len(seen)**0.5)
            assert float(sd[i]) == pytest.approx(float(seen.std()), rel=0.01)
        assert torch.all(sd < sigma)                          # clipping only ever hides noise


def test_an_image_with_values_beyond_the_range_was_not_clipped_to_it():
    from kuosan.tasks.noise_level import clipped

    y = torch.tensor([-1.0, 0.2, 1.0, 1.3])
    assert clipped(y) is None and clipped(y[:3]).tolist() == [True, False, True]


def test_fill_clipped_puts_each_clipped_value_at_the_mean_of_the_values_clipped_there():
    """Clean values near white, near black and mid-gray, Gaussian noise σ = 0.2, clipped to [-1, 1]: given the
    clean value, each clipped pixel is filled with E[v | v beyond the end], the mean of the noisy values that
    were clipped there (a truncated normal's mean, checked against 200,000 draws), and nothing else changes."""
    from kuosan.tasks.noise_level import clipped, fill_clipped

    sigma, n = 0.2, 200_000
    x = torch.tensor([0.9, -0.85, 0.0]).repeat_interleave(n)
    v = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    y = v.clamp(-1.0, 1.0)
    filled = fill_clipped(y, x, sigma)
    ends = clipped(y)
    assert torch.equal(filled[~ends], y[~ends]) and not ends[2 * n:].any()
    for value, end in ((0.9, 1.0), (-0.85, -1.0)):
        at = ends & (x == value)
        drawn = v[at].double()
        assert at.sum() > 0.2 * n and torch.allclose(filled[at], filled[at][:1])
        assert abs(float(filled[at][0]) - float(drawn.mean())) < 3 * float(drawn.std()) / float(at.sum()) ** 0.5
        assert (filled[at][0] - end) * end > 0                   # beyond the end, on its side
    # Far in the tail (an estimate 100σ from the end it was clipped at) the fill is finite, just past the end.
    far = fill_clipped(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]), 0.01)
    assert torch.all(far.abs() > 1.0) and torch.all(far.abs() < 1.001)
    # σ per pixel (signal-dependent noise): each clipped value filled with its own σ.
    per_pixel = torch.where(x > 0, 0.2, 0.1)
    mixed = fill_clipped(y, x, per_pixel)
    assert torch.equal(mixed[x > 0], filled[x > 0])
    assert torch.allclose(mixed[x < 0], fill_clipped(y, x, 0.1)[x < 0])
