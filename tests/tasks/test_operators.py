"""Degradation operators: A·A⁺ = I, projections, and the consistent denoiser."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.errors import KuosanError
from kuosan.tasks.operators import (
    BicubicDownsample,
    Blur,
    BoxDownsample,
    ConsistentDenoiser,
    Identity,
    Mask,
    gaussian_kernel,
)


def operators():
    known = (torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    return [Identity(), BoxDownsample(2), BoxDownsample(3), BoxDownsample(4), Mask(known),
            BicubicDownsample(2), BicubicDownsample(3), BicubicDownsample(4),
            Blur(gaussian_kernel(1.0)), Blur(torch.ones(3, 3)),
            Blur(torch.rand(5, 3, generator=torch.Generator().manual_seed(4)))]


def _name(op) -> str:
    size = getattr(op, "scale", None) or "x".join(map(str, getattr(op, "kernel", torch.zeros(0)).shape))
    return type(op).__name__ + str(size)


@pytest.mark.parametrize("op", operators(), ids=lambda o: _name(o))
def test_pinv_is_a_right_inverse_and_projection_is_consistent_and_idempotent(op):
    g = torch.Generator().manual_seed(1)
    # A blur is ill-conditioned (|K| down to 2e-4 for the Gaussian here): the consistent set cannot be held
    # to 1e-6 in float32, so it is checked in float64.
    dtype = torch.float64 if isinstance(op, Blur) else torch.float32
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=dtype)
    y = op(torch.randn(2, 3, 12, 12, generator=g, dtype=dtype))
    assert torch.allclose(op(op.pinv(y)), y, atol=1e-6)                     # A(A⁺y) = y
    p = op.project(x, y)
    assert torch.allclose(op(p), y, atol=1e-6)                               # consistent with y
    assert torch.allclose(op.project(p, y), p, atol=1e-6)                    # a projection
    # p is the nearest consistent point: no other consistent z is closer to x.
    for _ in range(5):
        z = op.project(torch.randn(x.shape, generator=g), y)
        assert (x - p).norm() <= (x - z).norm() + 1e-5


def test_box_downsample_values_and_null_space_untouched():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    op = BoxDownsample(2)
    assert torch.equal(op(x), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    # A detail with zero block means (null space of A) survives the projection unchanged.
    detail = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)[None, None]
    y = op(x)
    assert torch.allclose(op.project(op.pinv(y) + detail, y), op.pinv(y) + detail)
    with pytest.raises(ValueError, match="multiples"):
        op(torch.zeros(1, 1, 5, 4))


def test_mask_projection_pastes_known_pixels_only():
    known = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    op = Mask(known)
    x, image = torch.full((1, 1, 2, 2), 7.0), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert torch.equal(op.project(x, op(image)), torch.tensor([[[[1.0, 7.0], [7.0, 4.0]]]]))


def test_consistent_denoiser_output_always_satisfies_the_measurement(gaussian):
    op = BoxDownsample(2)
    truth = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    d = ConsistentDenoiser(gaussian, op, op(truth))
    out = d(torch.randn(1, 1, 8, 8), torch.tensor([0.7]))
    assert torch.allclose(op(out), op(truth), atol=1e-6)


@pytest.mark.parametrize("op", operators(), ids=lambda o: _name(o))
def test_prox_solves_the_weighted_least_squares_problem(op):
    """x = argmin ‖A(x) − y‖² + w‖x − z‖² ⇔ Aᵀ(A(x) − y) + w(x − z) = 0 (Aᵀ by autograd); w = 0 projects."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 2, 12, 12, generator=g, dtype=torch.float64)
    y = op(torch.randn(1, 2, 12, 12, generator=g, dtype=torch.float64))
    for weight in (0.05, 1.0, 20.0):
        x = op.prox(z, y, weight).requires_grad_(True)
        residual = op(x) - y
        (adjoint,) = torch.autograd.grad(residual, x, residual)
        torch.testing.assert_close(adjoint + weight * (x - z), torch.zeros_like(z), atol=1e-9, rtol=0)
    torch.testing.assert_close(op.prox(z, y, 0.0), op.project(z, y))


def _matrix(op, shape: tuple[int, int]) -> torch.Tensor:
    """A as a dense [measurements, pixels] float64 matrix, column by column."""
    pixels = shape[0] * shape[1]
    basis = torch.eye(pixels, dtype=torch.float64).reshape(pixels, 1, 1, *shape)
    return torch.stack([op(e).flatten() for e in basis], 1)


@pytest.mark.parametrize("op", operators(), ids=lambda o: _name(o))
def test_prox_with_a_weight_per_measurement_is_the_weighted_least_squares_solution(op):
    """A tensor weight w (σ_y,i²/σ², spread 1000×) gives argmin Σ (A(x) − y)_i²/w_i + ‖x − z‖², checked against
    x = z − Aᵀ(AAᵀ + diag(w))⁻¹(A(z) − y) solved densely (the conjugate gradients of ``weighted_prox`` to their
    1e-3 tolerance for bicubic and blur, exact elsewhere); a constant tensor gives the scalar step."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(1, 1, 12, 12, generator=g, dtype=torch.float64)
    y = op(torch.randn(1, 1, 12, 12, generator=g, dtype=torch.float64))
    a = _matrix(op, (12, 12))
    for spread in (10.0, 1000.0):
        weight = 0.02 * spread ** torch.rand(y.shape, generator=g, dtype=torch.float64)
        r = torch.linalg.solve(a @ a.T + torch.diag(weight.flatten()), a @ z.flatten() - y.flatten())
        exact = z.flatten() - a.T @ r
        for dtype in (torch.float64, torch.float32):
            x = op.prox(z.to(dtype), y.to(dtype), weight.to(dtype)).double().flatten()
            assert float((x - exact).norm() / (exact - z.flatten()).norm()) < 2e-3
    torch.testing.assert_close(op.prox(z, y, torch.full_like(y, 0.3)), op.prox(z, y, 0.3), atol=1e-9, rtol=1e-6)


def test_weighted_prox_needs_positive_weights():
    op = BicubicDownsample(2)
    z = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="> 0"):
        op.prox(z, op(z), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_downsample_matches_pillow(scale):
    """Antialiased bicubic shrinking as Pillow does it (float image, so no rounding)."""
    rng = np.random.default_rng(scale)
    image = rng.random((24, 36)).astype(np.float32)
    ours = BicubicDownsample(scale)(torch.from_numpy(image)[None, None].double())[0, 0].numpy()
    pillow = np.asarray(Image.fromarray(image, mode="F").resize((36 // scale, 24 // scale), Image.BICUBIC))
    np.testing.assert_allclose(ours, pillow, atol=2e-6)
    # Constant images stay constant (rows sum to 1, also at the edges).
    flat = BicubicDownsample(scale)(torch.full((1, 1, 24, 36), 0.7, dtype=torch.float64))
    torch.testing.assert_close(flat, torch.full_like(flat, 0.7))
    with pytest.raises(ValueError, match="multiple"):
        BicubicDownsample(scale)(torch.zeros(1, 1, 24 + 1, 36))


def test_noisy_consistent_denoiser_trusts_y_at_high_sigma_and_the_prior_at_low(gaussian):
    op, truth = BoxDownsample(2), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = op(truth)
    noisy = ConsistentDenoiser(gaussian, op, y, noise_sigma=0.1)
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    high = noisy(x, torch.tensor([10.0]))
    low = noisy(x, torch.tensor([0.001]))
    assert (op(high) - y).abs().max() < 1e-3                                  # w = 1e-4: nearly projected
    torch.testing.assert_close(low, gaussian(x, torch.tensor([0.001])), atol=1e-3, rtol=0)  # w = 1e4


@pytest.mark.parametrize("mode", ["mmse", "sample"])
def test_inpainting_restores_only_the_holes_box_plus_context(gaussian, mode):
    from kuosan.tasks.restore import inpaint_tensor

    shapes = []

    def recording(x, sigma, **cond):
        shapes.append(tuple(x.shape))
        return gaussian(x, sigma)

    recording.sigma_min, recording.sigma_max, recording.channels = 0.002, 80.0, 1
    image = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(6)) * 2 - 1
    fill = torch.zeros(64, 96, dtype=torch.bool)
    fill[20:28, 30:38] = True
    out = inpaint_tensor(recording, image, fill, mode=mode, steps=3, resample=2, context=10)
    assert set(shapes) == {(1, 1, 28, 28)}                                    # 8 + 2·10 on each axis
    assert torch.equal(out[..., ~fill], image[..., ~fill])                  # known pixels untouched
    crop = inpaint_tensor(recording, image[..., 10:38, 20:48], fill[10:38, 20:48], mode=mode, steps=3,
                          resample=2, context=None)
    assert torch.equal(out[..., 10:38, 20:48], crop)
    shapes.clear()
    inpaint_tensor(recording, image, fill, mode=mode, steps=2, resample=1, context=None)
    assert {tuple(sorted(s[-2:])) for s in shapes} == {(64, 96)}           # the whole image (mmse: turned)


def test_mmse_inpainting_starts_from_the_smooth_fill_and_keeps_the_known_pixels(gaussian):
    from kuosan.tasks.fill import smooth_fill
    from kuosan.tasks.restore import inpaint_tensor

    def identity(x, sigma, **cond):
        return x

    identity.sigma_min, identity.sigma_max, identity.channels = 0.002, 80.0, 1
    g = torch.Generator().manual_seed(7)
    image = torch.rand(1, 1, 40, 40, generator=g) * 2 - 1
    fill = torch.rand(40, 40, generator=g) > 0.7
    known = (~fill).float()[None, None]
    # A denoiser that changes nothing leaves the fill as it starts: the thin-plate fill.
    out = inpaint_tensor(identity, image, fill, steps=4, context=None)
    torch.testing.assert_close(out, smooth_fill(image, known), atol=1e-6, rtol=0)
    # The prior then moves it, and exactly `steps` denoiser calls are made.
    gaussian.calls = 0
    out = inpaint_tensor(gaussian, image, fill, steps=5, context=None)
    assert gaussian.calls == 5
    assert torch.equal(out[..., ~fill], image[..., ~fill])
    assert (out - smooth_fill(image, known))[..., fill].abs().max() > 1e-3
    with pytest.raises(KuosanError, match="mmse or sample"):
        inpaint_tensor(gaussian, image, fill, mode="best")


def test_blur_is_a_periodic_convolution_with_the_centred_kernel():
    kernel = torch.rand(3, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = torch.randn(1, 2, 9, 11, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    direct = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 1, 1), mode="circular").reshape(2, 1, 11, 15),
                                        (kernel / kernel.sum()).flip(0, 1)[None, None]).reshape(1, 2, 9, 11)
    torch.testing.assert_close(Blur(kernel)(x), direct)
    assert float(gaussian_kernel(1.5).sum()) == pytest.approx(1.0) and gaussian_kernel(1.5).shape == (11, 11)
    with pytest.raises(ValueError, match="odd sides"):
        Blur(torch.ones(2, 3))
    with pytest.raises(ValueError, match="smaller than the blur kernel"):
        Blur(gaussian_kernel(2.0))(torch.zeros(1, 1, 8, 8))


def test_psnr_is_ten_log10_of_peak_squared_over_mse():
    from kuosan.tasks.restore import psnr

    clean = np.full((4, 6), 100, np.uint8)
    off = clean.astype(np.float64) + np.where(np.arange(24).reshape(4, 6) % 2, 5.0, -5.0)  # MSE 25
    assert psnr(off, clean) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(off / 255, clean / 255, peak=1.0) == pytest.approx(psnr(off, clean))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(clean, clean[:2])


def test_plug_and_play_turns_the_image_a_different_way_each_step_and_back():
    from kuosan.diffusion.symmetry import DIHEDRAL, turn
    from kuosan.tasks.restore import _plug_and_play

    seen = []

    class Spy:
        """Records what it is shown; shrinks towards zero, the same whichever way the image is turned."""

        def __call__(self, x, sigma):
            seen.append(x.clone())
            return 0.8 * x

    y = torch.randn(1, 1, 6, 10)
    op = Mask(torch.ones(1, 1, 6, 10))
    x0 = torch.randn(1, 1, 6, 10)
    turned = _plug_and_play(Spy(), op, y, x0, steps=10, progress=False, noise_sigma=0.1)
    shown, seen[:] = list(seen), []
    plain = _plug_and_play(Spy(), op, y, x0, steps=10, progress=False, noise_sigma=0.1, turns=False)
    torch.testing.assert_close(turned, plain)             # an equivariant denoiser: the same answer
    assert [tuple(s.shape[-2:]) for s in shown] == [(6, 10) if k % 2 == 0 else (10, 6) for k, _ in
                                                    (DIHEDRAL * 2)[:10]]
    sigmas = torch.logspace(math.log10(0.6), math.log10(0.1), 10)       # σ_hi 0.6 down to σ_y
    x = x0
    for i, (k, flip) in enumerate(DIHEDRAL[:3]):           # step i is shown x turned by the i-th turn
        torch.testing.assert_close(shown[i], turn(x, k, flip))
        x = op.prox(0.8 * x, y, (0.1 / float(sigmas[i])) ** 2)
