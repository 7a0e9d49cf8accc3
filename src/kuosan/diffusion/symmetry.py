"""The eight flips and rotations of the square, and the self-ensemble over them.

A photo's statistics do not change when it is turned or mirrored, so neither should an MMSE denoiser's
answer; a trained network's does a little, and the average of its estimates of the image turned each way
(each turned back) is a better estimate than any one of them (the "self-ensemble" of Timofte, Rothe and
Van Gool 2016, "Seven ways to improve example-based single image super resolution").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# (quarter turns, mirrored): the identity first, then the others, so the first n are a fixed choice of n.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


def turn(x: Tensor, k: int, flip: bool) -> Tensor:
    """Rotate the last two dimensions by k quarter turns, then mirror them left–right if ``flip``."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def turn_back(x: Tensor, k: int, flip: bool) -> Tensor:
    """The inverse of ``turn(·, k, flip)``."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, -k, dims=(-2, -1))


def check_flips(flips: int) -> None:
    if not 1 <= flips <= len(DIHEDRAL):
        raise ValueError(f"flips must be 1 to {len(DIHEDRAL)}, got {flips}")


def turn_cond(cond: dict, like: Tensor, k: int, flip: bool) -> dict:
    """Condition keywords for an image turned by (k, flip): planes of the image's shape (a guide) turn with
    it; anything else (class labels) is passed as given."""
    return {key: turn(v, k, flip) if torch.is_tensor(v) and v.ndim == 4 and v.shape[-2:] == like.shape[-2:]
            else v for key, v in cond.items()}


class FlipEnsemble(nn.Module):
    """D averaged over the first ``flips`` of ``DIHEDRAL``: mean over g of g⁻¹·D(g·x, σ). ``flips`` times the
    work of one pass; an exact denoiser of a flip-invariant distribution is unchanged by it."""

    def __init__(self, denoiser, flips: int):
        super().__init__()
        check_flips(flips)
        self.denoiser, self.flips = denoiser, flips
        self.sigma_min = getattr(denoiser, "sigma_min", 0.002)
        self.sigma_max = getattr(denoiser, "sigma_max", 80.0)
        self.channels = denoiser.channels

    def forward(self, x: Tensor, sigma, **cond) -> Tensor:
        total = torch.zeros_like(x)
        for k, flip in DIHEDRAL[:self.flips]:
            total += turn_back(self.denoiser(turn(x, k, flip), sigma, **turn_cond(cond, x, k, flip)), k, flip)
        return total / self.flips
