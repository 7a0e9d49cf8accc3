"""A smooth fill of missing pixels: the start of MMSE inpainting (``kuosan.tasks.restore.inpaint_tensor``).

The fill minimises the thin-plate energy ‖Δu‖² (Laplacian with the image reflected at its edges) plus
``membrane``·‖∇u‖² over the missing pixels, the known ones fixed: biharmonic interpolation, as scikit-image's
``inpaint_biharmonic`` (Damelin & Hoang 2018), solved with conjugate gradients channel by channel,
coarse to fine (each scale starts from the half-size fill; the coarsest from a pull-push pyramid fill, a
mask-weighted average at coarser and coarser scales). Holes a few pixels across converge in the default
iterations; wide holes (tens of pixels) get a smooth approximation of the biharmonic fill, which is all the
start of inpainting needs (the prior redraws the inside). Planes are exact fills (they make both energies
stationary), and with ``membrane = 0`` quadratics too, for holes away from the image border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _halve(image: Tensor, known: Tensor) -> tuple[Tensor, Tensor]:
    """Half-size image (the mean of each 2×2 block's known pixels) and its mask (1 where any was known)."""
    weight = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse = F.avg_pool2d(image * known, 2, ceil_mode=True) / weight.clamp_min(1e-12)
    return coarse, (weight > 0).to(image.dtype)


def _double(coarse: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :like.shape[-2],
                                                                                          :like.shape[-1]]


def pull_push_fill(image: Tensor, known: Tensor) -> Tensor:
    """Fill where ``known`` (broadcastable to ``image`` [B, C, H, W], 1 = known) is 0 with the
    mask-weighted average of the known pixels at the finest scale where there are any."""
    known = known.expand_as(image).to(image.dtype)
    if known.min() > 0 or min(image.shape[-2:]) < 2:
        return image
    coarse = pull_push_fill(*_halve(image, known))
    return known * image + (1 - known) * _double(coarse, image)


def _reflect_pad_adjoint(g: Tensor) -> Tensor:
    """Adjoint of ``F.pad(u, (1, 1, 1, 1), mode="reflect")``: fold the border rows and columns back."""
    g = g.clone()
    g[..., :, 2] += g[..., :, 0]
    g[..., :, -3] += g[..., :, -1]
    g = g[..., :, 1:-1]
    g[..., 2, :] += g[..., 0, :]
    g[..., -3, :] += g[..., -1, :]
    return g[..., 1:-1, :]


def _energy_operator(u: Tensor, membrane: float) -> Tensor:
    """(LᵀL + membrane·GᵀG)·u with L the 5-point Laplacian on the image reflected at its edges (so pixels at
    the border and corners are constrained too) and G forward differences."""
    c = u.shape[1]
    k = _LAPLACIAN.to(u)[None, None].repeat(c, 1, 1, 1)
    lap = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="reflect"), k, groups=c)
    out = _reflect_pad_adjoint(F.conv_transpose2d(lap, k, groups=c))
    if membrane:
        for dim in (-1, -2):
            g = u.diff(dim=dim)
            gtg = torch.zeros_like(u)
            gtg.narrow(dim, 0, u.shape[dim] - 1).sub_(g)
            gtg.narrow(dim, 1, u.shape[dim] - 1).add_(g)
            out = out + membrane * gtg
    return out


def smooth_fill(image: Tensor, known: Tensor, *, membrane: float = 1e-3, iterations: int = 100,
                tolerance: float = 1e-5) -> Tensor:
    """Biharmonic fill (see the module docstring) of ``image`` [B, C, H, W] where ``known`` (1 = known,
    broadcastable to the image) is 0; the known pixels are returned unchanged. At most ``iterations``
    conjugate-gradient steps per scale, fewer once the residual's norm is below ``tolerance`` times the
    right-hand side's (per channel). Computed in float64 (the system is ill-conditioned for wide holes)."""
    if image.dim() != 4:
        raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}")
    hole = 1 - known.to(torch.float64)
    if not bool((hole > 0).any()):
        return image.clone()
    # One channel at a time: bounded memory on large photos, and each channel stops on its own residual.
    return torch.cat([_solve(image[:, c:c + 1].to(torch.float64), hole[:, c:c + 1] if hole.shape[1] > 1 else hole,
                             membrane, iterations, tolerance).to(image.dtype) for c in range(image.shape[1])], dim=1)


def _solve(x: Tensor, hole: Tensor, membrane: float, iterations: int, tolerance: float) -> Tensor:
    height, width = x.shape[-2:]
    if min(height, width) < 3:
        return pull_push_fill(x, 1 - hole)
    if min(height, width) >= 16:
        coarse, coarse_known = _halve(x, 1 - hole)
        up = _double(_solve(coarse, 1 - coarse_known, membrane, iterations, tolerance), x)
    else:
        up = pull_push_fill(x, 1 - hole)

    def apply(v: Tensor) -> Tensor:
        return hole * _energy_operator(hole * v, membrane)

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum((-2, -1), keepdim=True)

    # Unknowns v (zero where known): solve apply(v) = −hole·E(known part), from the coarser solution.
    base = x * (1 - hole)
    rhs = -hole * _energy_operator(base, membrane)
    v = hole * up
    r = rhs - apply(v)
    p = r.clone()
    rr = dot(r, r)
    stop = tolerance**2 * dot(rhs, rhs).clamp_min(1e-30)
    for _ in range(iterations):
        if bool((rr <= stop).all()):
            break
        ap = apply(p)
        alpha = rr / dot(p, ap).clamp_min(1e-30)
        v = v + alpha * p
        r = r - alpha * ap
        rr_new = dot(r, r)
        p = r + (rr_new / rr.clamp_min(1e-30)) * p
        rr = rr_new
    return base + hole * v
