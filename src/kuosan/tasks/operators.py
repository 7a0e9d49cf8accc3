"""Degradation operators y = A(x) for restoration, each with a pseudo-inverse A⁺ (A·A⁺ = I) and the
projection of an estimate onto the set {x : A(x) = y}, as DDNM (Wang et al. 2023) uses it:

    x ← x − A⁺(A(x) − y)        (keeps x's null-space part, takes the range-space part from y)

and, for a measurement with noise of std σ_y, the proximal step that weighs y against an estimate z of std σ
(DPIR's data step, Zhang et al. 2021; DDNM+'s noisy projection in the same spirit), with w = σ_y²/σ²:

    x = argmin ‖A(x) − y‖² + w·‖x − z‖² = z − Aᵀ(AAᵀ + w·I)⁻¹(A(z) − y)      (w = 0: the projection)

Where the noise differs from measurement to measurement (a camera's grows with the light), w is a tensor on y's
grid, w_i = σ_y,i²/σ², and the step minimises Σ_i (A(x) − y)_i²/w_i + ‖x − z‖²: x = z − Aᵀ(AAᵀ + diag(w))⁻¹(A(z) − y).
Operators whose AAᵀ is diagonal solve that per pixel; ``BicubicDownsample`` and ``Blur`` by preconditioned conjugate
gradients (``weighted_prox``), the preconditioner being their exact solve for the mean weight.

Tensors are [B, C, H, W] in model units. ``Identity`` (plain denoising), ``BoxDownsample`` (s×s averaging),
``BicubicDownsample`` (antialiased bicubic, as Pillow and MATLAB shrink images), ``Mask`` (missing pixels,
inpainting) and ``Blur`` (convolution with a known kernel, deblurring) are here; gray→colour is later work.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


class Operator:
    """Base class: subclasses give ``forward`` (A) and ``pinv`` (A⁺ with A·A⁺ = I)."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """The point of {A(x) = y} nearest to x (exact for the operators here, whose A⁺ is the
        Moore–Penrose inverse)."""
        return x - self.pinv(self.forward(x) - y)

    def prox(self, z: Tensor, y: Tensor, weight: float | Tensor) -> Tensor:
        """argmin_x ‖A(x) − y‖² + weight·‖x − z‖² (weight = σ_y²/σ² for y with noise σ_y; 0 → ``project``); a
        tensor ``weight`` > 0 on y's grid weighs each measurement by its own noise (see the module docstring)."""
        if not isinstance(weight, Tensor) and weight == 0:
            return self.project(z, y)
        raise NotImplementedError(f"{type(self).__name__} has no proximal step for noisy measurements")

    def adjoint(self, y: Tensor) -> Tensor:
        """Aᵀ (for ``weighted_prox``)."""
        raise NotImplementedError

    def gram(self, r: Tensor) -> Tensor:
        """AAᵀ r (for ``weighted_prox``)."""
        return self.forward(self.adjoint(r))

    def gram_solve(self, r: Tensor, weight: float) -> Tensor:
        """(AAᵀ + weight·I)⁻¹ r (for ``weighted_prox``)."""
        raise NotImplementedError

    def gram_mean(self, y: Tensor) -> float:
        """The mean eigenvalue of AAᵀ on y's grid, trace(AAᵀ)/len(y) (for ``weighted_prox``)."""
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


class Identity(Operator):
    def forward(self, x: Tensor) -> Tensor:
        return x

    def pinv(self, y: Tensor) -> Tensor:
        return y

    def prox(self, z: Tensor, y: Tensor, weight: float | Tensor) -> Tensor:
        return (y + weight * z) / (1 + weight)


class BoxDownsample(Operator):
    """Average over scale×scale blocks. A⁺ repeats each pixel scale×scale times (nearest upsampling): since
    A·Aᵀ = I/scale², A⁺ = scale²·Aᵀ. Image sides must be multiples of ``scale``."""

    def __init__(self, scale: int):
        if scale < 1:
            raise ValueError(f"scale must be ≥ 1, got {scale}")
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} are not multiples of {self.scale}")
        return F.avg_pool2d(x, self.scale)

    def pinv(self, y: Tensor) -> Tensor:
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)

    def prox(self, z: Tensor, y: Tensor, weight: float | Tensor) -> Tensor:
        # AAᵀ = I/scale², so (AAᵀ + w)⁻¹ = scale²/(1 + w·scale²) (per pixel for a tensor w) and Aᵀ·scale² = A⁺.
        return z - self.pinv((self.forward(z) - y) / (1 + weight * self.scale**2))


def _keys_cubic(t: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel (a = −0.5: Pillow's and MATLAB's bicubic)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_matrix(size: int, scale: int) -> Tensor:
    """The [size // scale, size] float64 matrix of antialiased bicubic shrinking along one axis: low-res
    pixel i centred at (i + ½)·scale, Keys' kernel stretched by ``scale`` (support 4·scale pixels); taps past
    the edge are dropped and each row renormalised to sum 1 — Pillow's ``resize(…, BICUBIC)``."""
    if size % scale:
        raise ValueError(f"image side {size} is not a multiple of {scale}")
    low = size // scale
    centres = (torch.arange(low, dtype=torch.float64) + 0.5) * scale
    pixels = torch.arange(size, dtype=torch.float64) + 0.5
    support = 2.0 * scale
    first = torch.clamp((centres - support + 0.5).floor(), min=0)           # Pillow's tap window
    last = torch.clamp((centres + support + 0.5).floor(), max=size)
    inside = (pixels[None] - 0.5 >= first[:, None]) & (pixels[None] - 0.5 < last[:, None])
    weights = _keys_cubic((pixels[None] - centres[:, None]) / scale) * inside
    return weights / weights.sum(1, keepdim=True)


class BicubicDownsample(Operator):
    """Antialiased bicubic shrinking by an integer ``scale`` (``bicubic_matrix`` along each axis: y = A_h·x·A_wᵀ).

    A⁺ = Aᵀ(AAᵀ)⁻¹ factorises the same way; the proximal step uses the eigenvectors of the two small Gram
    matrices A_h·A_hᵀ and A_w·A_wᵀ, so it costs a few matrix products for any noise weight. Image sides must
    be multiples of ``scale``.
    """

    def __init__(self, scale: int):
        if scale < 1:
            raise ValueError(f"scale must be ≥ 1, got {scale}")
        self.scale = scale

    def _axis(self, size: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(A, A⁺, eigenvalues of AAᵀ, its eigenvectors) for one axis, in ``like``'s dtype and device."""
        return _axis_factors(size, self.scale, like.dtype, like.device)

    def forward(self, x: Tensor) -> Tensor:
        a_h, a_w = self._axis(x.shape[-2], x)[0], self._axis(x.shape[-1], x)[0]
        return a_h @ x @ a_w.T

    def pinv(self, y: Tensor) -> Tensor:
        p_h = self._axis(y.shape[-2] * self.scale, y)[1]
        p_w = self._axis(y.shape[-1] * self.scale, y)[1]
        return p_h @ y @ p_w.T

    def adjoint(self, y: Tensor) -> Tensor:
        a_h = self._axis(y.shape[-2] * self.scale, y)[0]
        a_w = self._axis(y.shape[-1] * self.scale, y)[0]
        return a_h.T @ y @ a_w

    def gram_solve(self, r: Tensor, weight: float) -> Tensor:
        _, _, l_h, u_h = self._axis(r.shape[-2] * self.scale, r)
        _, _, l_w, u_w = self._axis(r.shape[-1] * self.scale, r)
        r = u_h.T @ r @ u_w                               # in the eigenbasis of AAᵀ = G_h ⊗ G_w
        return u_h @ (r / (l_h[:, None] * l_w[None, :] + weight)) @ u_w.T

    def gram_mean(self, y: Tensor) -> float:
        l_h = self._axis(y.shape[-2] * self.scale, y)[2]
        l_w = self._axis(y.shape[-1] * self.scale, y)[2]
        return float(l_h.mean() * l_w.mean())          # AAᵀ = G_h ⊗ G_w

    def prox(self, z: Tensor, y: Tensor, weight: float | Tensor) -> Tensor:
        if isinstance(weight, Tensor):
            return weighted_prox(self, z, y, weight)
        if weight == 0:
            return self.project(z, y)
        return z - self.adjoint(self.gram_solve(self.forward(z) - y, weight))


@functools.lru_cache(maxsize=8)
def _axis_factors(size: int, scale: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Computed in float64 once per axis size, kept in the working dtype and device: the sampling loops
    call the operator every step, and converting the matrices there would repeat the same copies."""
    a = bicubic_matrix(size, scale)
    values, vectors = torch.linalg.eigh(a @ a.T)
    pinv = a.T @ (vectors / values) @ vectors.T
    return tuple(t.to(device=device, dtype=dtype) for t in (a, pinv, values, vectors))


class Mask(Operator):
    """Keep the known pixels. ``known`` is a {0, 1} tensor broadcastable to x ([H, W], [1, 1, H, W], …);
    y has x's shape with zeros where unknown. A is a diagonal 0/1 matrix, so A⁺ = A and the projection
    pastes y over the known pixels."""

    def __init__(self, known: Tensor):
        self.known = (known > 0.5).float()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.known.to(x)

    def pinv(self, y: Tensor) -> Tensor:
        return y * self.known.to(y)

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        known = self.known.to(x)
        return known * y + (1 - known) * x

    def prox(self, z: Tensor, y: Tensor, weight: float | Tensor) -> Tensor:
        known = self.known.to(z)
        return known * (y + weight * z) / (1 + weight) + (1 - known) * z


def gaussian_kernel(std: float, radius: int | None = None) -> Tensor:
    """A normalised 2-D Gaussian blur kernel of standard deviation ``std`` pixels, (2r+1)², r = ⌈3·std⌉."""
    if not std > 0:
        raise ValueError(f"blur std must be > 0, got {std}")
    radius = max(1, math.ceil(3 * std)) if radius is None else radius
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / std) ** 2)
    kernel = g[:, None] * g[None, :]
    return kernel / kernel.sum()


class Blur(Operator):
    """Convolution with a blur ``kernel`` ([kh, kw], odd sides, normalised to sum 1) with periodic boundaries,
    so A is diagonal in the 2-D Fourier basis: A = F⁻¹·diag(K)·F. Then A⁺ = F⁻¹·diag(K̄/|K|²)·F on the
    frequencies with |K| > ``cutoff`` and 0 elsewhere (the Moore–Penrose inverse once those count as zero;
    A(A⁺y) = y for y = A(x) up to cutoff·|x̂| there), and the proximal step is exact:
    x̂ = (K̄·ŷ + w·ẑ)/(|K|² + w). Callers pad a photo by reflection first (``deblur_tensor``) so the periodic
    wrap-around falls outside it."""

    def __init__(self, kernel: Tensor, cutoff: float = 1e-4):
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise ValueError(f"a blur kernel must be 2-D with odd sides, got shape {tuple(kernel.shape)}")
        if (kernel < 0).any() or kernel.sum() <= 0:
            raise ValueError("a blur kernel must be non-negative with a positive sum")
        self.kernel, self.cutoff = kernel / kernel.sum(), cutoff
        self._spectra: dict[tuple, Tensor] = {}

    def _spectrum(self, x: Tensor) -> Tensor:
        """rfft2 of the kernel on x's H×W grid, centred on pixel (0, 0); kept per size and device."""
        height, width = x.shape[-2:]
        key = (height, width, x.device)
        if key not in self._spectra:
            kh, kw = self.kernel.shape
            if kh > height or kw > width:
                raise ValueError(f"image {height}×{width} is smaller than the blur kernel {kh}×{kw}")
            grid = torch.zeros(height, width, dtype=torch.float64)
            grid[:kh, :kw] = self.kernel
            grid = torch.roll(grid, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._spectra[key] = torch.fft.rfft2(grid).to(x.device)
        return self._spectra[key]

    # In float64 whatever the input: dividing by |K|² (down to cutoff²) would amplify float32 rounding.
    def _apply(self, x: Tensor, spectrum_of: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        k = self._spectrum(x)
        return torch.fft.irfft2(spectrum_of(torch.fft.rfft2(x.double()), k), s=x.shape[-2:]).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._apply(x, lambda xf, k: xf * k)

    def pinv(self, y: Tensor) -> Tensor:
        def inverse(yf: Tensor, k: Tensor) -> Tensor:
            keep = k.abs() > self.cutoff
            return torch.where(keep, yf * k.conj() / k.abs().square().clamp_min(self.cutoff**2), 0)

        return self._apply(y, inverse)

    def adjoint(self, y: Tensor) -> Tensor:
        return self._apply(y, lambda yf, k: yf * k.conj())

    def gram(self, r: Tensor) -> Tensor:
        return self._apply(r, lambda rf, k: rf * k.abs().square())      # one transform pair, not two

    def gram_solve(self, r: Tensor, weight: float) -> Tensor:
        return self._apply(r, lambda rf, k: rf / (k.abs().square() + weight))

    def gram_mean(self, y: Tensor) -> float:
        return float(self.kernel.square().sum())        # the mean of |K|² over the frequencies (Parseval)

    def prox(self, z: Tensor, y: Tensor, weight: float | Tensor) -> Tensor:
        if isinstance(weight, Tensor):
            return weighted_prox(self, z, y, weight)
        if weight == 0:
            return self.project(z, y)
        yf = torch.fft.rfft2(y.double())
        return self._apply(z, lambda zf, k: (k.conj() * yf + weight * zf) / (k.abs().square() + weight))


def weighted_prox(op: Operator, z: Tensor, y: Tensor, weight: Tensor, tolerance: float = 1e-3,
                  max_iterations: int = 100) -> Tensor:
    """x = z − Aᵀr with (AAᵀ + diag(w))·r = A(z) − y, w = ``weight`` > 0 on y's grid, r by preconditioned
    conjugate gradients; stops when ‖residual‖ < ``tolerance``·‖A(z) − y‖.

    The preconditioner is S·(AAᵀ + w̄·I)⁻¹·S (``op.gram_solve``), w̄ the weights' geometric mean and
    S = diag(√((w̄ + ḡ)/(w + ḡ))), ḡ the mean eigenvalue of AAᵀ (``op.gram_mean``): exact when the weights are all
    w̄; where a weight is far above ḡ (the data step late on a σ ladder, AAᵀ negligible beside it) S² ≈ w̄/w undoes
    the weight's spread, and where it is far below, S ≈ 1 and the system is AAᵀ's, solved exactly. A camera's
    noise-variance spread of 128 over random pixels then takes 2–22 iterations instead of 11–63 with S = I
    (antialiased bicubic ×2/×4 on 256², Gaussian blur 1.6 and 3, σ from 0.6 to 0.01, tolerance 1e-5). Deblurring
    the shipped astronaut (gray, camera noise 6·x + 4) took 13–19 iterations per step at the default 1e-3 and
    17–27 at 1e-4, for the same PSNR to 0.001 dB. Each iteration is one ``gram`` (AAᵀ) and one ``gram_solve``
    on the measurement grid."""
    if not bool((weight > 0).all()):
        raise ValueError("per-measurement prox weights must all be > 0")
    weight = weight.expand_as(y)
    mean, typical = float(weight.log().mean().exp()), op.gram_mean(y)
    scaling = ((mean + typical) / (weight + typical)).sqrt()
    b = op.forward(z) - y
    goal = tolerance * float(b.norm())
    if goal == 0:
        return z

    def gram(v: Tensor) -> Tensor:
        return op.gram(v) + weight * v

    def precondition(v: Tensor) -> Tensor:
        return scaling * op.gram_solve(scaling * v, mean)

    r = precondition(b)
    residual = b - gram(r)
    direction = step = precondition(residual)
    rho = float((residual * step).sum())
    for _ in range(max_iterations):
        if float(residual.norm()) <= goal:
            break
        g = gram(direction)
        alpha = rho / float((direction * g).sum())
        r, residual = r + alpha * direction, residual - alpha * g
        step = precondition(residual)
        rho, rho_old = float((residual * step).sum()), rho
        direction = step + (rho / rho_old) * direction
    return z - op.adjoint(r)


class ConsistentDenoiser(torch.nn.Module):
    """D'(x, σ) = project(D(x, σ), y): the denoiser's estimate moved onto {A(x) = y} at every call, so any
    sampler becomes a DDNM-style restoration sampler with no change to the sampler. With ``noise_sigma`` σ_y > 0
    the estimate is instead weighed against y by the proximal step with weight σ_y²/σ²: y dominates while σ is
    large, the prior once σ falls below σ_y. ``noise_variance``, a function giving y's noise variance per
    measurement at A(the estimate) (signal-dependent noise), weighs each measurement by its own (instead of
    ``noise_sigma``)."""

    def __init__(self, denoiser, operator: Operator, y: Tensor, noise_sigma: float = 0.0,
                 noise_variance: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.denoiser, self.operator, self.y, self.noise_sigma = denoiser, operator, y, noise_sigma
        self.noise_variance = noise_variance
        self.sigma_min = denoiser.sigma_min
        self.sigma_max = denoiser.sigma_max
        self.channels = denoiser.channels

    def forward(self, x: Tensor, sigma, **cond) -> Tensor:
        estimate = self.denoiser(x, sigma, **cond)
        if self.noise_sigma == 0 and self.noise_variance is None:
            return self.operator.project(estimate, self.y)
        sigma = float(torch.as_tensor(sigma).flatten()[0])
        if self.noise_variance is not None:
            variance = self.noise_variance(self.operator.forward(estimate))
            return self.operator.prox(estimate, self.y, variance / max(sigma, 1e-12) ** 2)
        return self.operator.prox(estimate, self.y, (self.noise_sigma / max(sigma, 1e-12)) ** 2)
