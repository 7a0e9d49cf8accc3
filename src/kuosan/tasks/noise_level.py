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
With ``clip_range`` given, patches that hold a value at either end are left out (``clipped``). That choice
is itself made by the noise: near black or white a patch escapes clipping only where its noise happened to point
inwards, so the patches kept hold a truncated normal's noise, weaker than σ (gray 8-bit held-out crops at σ = 50:
−5 % to −9 %). Each kept patch is taken as flat at its clean level (``_unclipped_sigma``; the weak-texture
patches nearly are), and σ is the level whose truncated noise, averaged over those patches, reads what was
measured. Where almost no patch escapes clipping, all are kept and their noise is modelled as censored (clipped)
instead of truncated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    width = x.shape[2]
    corner = (positions // grid_w) * width + positions % grid_w                   # flat index of the top left
    offsets = (torch.arange(patch)[:, None] * width + torch.arange(patch)[None]).flatten()
    cols = x.flatten(1)[:, corner[:, None] + offsets[None]]                       # [C, N, patch²], one gather
    return cols.permute(1, 0, 2).reshape(len(positions), -1), energy.flatten()[positions]


def clipped(y: Tensor, clip_range: tuple[float, float] | None = (-1.0, 1.0)) -> Tensor | None:
    """Where y lies at either end of ``clip_range`` (None: nowhere), as a saved image's noisy pixels do where the
    noise was cut off at black or white; None if no value does, or if some value lies beyond the range (then y
    was not clipped to it, and a value at an end is where its noise put it)."""
    if clip_range is None:
        return None
    low, high = clip_range
    tolerance = 1e-6 * (high - low)      # far below a 16-bit image's step (1.5e-5 of the range)
    if bool((y < low - tolerance).any() | (y > high + tolerance).any()):
        return None
    ends = ((y - low).abs() <= tolerance) | ((y - high).abs() <= tolerance)
    return ends if bool(ends.any()) else None


def fill_clipped(y: Tensor, estimate: Tensor, sigma: float | Tensor,
                 clip_range: tuple[float, float] = (-1.0, 1.0), ends: Tensor | None = None) -> Tensor:
    """y with each clipped value (``clipped``) replaced by its expected value before clipping, given a
    denoised ``estimate`` of the clean image and white Gaussian noise σ: at the low end L the noisy value was
    some v ≤ L, and for v ~ N(x, σ²), E[v | v ≤ L] = x − σ·φ(a)/Φ(a) with a = (L − x)/σ (the mean of a
    truncated normal; at the high end the mirror image), x taken as the estimate. Denoising the filled image
    again removes most of what clipping costs (``kuosan.denoise``'s ``clip_rounds``): the clipped pixels then
    sit where the noise would have put them on average, not all at black or white. ``sigma`` may be a tensor
    broadcastable to y (noise whose σ varies from pixel to pixel). ``ends``: ``clipped(y)`` where the caller has
    it already."""
    ends = clipped(y, clip_range) if ends is None else ends
    if ends is None or not bool(ends.any()):
        return y
    low, high = clip_range
    x, at_low = estimate[ends], y[ends] < (low + high) / 2       # computed at the clipped values only
    if isinstance(sigma, Tensor):                                # σ per pixel (signal-dependent noise)
        sigma = sigma.expand_as(y)[ends]
    ratio = _inverse_mills                                       # φ(a)/Φ(a), stable far into either tail
    filled = y.clone()
    filled[ends] = torch.where(at_low, x - sigma * ratio((low - x) / sigma), x + sigma * ratio((x - high) / sigma))
    return filled


def _log_normal_pdf(t: Tensor) -> Tensor:
    """log φ(t), the standard normal density."""
    return -0.5 * t * t - 0.5 * math.log(2 * math.pi)


def _inverse_mills(a: Tensor) -> Tensor:
    """φ(a)/Φ(a) for the standard normal, from logs (Φ(a) underflows for a ≪ 0, where the ratio is ≈ −a)."""
    wide = a.double()
    return torch.exp(_log_normal_pdf(wide) - torch.special.log_ndtr(wide)).to(a.dtype)


def _holds_clipped(ends: Tensor | None, patch: int) -> Tensor | None:
    """Per patch position (flat, row-major, as ``_patches``): whether the patch holds a clipped value in any
    channel, from the map ``clipped`` gives ([C, H, W]); None if none does."""
    if ends is None or not bool(ends.any()):
        return None
    any_channel = ends.any(0).float()[None, None]
    # separably, rows then columns: the same maximum, 3.5× faster on a 12-megapixel photo
    rows = torch.nn.functional.max_pool2d(any_channel, (1, patch), stride=1)
    return torch.nn.functional.max_pool2d(rows, (patch, 1), stride=1).flatten() > 0


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


CLIP_FREE_SHARE = 0.01


def _clip_free(x: Tensor, patch: int, keep: Tensor | None, holds: Tensor | None) -> tuple[Tensor, Tensor, bool]:
    """Patch vectors and energies (``_patches``) of x [C, H, W] at ``keep``, less those that ``holds`` (from
    ``_holds_clipped``) marks as holding a clipped value; all of them if fewer than 4 per patch dimension or
    than ``CLIP_FREE_SHARE`` of them would be left (so few escape clipping only by their noise's luck, more
    than the truncation model allows for: on one 8-bit 256² crop of each gray training photo, the worst estimate
    at σ = 50 and 75 was −8 % and −27 % leaving them out however few, −4 % and −3 % with this rule, which then
    keeps all, censored). The flag says whether the clipped ones were left out."""
    cols, energy = _patches(x, patch, keep)
    if holds is not None:
        usable = ~(holds if keep is None else holds[keep])
        if int(usable.sum()) >= max(4 * cols.shape[1], CLIP_FREE_SHARE * len(usable)):
            return cols[usable], energy[usable], True
    return cols, energy, False


def _clipped_moments(level: Tensor, sigma: Tensor, clip_range: tuple[float, float], truncated: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """The standard deviation of v = level + σ·n (n standard normal) seen through clipping to ``clip_range``, and
    its mean: where ``truncated``, of v given that it fell inside the range (a patch kept for holding no clipped
    value); elsewhere of v clipped to the range (censored: a patch kept although it holds clipped values).
    Returns (sd, mean), broadcast over level and σ."""
    low, high = clip_range
    a, b = (low - level) / sigma, (high - level) / sigma
    pdf_a, pdf_b = torch.exp(_log_normal_pdf(a)), torch.exp(_log_normal_pdf(b))
    cdf_a, cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)
    inside = (cdf_b - cdf_a).clamp_min(1e-300)
    # E[v; a < n < b] and E[v²; a < n < b]
    m1 = level * inside + sigma * (pdf_a - pdf_b)
    m2 = level**2 * inside + 2 * level * sigma * (pdf_a - pdf_b) + sigma**2 * (inside + a * pdf_a - b * pdf_b)
    mean_t, second_t = m1 / inside, m2 / inside
    mean_c = m1 + low * cdf_a + high * (1 - cdf_b)
    second_c = m2 + low**2 * cdf_a + high**2 * (1 - cdf_b)
    mean = torch.where(truncated, mean_t, mean_c)
    second = torch.where(truncated, second_t, second_c)
    return (second - mean**2).clamp_min(0).sqrt(), mean


def _unclipped_sigma(measured: float, means: Tensor, truncated: Tensor, clip_range: tuple[float, float],
                     sample: int = 2048) -> float:
    """σ of the noise before clipping, from the σ ``measured`` on patches with these per-channel ``means``
    [N, C] (each taken as flat, at the clean level that makes its mean, seen through clipping, what it is):
    the σ at which the clipped noise's sd, averaged over the patches in variance, equals ``measured``
    (``truncated`` [N]: the patch was kept for holding no clipped value; else it holds some, censored). What
    the patches read rises with σ, so the root is bracketed on a grid from ``measured`` to 3× it, the bracket
    refined on a finer grid once, and interpolated."""
    if means.shape[0] > sample:        # an average: a fixed subset of the patches is plenty
        pick = torch.linspace(0, means.shape[0] - 1, sample).long()
        means, truncated = means[pick], truncated[pick]
    low, high = clip_range
    observed, trunc = means[None].clamp(low, high), truncated[None, :, None]

    def read(sigmas: Tensor) -> Tensor:
        grid = sigmas[:, None, None]
        # The clean level behind each mean, by bisection (the mean seen through clipping rises with the level).
        below = torch.full(observed.shape[1:], low - 4 * measured, dtype=means.dtype).expand(len(sigmas), -1, -1)
        above = torch.full_like(below, high + 4 * measured)
        for _ in range(30):
            mid = (below + above) / 2
            higher = _clipped_moments(mid, grid, clip_range, trunc)[1] < observed
            below, above = torch.where(higher, mid, below), torch.where(higher, above, mid)
        return (_clipped_moments((below + above) / 2, grid, clip_range, trunc)[0] ** 2).mean((1, 2)).sqrt()

    if float(read(torch.tensor([measured], dtype=torch.float64))[0]) >= measured * (1 - 1e-3):
        return measured        # the patches lie too far from the ends for clipping to change σ by 0.1 %
    lo, hi = measured, 3.0 * measured
    for _ in range(2):
        sigmas = torch.linspace(lo, hi, 9, dtype=torch.float64)
        values = read(sigmas)
        if float(values[0]) >= measured:
            return float(sigmas[0])
        if float(values[-1]) <= measured:
            return float(sigmas[-1])
        i = int((values < measured).sum()) - 1          # values[i] < measured <= values[i + 1]
        lo, hi = float(sigmas[i]), float(sigmas[i + 1])
    t = (measured - float(values[i])) / float(values[i + 1] - values[i])
    return lo + t * (hi - lo)


def _image_and_sample(image: Tensor, patch: int, max_patches: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """``image`` as float64 [C, H, W], and the patch positions to use (``_patches``): None for all, or
    ``max_patches`` of them drawn with ``seed`` where there are more; ValueError if it is too small."""
    x = image.detach().double()
    if x.ndim == 2:
        x = x[None]
    h, w = x.shape[1:]
    if h < 2 * patch or w < 2 * patch:
        raise ValueError(f"image {h}×{w} is too small to estimate its noise (needs ≥ {2 * patch} pixels a side)")
    count = (h - patch + 1) * (w - patch + 1)
    if count <= max_patches:
        return x, None
    return x, torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:max_patches]


def _plane_by_plane(x: Tensor, patch: int, keep: Tensor | None, ends: Tensor | None
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Each plane's clip-free patches (``_clip_free`` with that plane's share of the clipped map ``ends``) as
    samples of one gray image: patch vectors [N, patch²], energies [N], and per patch whether its plane's clipped
    ones were left out [N]."""
    plane_ends = ends.split(1) if ends is not None else [None] * x.shape[0]
    planes = [_clip_free(plane, patch, keep, _holds_clipped(e, patch))
              for plane, e in zip(x.split(1), plane_ends, strict=True)]
    truncated = torch.cat([torch.full((len(p[0]),), p[2]) for p in planes])
    return torch.cat([p[0] for p in planes]), torch.cat([p[1] for p in planes]), truncated


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
    x, keep = _image_and_sample(image, patch, max_patches, seed)
    c = x.shape[0]
    ends = clipped(x, clip_range)          # found once; each plane's share of it serves the planes one by one
    holds = _holds_clipped(ends, patch)
    if c > 1 and holds is not None and float(holds.double().mean()) > MOSTLY_CLIPPED:
        cols, energy, truncated = _plane_by_plane(x, patch, keep, ends)
        c = 1
    else:
        cols, energy, clip_free = _clip_free(x, patch, keep, holds)
        truncated = torch.full((len(cols),), clip_free)
    return _refined_sigma(cols, energy, truncated, c, patch, rounds, clip_range if holds is not None else None)


def _refined_sigma(cols: Tensor, energy: Tensor, truncated: Tensor, channels: int, patch: int, rounds: int,
                   clip_range: tuple[float, float] | None) -> float:
    """Chen et al.'s σ of patch vectors [N, channels·patch²], refined ``rounds`` times on the weak-texture
    patches (Liu et al.), then, with ``clip_range`` (some patch was clipped), corrected for the clipping of the
    patches kept (``truncated`` [N]; ``_unclipped_sigma``)."""
    sigma = _chen_sigma(cols)
    limit = _unit_noise_energy_quantile(channels, patch)
    used = torch.ones(len(cols), dtype=torch.bool)
    for _ in range(rounds):
        weak = energy <= limit * sigma**2
        if int(weak.sum()) < 4 * cols.shape[1]:    # too few weak patches for a covariance: keep what we have
            break
        sigma, used = _chen_sigma(cols[weak]), weak
    if clip_range is None:
        return sigma
    means = cols[used].reshape(int(used.sum()), channels, patch * patch).mean(-1)
    return _unclipped_sigma(sigma, means, truncated[used], clip_range)


@dataclass(frozen=True)
class NoiseCurve:
    """Signal-dependent noise, as a camera's is: at clean value x the noise variance is ``gain``·x + ``floor``
    (Poisson–Gaussian: the photon shot noise, whose variance grows with the light, scaled by the sensor's gain,
    plus a signal-independent floor such as read noise), in the image's own units. White Gaussian noise of σ
    is ``NoiseCurve(0, σ²)``."""

    gain: float
    floor: float

    def __post_init__(self):
        if not (self.gain >= 0 and self.floor >= 0 and math.isfinite(self.gain) and math.isfinite(self.floor)):
            raise ValueError(f"a noise curve needs gain ≥ 0 and floor ≥ 0, got {self.gain}, {self.floor}")

    def sigma(self, level: float) -> float:
        """σ of the noise at clean value ``level``."""
        return math.sqrt(max(self.gain * level + self.floor, 0.0))


def estimate_noise_curve(image: Tensor, patch: int = 7, bins: int = 8, max_patches: int = 200_000, seed: int = 0,
                         rounds: int = 3, clip_range: tuple[float, float] | None = None) -> NoiseCurve:
    """The ``NoiseCurve`` of ``image`` ([C, H, W] or [H, W]), in the image's own units.

    Each patch's mean is close to its clean level (the noise averages out over its patch² values), so the
    patches are sorted by their mean into ``bins`` bins of equal count (fewer in a small image, each holding 8
    patches per patch dimension at least), σ is estimated in each bin as ``estimate_noise_sigma`` does (Chen et
    al. on the bin's patches, refined on its weak-texture ones, corrected for clipping with ``clip_range``), and
    variance = gain·level + floor is fitted to the bins' (level, σ²) by least squares on the relative error (each
    bin's σ² is about as sure as the next, relative to itself), with gain and floor ≥ 0, robust to a bin read
    astray (``_fit_curve``). Colour channels are taken one at a time, each channel's patches as samples of one
    gray image, as their levels differ (Liu, Tanaka & Okutomi 2014 fit a camera's noise level function likewise,
    from weak-texture patches)."""
    x, keep = _image_and_sample(image, patch, max_patches, seed)
    ends = clipped(x, clip_range)
    cols, energy, truncated = _plane_by_plane(x, patch, keep, ends)
    means = cols.mean(1)
    order = means.argsort()
    levels, variances = [], []
    # at least 8 patches per patch dimension in a bin, for its covariance: a small image gets fewer bins
    for chunk in order.chunk(max(1, min(bins, len(order) // (8 * cols.shape[1])))):
        sigma = _refined_sigma(cols[chunk], energy[chunk], truncated[chunk], 1, patch, rounds,
                               clip_range if ends is not None else None)
        levels.append(float(means[chunk].mean()))
        variances.append(sigma**2)
    return _fit_curve(torch.tensor(levels, dtype=torch.float64), torch.tensor(variances, dtype=torch.float64))


def _fit_curve(levels: Tensor, variances: Tensor, rounds: int = 10, huber: float = 0.1) -> NoiseCurve:
    """gain, floor ≥ 0 fitted to the bins' variances by least squares on the relative error, (fit − variance) / fit,
    iteratively reweighted: the weights come from the fit, not from the measured variances (which would favour a
    bin read too low), and a bin off the fit by more than ``huber`` of it counts as if it were only that far off
    (Huber), so one bin whose estimate went astray does not bend the curve: held-out gray ``astronaut`` under
    variance 8·x + 16 read one bin of eight at 21.4 instead of ~32, and the plain relative fit gave 2.4·x + 425."""
    if float(variances.max()) <= 0:      # no noise at all (a flat, clean image)
        return NoiseCurve(0.0, 0.0)
    fit = torch.full_like(variances, float(variances.median())).clamp_min(1e-12)
    curve = NoiseCurve(0.0, float(fit[0]))
    for _ in range(rounds):
        error = (variances - fit) / fit
        weight = (huber / error.abs().clamp_min(1e-12)).clamp(max=1.0).sqrt() / fit
        curve = _weighted_line(levels, variances, weight)
        fit = (curve.gain * levels + curve.floor).clamp_min(1e-12)
    return curve


def _weighted_line(levels: Tensor, variances: Tensor, weight: Tensor) -> NoiseCurve:
    """gain, floor ≥ 0 minimising Σ (weight·(gain·level + floor − variance))²."""
    design = torch.stack([levels, torch.ones_like(levels)], 1) * weight[:, None]
    target = variances * weight
    if len(levels) >= 2:
        gain, floor = (float(v) for v in torch.linalg.lstsq(design, target[:, None]).solution[:, 0])
    else:
        gain, floor = 0.0, float(variances[0])
    if gain < 0:        # the best constant
        gain, floor = 0.0, float((weight * target).sum() / (weight * weight).sum())
    elif floor < 0:     # the best line through 0
        column = design[:, 0]
        gain, floor = float((column * target).sum() / (column * column).sum()), 0.0
    return NoiseCurve(max(gain, 0.0), max(floor, 0.0))
