"""Estimate the level of white Gaussian noise in an image, with no clean reference.

Chen, Zhu & Heng 2015 ("An Efficient Statistical Method for Image Noise Level Estimation", ICCV): the
covariance of an image's small patches has eigenvalues that are the noise variance σ² plus signal energy;
natural images are sparse in patch space, so the smallest eigenvalues are pure noise. Walking from the
largest eigenvalue down, the first tail of eigenvalues whose mean equals its median (as many above the
mean as below) is taken as the noise-only set, and σ² is its mean. It is accurate from σ ≈ 2 to 50+ on
photos, unlike the wavelet-MAD rule, which reads texture as noise at low σ.

At low σ on textured gray images the smallest eigenvalues still hold some texture, so the estimate is
refined on weak-texture patches (Liu, Tanaka & Okutomi 2013): patches whose gradient energy is below what
pure noise of the current σ would reach in 99 % of patches; three rounds.

A photo saved as an 8-bit file has its noise cut off at black and white: a clipped pixel's noise is smaller
than σ (none at all where the clean value was itself at an end), so patches holding one read the noise as
weaker (held-out colour ``astronaut`` at σ = 25, 11 % of its pixels clipped: 22.2 estimated over all patches).
With ``clip_range`` given, patches that hold a value at either end are left out (``clipped``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _energy(x: Tensor, patch: int) -> Tensor:
    """Each patch position's gradient energy, [H-patch+1, W-patch+1], for x [C, H, W]."""
    dh = (x[:, :, 1:] - x[:, :, :-1])[:, :-1, :] ** 2
    dv = (x[:, 1:, :] - x[:, :-1, :])[:, :, :-1] ** 2
    grad = (dh + dv).sum(0, keepdim=True)[None]                       # [1, 1, H-1, W-1]
    return torch.nn.functional.avg_pool2d(grad, patch - 1, stride=1)[0, 0]


def _patches(x: Tensor, patch: int, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Patch vectors [N, C·patch²] of x [C, H, W] (ordered as ``unfold``'s) and their gradient energy [N]: all
    of them, or those at flat ``positions`` (row-major over the patch grid). Only the chosen patches are
    gathered, so a 12-megapixel photo costs the memory of ``positions``, not 147 values per pixel."""
    energy = _energy(x, patch)
    grid_w = energy.shape[1]
    if positions is None:
        return torch.nn.functional.unfold(x[None], patch)[0].T, energy.flatten()
    top, left = positions // grid_w, positions % grid_w
    cols = torch.stack([x[:, top + dy, left + dx] for dy in range(patch) for dx in range(patch)], dim=1)
    return cols.reshape(x.shape[0] * patch * patch, -1).T, energy.flatten()[positions]


def clipped(y: Tensor, clip_range: tuple[float, float] | None = (-1.0, 1.0)) -> Tensor | None:
    """Where y lies at either end of ``clip_range`` (None: nowhere), as a saved image's noisy pixels do where the
    noise was cut off at black or white; None if no value does."""
    if clip_range is None:
        return None
    low, high = clip_range
    tolerance = 1e-6 * (high - low)      # far below a 16-bit image's step (1.5e-5 of the range)
    ends = ((y - low).abs() <= tolerance) | ((y - high).abs() <= tolerance)
    return ends if bool(ends.any()) else None


def fill_clipped(y: Tensor, estimate: Tensor, sigma: float, clip_range: tuple[float, float] = (-1.0, 1.0)
                 ) -> Tensor:
    """y with each clipped value (``clipped``) replaced by its expected value before clipping, given a
    denoised ``estimate`` of the clean image and white Gaussian noise σ: at the low end L the noisy value was
    some v ≤ L, and for v ~ N(x, σ²), E[v | v ≤ L] = x − σ·φ(a)/Φ(a) with a = (L − x)/σ (the mean of a
    truncated normal; at the high end the mirror image), x taken as the estimate. Denoising the filled image
    again removes most of what clipping costs (``kuosan.denoise``'s ``clip_rounds``): the clipped pixels then
    sit where the noise would have put them on average, not all at black or white."""
    ends = clipped(y, clip_range)
    if ends is None:
        return y
    low, high = clip_range
    x, at_low = estimate[ends], y[ends] < (low + high) / 2       # computed at the clipped values only
    ratio = _inverse_mills                                       # φ(a)/Φ(a), stable far into either tail
    filled = y.clone()
    filled[ends] = torch.where(at_low, x - sigma * ratio((low - x) / sigma), x + sigma * ratio((x - high) / sigma))
    return filled


def _inverse_mills(a: Tensor) -> Tensor:
    """φ(a)/Φ(a) for the standard normal, from logs (Φ(a) underflows for a ≪ 0, where the ratio is ≈ −a)."""
    wide = a.double()
    log_pdf = -0.5 * wide * wide - 0.5 * math.log(2 * math.pi)
    return torch.exp(log_pdf - torch.special.log_ndtr(wide)).to(a.dtype)


def _holds_clipped(x: Tensor, patch: int, clip_range: tuple[float, float] | None) -> Tensor | None:
    """Per patch position (flat, row-major, as ``_patches``): whether the patch holds a clipped value in any
    channel; None if none does."""
    ends = clipped(x, clip_range)
    if ends is None:
        return None
    any_channel = ends.any(0).to(x.dtype)[None, None]
    return torch.nn.functional.max_pool2d(any_channel, patch, stride=1).flatten() > 0


_NOISE_QUANTILE: dict[tuple[int, int], float] = {}


def _unit_noise_energy_quantile(channels: int, patch: int, q: float = 0.99) -> float:
    """The q-quantile of patch gradient energy for unit white noise (Monte Carlo, fixed seed, cached)."""
    key = (channels, patch)
    if key not in _NOISE_QUANTILE:
        g = torch.Generator().manual_seed(12345)
        noise = torch.randn(channels, 256, 256, generator=g, dtype=torch.float64)
        _NOISE_QUANTILE[key] = float(torch.quantile(_patches(noise, patch)[1][:100_000], q))
    return _NOISE_QUANTILE[key]


def _chen_sigma(cols: Tensor) -> float:
    """Chen et al.'s rule on patch vectors [N, D]."""
    cols = cols - cols.mean(0, keepdim=True)
    cov = cols.T @ cols / max(1, cols.shape[0] - 1)
    eig = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0)            # descending
    for i in range(len(eig)):
        tail = eig[i:]
        tau = tail.mean()
        if int((tail > tau).sum()) == int((tail < tau).sum()):
            return float(tau.sqrt())
    return float(eig[-1].sqrt())


def _clip_free(x: Tensor, patch: int, keep: Tensor | None, holds: Tensor | None) -> tuple[Tensor, Tensor]:
    """Patch vectors and energies (``_patches``) of x [C, H, W] at ``keep``, less those that ``holds`` (from
    ``_holds_clipped``) marks as holding a clipped value; all of them if fewer than 4 per patch dimension would
    be left."""
    cols, energy = _patches(x, patch, keep)
    if holds is not None:
        usable = ~(holds if keep is None else holds[keep])
        if int(usable.sum()) >= 4 * cols.shape[1]:
            return cols[usable], energy[usable]
    return cols, energy


MOSTLY_CLIPPED = 0.8


def estimate_noise_sigma(image: Tensor, patch: int = 7, max_patches: int = 200_000, seed: int = 0,
                         rounds: int = 3, clip_range: tuple[float, float] | None = None) -> float:
    """σ of the noise in ``image`` ([C, H, W] or [H, W]), in the image's own units.

    ``clip_range``: the ends of the image's range (e.g. (0, 255)), where the noise may have been clipped;
    patches holding a value there are left out. In colour, where more than ``MOSTLY_CLIPPED`` of the patches
    hold one in some channel, the channels are taken one at a time (each channel's clip-free patches as
    samples of one gray image), as a patch then needs only its own channel clear of the ends: 8-bit held-out
    colour crops at σ = 25 and 50 (93–100 % of patches holding a clipped value) read 20.7–22.2 → 24.0–25.1 and
    38.4–40.8 → 47.1–47.2 (``benchmarks/clipped_photos.py`` prints them); with few clipped values the channels
    stay together, as their correlation makes the noise-only eigenvalues easier to find."""
    x = image.detach().double()
    if x.ndim == 2:
        x = x[None]
    c, h, w = x.shape
    if h < 2 * patch or w < 2 * patch:
        raise ValueError(f"image {h}×{w} is too small to estimate its noise (needs ≥ {2 * patch} pixels a side)")
    count = (h - patch + 1) * (w - patch + 1)
    keep = None
    if count > max_patches:
        keep = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:max_patches]
    holds = _holds_clipped(x, patch, clip_range)
    if c > 1 and holds is not None and float(holds.double().mean()) > MOSTLY_CLIPPED:
        pairs = [_clip_free(plane, patch, keep, _holds_clipped(plane, patch, clip_range)) for plane in x.split(1)]
        cols, energy = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        c = 1
    else:
        cols, energy = _clip_free(x, patch, keep, holds)
    sigma = _chen_sigma(cols)
    limit = _unit_noise_energy_quantile(c, patch)
    for _ in range(rounds):
        weak = energy <= limit * sigma**2
        if int(weak.sum()) < 4 * cols.shape[1]:    # too few weak patches for a covariance: keep what we have
            break
        sigma = _chen_sigma(cols[weak])
    return sigma
