"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper, not a sampler option."""

from __future__ import annotations

import torch
from torch import Tensor

from kuosan.diffusion.precond import as_sigma_batch

NULL_LABEL = -1  # the class label that means "unconditional"


class ClassifierFreeGuidance:
    """D_w(x; σ, c) = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)).

    w = 1 is the plain conditional model, w = 0 the unconditional one, w > 1 strengthens the condition.
    Both branches run in one batched call, so a sampler's number of denoiser calls is unchanged
    (each call costs two network evaluations per image).
    """

    def __init__(self, denoiser, scale: float):
        self.denoiser = denoiser
        self.scale = float(scale)
        self.sigma_min = denoiser.sigma_min
        self.sigma_max = denoiser.sigma_max
        self.channels = denoiser.channels

    def __call__(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, **cond) -> Tensor:
        if class_labels is None or self.scale == 1.0:
            return self.denoiser(x, sigma, class_labels=class_labels, **cond)
        sigma = as_sigma_batch(sigma, x)
        labels = torch.cat([class_labels, torch.full_like(class_labels, NULL_LABEL)])
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), class_labels=labels, **cond)
        cond_x0, uncond_x0 = both.chunk(2)
        return uncond_x0 + self.scale * (cond_x0 - uncond_x0)
