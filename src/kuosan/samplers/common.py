"""Helpers shared by the sampler functions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Callback = Callable[[dict], None]


def denoise(denoiser, x: Tensor, sigma: Tensor, cond: dict) -> Tensor:
    """Call D with σ broadcast to a [B] tensor, as the denoiser contract asks."""
    return denoiser(x, sigma.to(x.device, torch.float32).expand(x.shape[0]), **cond)


def report(callback: Callback | None, i: int, x: Tensor, sigma: Tensor, x0: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": float(sigma), "denoised": x0})
