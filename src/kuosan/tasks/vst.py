"""Variance stabilisation: a camera's signal-dependent noise made white, for a prior trained on white noise.

A photo's noise is mostly Poisson–Gaussian: z = gain·p + n with p ~ Poisson(x / gain) (photon shot noise) and
n ~ N(0, floor) (read noise), so its variance gain·x + floor grows with the clean value x
(``kuosan.tasks.noise_level.NoiseCurve``). One σ for the whole photo then over-smooths its shadows or leaves
noise in its highlights. The generalized Anscombe transform (Starck, Murtagh & Bijaoui 1998)

    f(z) = (2 / gain) · sqrt(gain·z + 3/8·gain² + floor)

makes the noise nearly white with unit variance, so the Gaussian prior denoises f(z) at one σ. Its output
estimates E[f(z) | x], which is not f(x) (f is concave), so the plain algebraic inverse of f would be biased
dark; the exact unbiased inverse maps E[f(z) | x] back to x. It is used here in Mäkitalo & Foi's closed-form
approximation (IEEE TIP 2011 for Poisson, with the Gaussian part's variance taken off for Poisson–Gaussian, TIP
2013), in units of the gain, with D = the denoised value:

    x / gain ≈ D²/4 + √(3/2)/4 · D⁻¹ − 11/8 · D⁻² + 5/8 · √(3/2) · D⁻³ − 1/8 − floor / gain²

which is 0 at D = 2√(3/8), what f gives a dark pixel without read noise, and rises from there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kuosan.tasks.noise_level import NoiseCurve

_ROOT_3_2 = math.sqrt(1.5)


class GeneralizedAnscombe:
    """The generalized Anscombe transform for one ``NoiseCurve`` (0–255 pixel units, whatever the file's bit
    depth), on pixel values (``forward``, ``inverse``) and on images in model units (``to_model``, ``from_model``:
    [-1, 1] for pixels 0–255 in and out, the stabilised image spread so that 0 and 255 land on −1 and 1 again;
    a value clipped at black or white stays at an end). ``sigma``: the stabilised noise's σ in model units."""

    def __init__(self, curve: NoiseCurve, peak: float = 255.0):
        if curve.gain <= 0:
            raise ValueError("the generalized Anscombe transform needs a gain > 0 (white noise needs none)")
        self.curve, self.peak = curve, peak
        self._low, self._high = self.forward(torch.tensor(0.0)), self.forward(torch.tensor(peak))
        self.sigma = float(2.0 / (self._high - self._low))

    def forward(self, z: Tensor) -> Tensor:
        """f(z) for pixel values z: noise of unit variance, nearly."""
        g, floor = self.curve.gain, self.curve.floor
        return (2.0 / g) * (g * z + 0.375 * g * g + floor).clamp_min(0).sqrt()

    def inverse(self, d: Tensor) -> Tensor:
        """The pixel value x whose E[f(z) | x] is d (the closed-form exact unbiased inverse), ≥ 0."""
        g = self.curve.gain
        d = d.clamp_min(2 * math.sqrt(0.375))       # f's value for a dark pixel without read noise: x = 0 below
        counts = (d * d / 4 + _ROOT_3_2 / 4 / d - 11 / 8 / d**2 + 5 / 8 * _ROOT_3_2 / d**3 - 1 / 8
                  - self.curve.floor / g**2)
        return g * counts.clamp_min(0)

    def to_model(self, y: Tensor) -> Tensor:
        """An image in model units → its stabilised image in model units (noise σ = ``sigma``)."""
        t = self.forward((y + 1) * (self.peak / 2))
        return 2 * (t - self._low) / (self._high - self._low) - 1

    def from_model(self, y: Tensor) -> Tensor:
        """A denoised stabilised image in model units → the denoised image in model units."""
        d = self._low + (y + 1) * ((self._high - self._low) / 2)
        return self.inverse(d) * (2 / self.peak) - 1
