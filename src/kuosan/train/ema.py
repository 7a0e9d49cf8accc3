"""Exponential moving average of the weights, with EDM's half-life-in-images convention."""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch: int, images_seen: int, halflife_kimg: float, rampup: float) -> float:
    """β per step such that the EMA halves every ``halflife`` images; during ramp-up the half-life is
    capped at ``rampup × images_seen`` so early averages are not dominated by the random init."""
    halflife = halflife_kimg * 1000
    if rampup > 0:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1 - beta)
    for eb, b in zip(ema.buffers(), model.buffers(), strict=True):
        eb.copy_(b)
