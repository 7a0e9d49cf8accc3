"""Restoration with a diffusion prior: blind denoising, super-resolution, deblurring, inpainting.

All are "D plus data consistency" on tensors [1, C, H, W] in model units ([-1, 1]):

- ``denoise``: a noisy image y = x + σ_y·n *is* a point x_σ of the forward process at σ = σ_y. ``mmse``
  returns D(y, σ_y), the posterior mean (best PSNR), optionally averaged over the 8 flips/rotations;
  ``sample`` runs a stochastic sampler from σ_y down to 0, drawing a posterior sample. A camera's
  signal-dependent (Poisson–Gaussian) noise is first made white by a variance-stabilising transform (``vst``),
  and the result transformed back.
- ``upscale``: A = antialiased bicubic (default; how Pillow, MATLAB and most software shrink images) or box
  downsampling. ``mmse`` (best PSNR) is plug-and-play (DPIR, Zhang et al. 2021): x ← project(D(x, σ_k)) on
  a falling σ ladder, no fresh noise. ``sample`` is DDNM (Wang et al. 2023): every denoiser estimate is
  projected onto {A(x) = y} inside ancestral sampling, drawing a posterior sample (sharper, lower PSNR).
  A low-resolution input with noise σ_y replaces the projection by the proximal step with weight σ_y²/σ²
  (``operators``), and plug-and-play stops at σ_k = 0.7·σ_y (``DATA_NOISE_SCALE``). A camera's noise
  (``noise_curve``) weighs each pixel by its own variance instead.
- ``deblur``: A = convolution with a known kernel (a Gaussian of given std, or any kernel), plug-and-play
  as for ``upscale`` with the exact Fourier-domain proximal step (DPIR's deblurring). The image is padded by
  reflection so the operator's periodic wrap-around falls outside it, and σ_y is at least the 8-bit rounding
  noise, so the data step never divides by a vanishing |K|².
- ``inpaint``: A = a pixel mask. ``mmse`` is plug-and-play started from the biharmonic fill (``fill``), which
  the prior then sharpens; ``sample`` is DDNM plus RePaint-style resampling (Lugmayr et al. 2022): each step
  is re-noised and redone ``resample`` times so the filled region harmonises with what is known.

Large images go through ``TiledDenoiser``; a 1-channel prior restores colour images through
``OpponentColorDenoiser``, unless it has a colour companion installed (``COLOUR_COMPANIONS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from kuosan import samplers
from kuosan.diffusion.color import OpponentColorDenoiser
from kuosan.diffusion.ladders import karras_sigmas
from kuosan.diffusion.symmetry import DIHEDRAL, FlipEnsemble, turn, turn_back
from kuosan.errors import KuosanError
from kuosan.samplers.sde import euler_ancestral
from kuosan.tasks.fill import smooth_fill
from kuosan.tasks.noise_level import NoiseCurve, clipped, estimate_noise_sigma, fill_clipped
from kuosan.tasks.noise_level import estimate_noise_curve as noise_curve_of
from kuosan.tasks.operators import (
    BicubicDownsample,
    Blur,
    BoxDownsample,
    ConsistentDenoiser,
    Mask,
    Operator,
    gaussian_kernel,
)
from kuosan.tasks.tiling import TiledDenoiser
from kuosan.tasks.vst import GeneralizedAnscombe

DEFAULT_PRIOR = "builtin:photo"
# A gray prior named by reference, and the colour prior that restores colour images in its place when it is
# there (the package ships it once one beats the gray prior in the opponent colour space; see load_prior).
COLOUR_COMPANIONS = {"builtin:photo": "builtin:photo-rgb"}


def psnr(estimate, reference, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, 10·log10(peak² / mean squared error), of two arrays of one shape
    (PIL images, numpy arrays or tensors), computed in float64."""
    import numpy as np

    a, b = (np.asarray(v, dtype=np.float64) for v in (estimate, reference))
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    return float(10 * np.log10(peak**2 / np.mean((a - b) ** 2)))


def pixel_to_model_sigma(sigma_255: float) -> float:
    """σ in 0–255 pixel units → σ in model units ([-1, 1] images span 2)."""
    return 2.0 * sigma_255 / 255.0


def prepare(denoiser, channels: int, tile: int = 256, overlap: int = 64, progress: bool = False,
            chroma_bases: int = 1, flips: int = 1):
    """Fit ``denoiser`` to images with ``channels`` channels, computed in tiles (a bar over tiles if
    ``progress``). A gray prior on colour images averages its chroma over ``chroma_bases`` bases
    (``OpponentColorDenoiser``). ``flips`` > 1 averages over that many flips/rotations of each tile
    (``FlipEnsemble``; for a gray prior on colour images, plane by plane: fewer passes for the same result)."""
    model_channels = denoiser.channels
    if model_channels == channels:
        fitted = FlipEnsemble(denoiser, flips) if flips > 1 else denoiser
    elif model_channels == 1 and channels == 3:
        fitted = OpponentColorDenoiser(denoiser, chroma_bases, flips)
    else:
        raise KuosanError(f"this model restores {model_channels}-channel images; the image has {channels} "
                          "(convert the image, or use a model trained on that kind)")
    return TiledDenoiser(fitted, tile, overlap, progress) if tile else fitted


@torch.no_grad()
def denoise_tensor(denoiser, y: Tensor, sigma: float, *, mode: str = "mmse", steps: int = 10, seed: int = 0,
                   sampler: str = "euler_ancestral", progress: bool = False) -> Tensor:
    """Denoise y [1, C, H, W] whose noise has σ = ``sigma`` in model units (see module docstring). For a
    self-ensemble, give a denoiser that averages over flips (``prepare(..., flips=n)``)."""
    if sigma <= denoiser.sigma_min:      # below what the model knows: nothing to remove
        return y.clone()
    sigma = min(sigma, denoiser.sigma_max)
    if mode == "mmse":
        return denoiser(y, torch.full((y.shape[0],), sigma, device=y.device))
    if mode != "sample":
        raise KuosanError(f"mode {mode!r}: use mmse or sample")
    sigmas = karras_sigmas(steps, max(denoiser.sigma_min, 0.002), sigma).to(y.device)
    g = torch.Generator(device=y.device).manual_seed(seed)
    bar = _bar(steps) if progress else None
    out = samplers.get(sampler)(denoiser, y.clone(), sigmas, generator=g,
                                callback=(lambda info: bar.update(1)) if bar is not None else None)
    if bar is not None:
        bar.close()
    return out


def estimate_sigma(y: Tensor) -> float:
    """Noise σ of y [1, C, H, W] in model units (Chen et al. 2015 + weak-texture refinement), leaving out the
    patches that hold black or white, where a saved image's noise is clipped."""
    return estimate_noise_sigma(y[0], clip_range=(-1.0, 1.0))


DOWNSAMPLING_KERNELS: dict[str, type[Operator]] = {"bicubic": BicubicDownsample, "box": BoxDownsample}


def downsampling(kernel: str, scale: int) -> Operator:
    """The operator that made the low-resolution image: ``bicubic`` (antialiased, Pillow's) or ``box``."""
    if kernel not in DOWNSAMPLING_KERNELS:
        raise KuosanError(f"kernel {kernel!r}: use {' or '.join(DOWNSAMPLING_KERNELS)}")
    return DOWNSAMPLING_KERNELS[kernel](scale)


@torch.no_grad()
def upscale_tensor(denoiser, low: Tensor, scale: int, *, mode: str = "mmse", steps: int | None = None,
                   seed: int = 0, eta: float = 1.0, kernel: str = "bicubic", noise_sigma: float = 0.0,
                   noise_variance: NoiseVariance | None = None, fill_clipped: bool = True,
                   progress: bool = False) -> Tensor:
    """Super-resolve low [1, C, h, w] by ``scale``, A = ``kernel`` downsampling (see module docstring);
    ``noise_sigma``: the noise σ of ``low`` in model units; or ``noise_variance``: its variance at each pixel
    given the clean low-resolution image (signal-dependent noise, ``curve_variance``; instead of ``noise_sigma``);
    ``fill_clipped``: in ``mmse`` with noise, take values clipped at black or white at their expected value
    before clipping (see ``_plug_and_play``).

    ``mmse``: ``steps`` (default 10) plug-and-play iterations, σ from 0.6 to max(0.02, c·σ_y), the noise taken at
    c = ``DATA_NOISE_SCALE`` times its σ. ``sample``: DDNM ancestral sampling, ``steps`` (default 20) from the prior's
    σ_max, noise fraction ``eta``.
    """
    if noise_sigma < 0:
        raise KuosanError(f"noise must be ≥ 0, got {noise_sigma}")
    op = downsampling(kernel, scale)
    # Bicubic interpolation made consistent with y: a better start than A⁺y's blocks.
    bicubic = torch.nn.functional.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False)
    start = op.project(bicubic, low) if noise_sigma == 0 and noise_variance is None else bicubic
    if mode == "mmse":
        return _plug_and_play(denoiser, op, low, start, 10 if steps is None else steps, progress,
                              noise_sigma=noise_sigma, noise_variance=noise_variance, fill=fill_clipped,
                              noise_scale=DATA_NOISE_SCALE)
    if mode != "sample":
        raise KuosanError(f"mode {mode!r}: use mmse or sample")
    return _consistent_sampling(denoiser, op, low, start, 20 if steps is None else steps, seed, eta, progress,
                                noise_sigma=noise_sigma, noise_variance=noise_variance)


# Plug-and-play (mmse) upscaling and deblurring take the input's noise at this fraction of its σ (variance ×0.49):
# the data step's weight and the σ ladder's end both shrink, which trusts the input more than its noise alone would
# say (DPIR's λ = 0.23 plays the same part). Chosen on 256² gray crops of six training photos (chelsea, rocket,
# china, flower, brick, clock; white noise σ = 10/25/50 and a camera's 3·x + 9, 8-bit), mean PSNR gain over 1.0:
# ×2 +0.20/+0.44/+0.45/+0.34 dB, ×3 +0.39/+0.66/+0.73/+0.66, ×4 (bicubic) +0.39/+0.58/+0.45/+0.52, deblurring
# (Gaussian std 1.6) +0.28/+0.25/+0.11/+0.25 (0.6 there: +0.03 more; 0.45: less); ×8 +0.43 at σ = 10 but −0.56
# at σ = 50.
DATA_NOISE_SCALE = 0.7


QUANTIZATION_SIGMA = 2 / 255 / math.sqrt(12)  # std of 8-bit rounding in model units (one level = 2/255)

NoiseVariance = Callable[[Tensor], Tensor]


def curve_variance(curve: NoiseCurve, image: Tensor) -> NoiseVariance:
    """The noise variance, in model units, at each clean value (model units) of a signal-dependent noise
    ``curve`` (0–255 units) for the noisy ``image`` it was read from (model units): clean values taken within
    [0, 255], and the variance at least ``LEAST_VARIANCE_SHARE`` of its mean over the image (and the 8-bit
    rounding's). These weigh the data steps of ``upscale_tensor`` and ``deblur_tensor``."""
    def at(clean: Tensor) -> Tensor:
        pixels = ((clean + 1) * 127.5).clamp(0, 255)
        return (curve.gain * pixels + curve.floor) / 127.5**2

    least = max(LEAST_VARIANCE_SHARE * float(at(image).mean()), QUANTIZATION_SIGMA**2)

    def variance(clean: Tensor) -> Tensor:
        return at(clean).clamp_min(least)

    return variance


# A curve's variance near black is its floor, which the estimator reads least surely (the darkest patches are
# often clipped) and can read as 0: then the darkest pixels would count as nearly noise-free, the data step would
# follow their noise, and its conjugate gradients would need many more iterations. Deblurring the held-out colour
# astronaut under variance 3·x + 9 with the curve read, 3.01·x + 0.0: 24.81 dB without this bound, 26.73 with a
# share of 0.1 (0.25: 26.71, faster); told the true curve 26.71 either way.
LEAST_VARIANCE_SHARE = 0.1


@torch.no_grad()
def deblur_tensor(denoiser, blurred: Tensor, kernel: Tensor, *, steps: int = 20, noise_sigma: float = 0.0,
                  noise_variance: NoiseVariance | None = None, fill_clipped: bool = True,
                  progress: bool = False) -> Tensor:
    """Deblur ``blurred`` [1, C, H, W] made with ``kernel`` ([kh, kw], odd sides) plus noise of std
    ``noise_sigma`` (model units), or of ``noise_variance`` as in ``upscale_tensor``: ``steps`` plug-and-play
    iterations, σ from 0.6 down to max(0.02, c·σ_y), the noise taken at c = ``DATA_NOISE_SCALE`` times its σ (σ at
    least the 8-bit rounding's), on the image padded by reflection (see the module docstring); ``fill_clipped`` as
    in ``upscale_tensor``."""
    if noise_sigma < 0:
        raise KuosanError(f"noise must be ≥ 0, got {noise_sigma}")
    try:
        op = Blur(kernel)
    except ValueError as e:
        raise KuosanError(str(e)) from None
    kh, kw = op.kernel.shape
    height, width = blurred.shape[-2:]
    pad_h, pad_w = min(kh, height - 1), min(kw, width - 1)  # reflection needs pad < size
    y = torch.nn.functional.pad(blurred, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    try:
        out = _plug_and_play(denoiser, op, y, y, steps, progress, noise_sigma=max(noise_sigma, QUANTIZATION_SIGMA),
                             noise_variance=noise_variance, fill=fill_clipped, noise_scale=DATA_NOISE_SCALE)
    except ValueError as e:
        raise KuosanError(str(e)) from None
    return out[..., pad_h:pad_h + height, pad_w:pad_w + width]


def _plug_and_play(denoiser, op, y: Tensor, start: Tensor, steps: int, progress: bool,
                   sigma_hi: float = 0.6, sigma_lo: float = 0.02, noise_sigma: float = 0.0,
                   noise_variance: NoiseVariance | None = None, turns: bool = True, fill: bool = True,
                   noise_scale: float = 1.0) -> Tensor:
    """x ← prox(D(x, σ_k), y) for σ_k log-spaced from ``sigma_hi`` to max(``sigma_lo``, σ_y) (model units);
    with σ_y = 0 the proximal step is the projection. With ``turns`` the k-th step denoises x turned by the
    k-th of the 8 flips/rotations and turns the estimate back (DPIR's "periodical geometric self-ensemble",
    Zhang et al. 2021): the network's orientation errors differ from step to step and partly average out,
    at no extra cost. With ``fill`` and σ_y > 0, the values of y clipped at black or white (a saved noisy
    image's) are replaced in each data step by their expected value before clipping given A(the step's
    estimate) (``fill_clipped``): an EM step for the censored pixels, at no extra network pass.

    With ``noise_variance`` (signal-dependent noise; its value at A(x) is y's noise variance per pixel) each data
    step weighs every measurement by its own variance at A(the step's estimate) (``Operator.prox`` with a weight
    per pixel), and the ladder ends at the noise's RMS σ over y instead of ``noise_sigma``. ``noise_scale``: the
    data steps and the ladder's end take the noise at this fraction of its σ (``DATA_NOISE_SCALE``); the clipped
    values are filled with its true σ."""
    if steps < 1:
        raise KuosanError(f"steps must be at least 1, got {steps}")
    if noise_variance is not None:
        noise_sigma = math.sqrt(float(noise_variance(y).mean()))
    sigma_lo = max(sigma_lo, noise_scale * noise_sigma)
    sigma_hi = max(sigma_hi, sigma_lo)
    sigmas = torch.logspace(math.log10(sigma_hi), math.log10(sigma_lo), steps) if steps > 1 \
        else torch.tensor([sigma_lo])
    ends = clipped(y) if fill and noise_sigma > 0 else None
    x = start
    bar = _bar(steps) if progress else None
    for i, sigma in enumerate(sigmas):
        k, flip = DIHEDRAL[i % len(DIHEDRAL)] if turns else DIHEDRAL[0]
        estimate = turn_back(denoiser(turn(x, k, flip), torch.full((x.shape[0],), float(sigma), device=x.device)),
                             k, flip)
        measured = op.forward(estimate) if ends is not None or noise_variance is not None else None
        variance = noise_sigma**2 if noise_variance is None else noise_variance(measured)
        if ends is not None:
            noise_std = noise_sigma if noise_variance is None else variance.sqrt()
            data = fill_clipped(y, measured, noise_std, ends=ends)
        else:
            data = y
        x = op.prox(estimate, data, noise_scale**2 * variance / float(sigma) ** 2)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x


@torch.no_grad()
def inpaint_tensor(denoiser, image: Tensor, fill: Tensor, *, mode: str = "mmse", steps: int | None = None,
                   resample: int = 3, seed: int = 0, eta: float = 1.0, context: int | None = 96,
                   progress: bool = False) -> Tensor:
    """Fill the pixels where ``fill`` [H, W] is true, keeping the rest of image [1, C, H, W] exactly.

    ``mmse`` (the best PSNR): the biharmonic fill (``kuosan.tasks.fill.smooth_fill``) refined by ``steps``
    (default 20) plug-and-play iterations, σ from 0.3 to 0.02. ``sample``: a posterior sample, DDNM
    projection on an ancestral sampler from the prior's σ_max, ``steps`` (default 20) each redone
    ``resample`` times (RePaint); it draws texture into large holes where ``mmse`` stays smooth.

    Only the box around the holes plus ``context`` pixels on each side is restored (None: the whole image):
    the prior is local, so pixels farther away barely inform the fill, and a small hole in a large photo then
    costs what a small image does.
    """
    if mode not in ("mmse", "sample"):
        raise KuosanError(f"mode {mode!r}: use mmse or sample")
    fill = fill.bool()
    if context is not None and fill.any():
        rows, cols = fill.any(1).nonzero().flatten(), fill.any(0).nonzero().flatten()
        top, left = max(int(rows[0]) - context, 0), max(int(cols[0]) - context, 0)
        bottom = min(int(rows[-1]) + 1 + context, fill.shape[0])
        right = min(int(cols[-1]) + 1 + context, fill.shape[1])
        if (bottom - top, right - left) != tuple(fill.shape):
            out = image.clone()
            out[..., top:bottom, left:right] = inpaint_tensor(
                denoiser, image[..., top:bottom, left:right], fill[top:bottom, left:right], mode=mode,
                steps=steps, resample=resample, seed=seed, eta=eta, context=None, progress=progress)
            return out
    steps = 20 if steps is None else steps
    known = (~fill).to(image.dtype)[None, None]
    op = Mask(known)
    y = op.forward(image)
    if mode == "mmse":
        start = smooth_fill(image, known)
        return _plug_and_play(denoiser, op, y, start, steps, progress, sigma_hi=0.3)
    # Start from the known pixels with the mean of the known ones in the hole.
    mean = (image * known).sum((-2, -1), keepdim=True) / known.sum().clamp_min(1)
    start = known * image + (1 - known) * mean
    return _consistent_sampling(denoiser, op, y, start, steps, seed, eta, progress, resample=resample)


def _consistent_sampling(denoiser, op, y: Tensor, start: Tensor, steps: int, seed: int, eta: float,
                         progress: bool, resample: int = 1, noise_sigma: float = 0.0,
                         noise_variance: NoiseVariance | None = None) -> Tensor:
    """``euler_ancestral`` (noise fraction η) with D' = project(D) on a Karras ladder from the prior's σ_max,
    one step at a time so that, with ``resample`` > 1, each step can be re-noised back to its starting σ
    and repeated (RePaint), the last pass going on."""
    if steps < 1:
        raise KuosanError(f"steps must be at least 1, got {steps}")
    consistent = ConsistentDenoiser(denoiser, op, y, noise_sigma, noise_variance)
    sigmas = karras_sigmas(steps, max(denoiser.sigma_min, 0.002), denoiser.sigma_max).to(y.device)
    g = torch.Generator(device=y.device).manual_seed(seed)

    def noise_like(x):
        return torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)

    x = start + sigmas[0] * noise_like(start)
    bar = _bar(steps * resample) if progress else None
    for i in range(steps):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        for r in range(resample):
            x = euler_ancestral(consistent, x, sigmas[i:i + 2], generator=g, eta=eta)
            if bar is not None:
                bar.update(1)
            if r < resample - 1 and s_next > 0:
                x = x + math.sqrt(s**2 - s_next**2) * noise_like(x)   # back to σ = s
    if bar is not None:
        bar.close()
    return op.project(x, y) if noise_sigma == 0 and noise_variance is None else x


def _bar(total: int):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)
    return bar


# --- Python API on user images (PIL images or numpy arrays in, the same kind out) ------------------------

class _Picture:
    """A user image split into colour planes as a [1, C, H, W] tensor in [-1, 1], its alpha, and how to
    give the result back in the caller's form (PIL mode or numpy dtype)."""

    def __init__(self, image):
        import numpy as np
        from PIL import Image

        from kuosan.data.io import _palette_is_gray

        self.alpha = None
        if isinstance(image, Image.Image):
            self.kind, self.mode = "pil", image.mode
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(image, dtype=np.float64)
                scale = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
                arr = arr / scale
                self.mode = "I;16" if scale == 65535.0 else "L"
            else:
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA" if image.mode != "LA" else "LA")
                    self.alpha = np.asarray(rgba)[..., -1].astype(np.float64) / 255
                    image = rgba
                gray = image.mode in ("L", "LA", "1") or (image.mode == "P" and _palette_is_gray(image))
                arr = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float64) / 255
                self.mode = ("LA" if gray else "RGBA") if self.alpha is not None else ("L" if gray else "RGB")
        else:
            arr = np.asarray(image)
            self.kind, self.dtype = "array", arr.dtype
            if arr.dtype == np.uint8:
                arr = arr / 255.0
            elif arr.dtype == np.uint16:
                arr = arr / 65535.0
            elif np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float64)
            else:
                raise KuosanError(f"unsupported array dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")
            if arr.ndim == 3 and arr.shape[-1] in (2, 4):
                self.alpha, arr = arr[..., -1], arr[..., :-1]
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
                raise KuosanError(f"unsupported image array shape {arr.shape} (use H×W, H×W×1, ×3 or ×4)")
            self.channels_last = arr.ndim == 3
        self.shape = arr.shape[:2]
        t = torch.from_numpy(arr).float()
        self.tensor = (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]) * 2 - 1
        self.channels = self.tensor.shape[1]

    def give_back(self, x: Tensor, alpha=None):
        import numpy as np
        from PIL import Image

        arr = ((x[0].detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
        alpha = self.alpha if alpha is None else alpha
        if self.kind == "array":
            if alpha is not None:
                arr = np.concatenate([arr[..., None] if arr.ndim == 2 else arr, alpha[..., None]], axis=-1)
            if self.dtype == np.uint8:
                return np.round(arr * 255).astype(np.uint8)
            if self.dtype == np.uint16:
                return np.round(arr * 65535).astype(np.uint16)
            return arr.astype(self.dtype)
        if self.mode == "I;16":
            return Image.fromarray(np.round(arr * 65535).astype(np.uint16))
        out = Image.fromarray(np.round(arr * 255).astype(np.uint8))
        if alpha is not None:
            out.putalpha(Image.fromarray(np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)))
        return out


def colour_companion(model) -> str | None:
    """The installed colour prior that restores colour images in place of ``model`` (a reference), if any."""
    from kuosan.checkpoint import resolve_model

    companion = COLOUR_COMPANIONS.get(str(model))
    if companion is None:
        return None
    try:
        resolve_model(companion)
    except KuosanError:
        return None
    return companion


def load_prior(model, device="cpu", channels: int | None = None, precision: str = "auto"):
    """A model reference (``builtin:photo``, a run or checkpoint folder) or an already loaded denoiser (used as
    it is). For colour images (``channels`` 3) a reference with an installed colour companion loads the
    companion. ``precision`` as in ``kuosan.load``; ``auto`` (bf16 on CPUs with native bf16) by default: the
    photo prior runs ~3× faster for a 0.001 RMS change in [-1, 1] units at σ = 15–50 (see the README)."""
    if isinstance(model, torch.nn.Module):
        return model
    from kuosan.checkpoint import load

    companion = colour_companion(model) if channels == 3 else None
    return load(companion or model, device=device, precision=precision)


def estimate_noise(image) -> float:
    """σ of the white Gaussian noise in a PIL image or array, in 0–255 pixel units."""
    picture = _Picture(image)
    return estimate_sigma(picture.tensor) * 255.0 / 2.0


def estimate_noise_curve(image) -> NoiseCurve:
    """The signal-dependent noise of a PIL image or array (variance = gain·x + floor at clean value x, in 0–255
    pixel units; ``kuosan.tasks.noise_level.estimate_noise_curve``)."""
    return _estimate_curve(_Picture(image).tensor)


def noise_in_shadows_and_highlights(image) -> tuple[float, float]:
    """σ of a PIL image's or array's noise curve (``estimate_noise_curve``) at the image's 10th and 90th
    percentile values, in 0–255 units: far apart, its noise is signal-dependent."""
    import numpy as np

    y = _Picture(image).tensor
    values = ((y[0] + 1) * 127.5).flatten()
    values = values[:: max(1, values.numel() // 1_000_000)].numpy()       # a fixed subset is plenty
    curve = _estimate_curve(y)
    return tuple(curve.sigma(float(v)) for v in np.percentile(values, [10, 90]))


def _estimate_curve(y: Tensor) -> NoiseCurve:
    """The ``NoiseCurve`` of y [1, C, H, W] in model units, in 0–255 pixel units."""
    return noise_curve_of(((y[0] + 1) * 127.5).cpu(), clip_range=(0.0, 255.0))


def _as_curve(noise_curve, picture: _Picture) -> NoiseCurve:
    """A ``noise_curve`` argument: ``"auto"`` (read from ``picture``), a NoiseCurve or a (gain, floor) pair."""
    if isinstance(noise_curve, str) and noise_curve == "auto":
        return _estimate_curve(picture.tensor)
    if isinstance(noise_curve, NoiseCurve):
        return noise_curve
    try:
        gain, floor = (float(v) for v in noise_curve)
        return NoiseCurve(gain, floor)
    except (TypeError, ValueError) as e:
        raise KuosanError(f"noise_curve {noise_curve!r}: give 'auto' or (gain, floor), both ≥ 0 ({e})") from None


def denoise(image, sigma: float | None = None, *, noise_curve=None, model=DEFAULT_PRIOR, mode: str = "mmse",
            steps: int = 10, seed: int = 0, ensemble: int = 1, chroma_bases: int = 2, adapt: int = 0,
            clip_rounds: int = 1, tile: int = 256, device: str = "cpu", precision: str = "auto",
            progress: bool = False):
    """Denoise a PIL image or array (gray, RGB, RGBA; alpha kept). ``sigma`` in 0–255 pixel units, or None
    to estimate it (``estimate_noise``). Returns the same kind of image.

    ``noise_curve``: the noise is signal-dependent, as a camera's (Poisson–Gaussian: variance gain·x + floor at
    clean value x, 0–255 units): ``"auto"`` estimates it (``estimate_noise_curve``), or give (gain, floor). The
    image is then variance-stabilised (``kuosan.tasks.vst.GeneralizedAnscombe``), denoised at the stabilised σ
    with everything below as for white noise, and transformed back by the exact unbiased inverse. Not with
    ``sigma``.

    ``ensemble`` (``mmse`` mode): flips/rotations averaged (1–8); for a colour image and a gray prior the
    chroma is averaged over that many (flip, basis) views, so ``ensemble=8`` with 2 bases is 24 network passes
    (``OpponentColorDenoiser(flips=...)``). ``chroma_bases``: a colour image restored by a gray prior
    has its chroma denoised in this many rotated bases and averaged (``OpponentColorDenoiser``; 2 by default:
    +0.03–0.05 dB in one pass, +0.02–0.04 with ``ensemble=8``, for 5 network passes instead of 3; a colour
    prior ignores it). ``adapt`` (``mmse`` mode): first fit the prior's channel gains to this image for that many
    steps by minimising SURE at its σ (``kuosan.tasks.adapt.gain_tune``; 0: off; each step costs about 2.5
    network passes per plane pass, on one tile-sized crop). ``clip_rounds``: where the image holds values at
    black or white (a saved photo's noise clipped there), that many times a first estimate (one MMSE pass) is
    made and each clipped value replaced by its expected value before clipping given it
    (``kuosan.tasks.noise_level.fill_clipped``), and the result is computed from the filled image; 0: the
    clipped values are taken as they are. Each round is one more network pass, only for such images."""
    if not 1 <= chroma_bases <= 8:
        raise KuosanError(f"chroma_bases must be 1 to 8, got {chroma_bases}")
    if not 1 <= ensemble <= 8:
        raise KuosanError(f"ensemble must be 1 to 8, got {ensemble}")
    if adapt < 0 or (adapt and mode != "mmse"):
        raise KuosanError(f"adapt must be ≥ 0 steps and works with mode mmse, got {adapt} with {mode}")
    if clip_rounds < 0:
        raise KuosanError(f"clip_rounds must be ≥ 0, got {clip_rounds}")
    picture = _Picture(image)
    stabiliser = None
    if noise_curve is not None:
        if sigma is not None:
            raise KuosanError("give sigma (white noise) or noise_curve (signal-dependent noise), not both")
        curve = _as_curve(noise_curve, picture)
        if curve.gain > 0:
            stabiliser = GeneralizedAnscombe(curve)
            sigma_model = stabiliser.sigma
        else:                   # no signal-dependent part: white noise of the floor's σ
            sigma_model = pixel_to_model_sigma(math.sqrt(curve.floor))
    elif sigma is None:
        sigma_model = estimate_sigma(picture.tensor)
    else:
        if not sigma >= 0:
            raise KuosanError(f"sigma must be ≥ 0, got {sigma}")
        sigma_model = pixel_to_model_sigma(sigma)
    y = picture.tensor.to(device)
    if stabiliser is not None:
        y = stabiliser.to_model(y)
    prior = load_prior(model, device, picture.channels, precision)

    def run(network, noisy: Tensor) -> Tensor:
        d = prepare(network, picture.channels, tile, progress=progress and mode == "mmse",
                    chroma_bases=chroma_bases, flips=ensemble if mode == "mmse" else 1)
        return denoise_tensor(d, noisy, sigma_model, mode=mode, steps=steps, seed=seed, progress=progress)

    def first_estimate(noisy: Tensor, ends: Tensor) -> Tensor:
        """One MMSE pass, on the tiles holding a clipped value only (the estimate is wanted there only)."""
        d = prepare(prior, picture.channels, tile, progress=progress, chroma_bases=chroma_bases)
        with torch.no_grad():
            s = torch.full((1,), sigma_fit, device=y.device)
            return d(noisy, s, where=ends[0].any(0)) if isinstance(d, TiledDenoiser) else d(noisy, s)

    sigma_fit = min(sigma_model, prior.sigma_max)
    denoised_at_all = sigma_model > prior.sigma_min
    filled, ends = y, clipped(y)
    if denoised_at_all and ends is not None:
        for _ in range(clip_rounds):
            filled = fill_clipped(y, first_estimate(filled, ends), sigma_fit, ends=ends)
    if not (adapt and denoised_at_all):
        out = run(prior, filled)
    else:
        from kuosan.tasks.adapt import clearance

        out = run(adapt_prior(prior, y, sigma_fit, adapt, tile or 256, seed, progress), filled)
        if ends is not None:     # near black and white the unadapted prior's result is kept (see gain_tune)
            plain = run(prior, filled)
            out = plain + clearance(plain, sigma_fit) * (out - plain)
    return picture.give_back(out if stabiliser is None else stabiliser.from_model(out))


def adapt_prior(prior, y: Tensor, sigma: float, steps: int, patch: int = 256, seed: int = 0,
                progress: bool = False):
    """A copy of ``prior`` fitted to the noisy image y (noise σ, model units) by GainTuning (``tasks.adapt``),
    through the denoiser of y's kind in one pass (a gray prior on a colour image: one chroma basis).

    A gray prior fitted through the colour denoiser runs three network passes per evaluation, whose graphs
    would all be kept for the backward pass, so there the fit uses gradient checkpointing: on a 256² patch
    peak memory 3.91 → 1.83 GiB for ~15 % more time (AMD EPYC, 2 threads); in gray, where it would save
    1.51 → 1.09 GiB for ~22 % more time, it is left off."""
    from kuosan.tasks.adapt import gain_tune

    bar = _bar(steps) if progress else None
    tuned = gain_tune(prior, y, sigma, steps=steps, wrap=lambda net: prepare(net, y.shape[1], tile=0),
                      patch=patch, seed=seed, checkpointing=y.shape[1] != prior.channels,
                      callback=(lambda info: bar.update(1)) if bar is not None else None)
    if bar is not None:
        bar.close()
    return tuned


def upscale(image, scale: int = 2, *, model=DEFAULT_PRIOR, mode: str = "mmse", steps: int | None = None,
            kernel: str = "bicubic", noise: float | None = 0.0, noise_curve=None, seed: int = 0, tile: int = 256,
            device: str = "cpu", precision: str = "auto", fill_clipped: bool = True, progress: bool = False):
    """Enlarge a PIL image or array ``scale``× (2 or 4; any integer ≥ 2 works). ``kernel``: how the image was
    shrunk (``bicubic``: antialiased, as Pillow/MATLAB/most software; ``box``: block averages). ``noise``: σ
    of the input's noise in 0–255 units (None: estimate it). ``noise_curve``: instead, the input's noise is
    signal-dependent, as a camera's (``"auto"`` or (gain, floor), as in ``denoise``): each data step weighs
    every pixel by its own noise variance (``curve_variance``). ``fill_clipped`` (``mmse`` with noise): values
    at black or white, where a saved image's noise was cut off, are taken at their expected value before
    clipping at each step; False takes them as they are. Alpha is resized bicubic."""
    if int(scale) != scale or scale < 2:
        raise KuosanError(f"scale must be a whole number ≥ 2, got {scale}")
    scale = int(scale)
    picture = _Picture(image)
    noise_model, variance = _input_noise(picture, noise, noise_curve)
    d = prepare(load_prior(model, device, picture.channels, precision), picture.channels, tile)
    out = upscale_tensor(d, picture.tensor.to(device), scale, mode=mode, steps=steps, seed=seed, kernel=kernel,
                         noise_sigma=noise_model, noise_variance=variance, fill_clipped=fill_clipped,
                         progress=progress)
    alpha = None
    if picture.alpha is not None:
        a = torch.from_numpy(picture.alpha).float()[None, None]
        alpha = torch.nn.functional.interpolate(a, scale_factor=scale, mode="bicubic",
                                                align_corners=False).clamp(0, 1)[0, 0].numpy()
    return picture.give_back(out, alpha=alpha)


def _input_noise(picture, noise: float | None, noise_curve=None) -> tuple[float, NoiseVariance | None]:
    """The input's noise: σ in model units (``noise`` given in 0–255 units, or estimated when None), or for a
    ``noise_curve`` (``"auto"``, (gain, floor) or a ``NoiseCurve``; with ``noise`` left at 0) its variance
    at each clean value (``curve_variance``) — a curve without gain is white noise of the floor's σ."""
    if noise_curve is not None:
        if noise != 0:
            raise KuosanError("give noise (white noise) or noise_curve (signal-dependent noise), not both")
        curve = _as_curve(noise_curve, picture)
        if curve.gain > 0:
            return 0.0, curve_variance(curve, picture.tensor)
        return pixel_to_model_sigma(math.sqrt(curve.floor)), None
    if noise is None:
        return estimate_sigma(picture.tensor), None
    if not noise >= 0:
        raise KuosanError(f"noise must be ≥ 0, got {noise}")
    return pixel_to_model_sigma(noise), None


def deblur(image, blur: float | Tensor = 1.6, *, model=DEFAULT_PRIOR, steps: int = 20, noise: float | None = 0.0,
           noise_curve=None, tile: int = 256, device: str = "cpu", precision: str = "auto",
           fill_clipped: bool = True, progress: bool = False):
    """Undo a known blur: ``blur`` is the std in pixels of a Gaussian blur, or a kernel (2-D array, odd
    sides; normalised). ``noise``: σ of the input's noise in 0–255 units (None: estimate it); ``noise_curve``
    and ``fill_clipped`` as in ``upscale``. Alpha is kept."""
    picture = _Picture(image)
    if isinstance(blur, (int, float)):
        if not blur > 0:
            raise KuosanError(f"blur std must be > 0 pixels, got {blur}")
        kernel = gaussian_kernel(float(blur))
    else:
        kernel = torch.as_tensor(blur, dtype=torch.float64)
    noise_model, variance = _input_noise(picture, noise, noise_curve)
    d = prepare(load_prior(model, device, picture.channels, precision), picture.channels, tile)
    out = deblur_tensor(d, picture.tensor.to(device), kernel, steps=steps, noise_sigma=noise_model,
                        noise_variance=variance, fill_clipped=fill_clipped, progress=progress)
    return picture.give_back(out)


def pixels_to_fill(mask):
    """The boolean [H, W] array of the pixels ``mask`` (PIL image or array) marks white (> 50 %)."""
    import numpy as np
    from PIL import Image

    m = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask, dtype=np.float64)
    if m.ndim == 3:
        m = m.mean(-1)
    return m > (127.5 if m.max() > 1 else 0.5)


def inpaint(image, mask, *, model=DEFAULT_PRIOR, mode: str = "mmse", steps: int | None = None,
            resample: int = 3, seed: int = 0, tile: int = 256, device: str = "cpu", precision: str = "auto",
            progress: bool = False):
    """Fill the pixels where ``mask`` is white (> 50 %); the others are kept exactly. ``mode``: ``mmse``
    (best PSNR, smooth in large holes) or ``sample`` (a posterior sample; see ``inpaint_tensor``)."""
    picture = _Picture(image)
    holes = pixels_to_fill(mask)
    if holes.shape != tuple(picture.shape):
        raise KuosanError(f"mask is {holes.shape[1]}×{holes.shape[0]} but the image is "
                          f"{picture.shape[1]}×{picture.shape[0]}")
    fill = torch.from_numpy(holes)
    if not fill.any():
        return picture.give_back(picture.tensor)
    d = prepare(load_prior(model, device, picture.channels, precision), picture.channels, tile)
    out = inpaint_tensor(d, picture.tensor.to(device), fill.to(device), mode=mode, steps=steps, resample=resample,
                         seed=seed, progress=progress)
    return picture.give_back(out)
