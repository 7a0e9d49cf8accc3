"""Generate images from a denoiser with any registered sampler."""

from __future__ import annotations

import torch
from torch import Tensor

from kuosan import samplers
from kuosan.diffusion.guidance import ClassifierFreeGuidance
from kuosan.errors import KuosanError


def generate(denoiser, n: int, *, size: int | tuple[int, int] | None = None, sampler: str = "heun",
             steps: int | None = 18, nfe: int | None = None, seed: int = 0, labels: Tensor | list | None = None,
             guidance: float = 1.0, batch_size: int = 256, sigma_min: float | None = None,
             sigma_max: float | None = None, sigmas: Tensor | None = None, mean_start: bool = False,
             callback=None, progress: bool = False) -> Tensor:
    """Draw ``n`` images [n, C, H, W] in [-1, 1].

    ``steps`` is the sampler's number of steps on the σ ladder kuosan recommends for it (heun: Karras ρ=7,
    EDM's 18 steps = 35 denoiser calls); give ``nfe`` instead to fit the sampler into that many calls.
    ``labels`` (class indices, −1 = none) and ``guidance`` (classifier-free guidance scale; 1 = off) apply
    to class-conditional models. With a deterministic sampler the same ``seed`` gives the same images
    whatever the ``batch_size``. ``sigmas`` — an explicit σ ladder (descending, ending in 0; e.g. from
    ``kuosan.samplers.tune_sigmas``) — replaces ``steps``/``nfe``. ``mean_start`` starts each draw from the
    data mean the model predicts at σ_max rather than from 0 (``kuosan.samplers.mean_start``; one more
    denoiser call per batch): it removes a bias of about |mean|·spread/σ_max, which matters for data far from
    zero mean or a small σ_max, less for images in [-1, 1] with σ_max = 80.
    """
    if n < 1:
        raise KuosanError(f"n must be at least 1, got {n}")
    info = _sampler(sampler)
    lo = sigma_min if sigma_min is not None else denoiser.sigma_min
    hi = sigma_max if sigma_max is not None else denoiser.sigma_max
    if sigmas is not None:
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
        if len(sigmas) < 2 or sigmas[-1] != 0 or not bool((sigmas.diff() < 0).all()) or sigmas[-2] <= 0:
            raise KuosanError("a σ ladder must be descending, positive and end in 0, e.g. 80,5,1,0.1,0")
    elif nfe is not None:
        sigmas = samplers.recommended_sigmas(sampler, nfe, lo, hi)
    else:
        if steps is None or steps < 1:
            raise KuosanError(f"steps must be at least 1, got {steps}")
        sigmas = info.ladder(steps, lo, hi)
    height, width = _image_size(denoiser, size)
    labels = _checked_labels(denoiser, labels, n)
    denoiser = _guided(denoiser, guidance, labels)

    device = device_of(denoiser)
    generator = torch.Generator().manual_seed(seed)
    # Draw all initial noise up front on the CPU so results do not depend on the batch size or device.
    noise = torch.randn(n, denoiser.channels, height, width, generator=generator)
    fn = info.fn
    out = []
    from tqdm.auto import tqdm

    batches = range(0, n, batch_size)
    for start in tqdm(batches, disable=not progress or len(batches) < 2, desc="sampling", unit="batch"):
        cond = {}
        if labels is not None:
            cond["class_labels"] = labels[start:start + batch_size].to(device)
        batch_gen = torch.Generator(device=device).manual_seed(seed * 100003 + start)
        with torch.no_grad():
            x = noise[start:start + batch_size].to(device)
            x = samplers.mean_start(denoiser, x, sigmas[0], **cond) if mean_start else x * sigmas[0]
            out.append(fn(denoiser, x, sigmas.to(device), generator=batch_gen, callback=callback, **cond).cpu())
    return torch.cat(out)


def tune_ladder(denoiser, draws: int, *, sampler: str = "unipc", nfe: int = 10, seed: int = 0,
                labels: Tensor | None = None, guidance: float = 1.0, size: int | tuple[int, int] | None = None,
                progress: bool = False) -> Tensor:
    """A σ ladder for ``sampler`` within ``nfe`` calls, tuned to this model on ``draws`` noise images of its
    own (seeded apart from ``generate``'s, so the images later sampled are not the ones it was fitted to);
    see ``kuosan.samplers.tune_sigmas``. ``labels`` (one per draw) and ``guidance`` as in ``generate``."""
    from kuosan.samplers.tuning import tune_sigmas

    _sampler(sampler)
    if draws < 1:
        raise KuosanError(f"need at least 1 draw to tune a ladder, got {draws}")
    height, width = _image_size(denoiser, size)
    labels = _checked_labels(denoiser, labels, draws)
    denoiser = _guided(denoiser, guidance, labels)
    device = device_of(denoiser)
    noise = torch.randn(draws, denoiser.channels, height, width,
                        generator=torch.Generator().manual_seed(10_007 + seed)).to(device)
    cond = {} if labels is None else {"class_labels": labels.to(device)}
    try:
        return tune_sigmas(denoiser, sampler, noise, nfe, progress=progress, **cond).cpu()
    except ValueError as e:  # a stochastic sampler, a σ range the model cannot take
        raise KuosanError(str(e)) from None


def _image_size(denoiser, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(height, width): ``size`` as given, or the size the model was trained at."""
    if size is None:
        config = getattr(denoiser, "config", None)
        if config is None:
            raise KuosanError("size is needed for a denoiser without a config")
        size = config.data.size
    return (size, size) if isinstance(size, int) else tuple(size)


def _checked_labels(denoiser, labels: Tensor | list | None, n: int) -> Tensor | None:
    """``labels`` as n class indices (one given: for all), checked against the model's classes."""
    if labels is None:
        return None
    config = getattr(denoiser, "config", None)
    num_classes = len(config.data.class_names) if config is not None else None
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n:
        raise KuosanError(f"got {labels.numel()} labels for {n} images")
    if num_classes == 0:
        raise KuosanError("this model is unconditional: it takes no class label")
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise KuosanError(f"label {int(labels.max())} out of range: the model has {num_classes} classes")
    return labels


def _guided(denoiser, guidance: float, labels: Tensor | None):
    """The denoiser with classifier-free guidance of scale ``guidance`` (1 = off, the denoiser itself)."""
    if guidance == 1.0:
        return denoiser
    if labels is None:
        raise KuosanError("guidance needs class labels")
    return ClassifierFreeGuidance(denoiser, guidance)


def device_of(denoiser) -> torch.device:
    """Where a denoiser's weights live (CPU for weightless denoisers); looks through wrappers."""
    while not isinstance(denoiser, torch.nn.Module) and hasattr(denoiser, "denoiser"):
        denoiser = denoiser.denoiser
    for p in denoiser.parameters() if isinstance(denoiser, torch.nn.Module) else ():
        return p.device
    return torch.device("cpu")


def _sampler(name: str):
    try:
        return samplers.info(name)
    except ValueError as e:
        raise KuosanError(str(e)) from None
