import pytest
import torch

from kuosan.tasks.fill import _energy_operator, _reflect_pad_adjoint, pull_push_fill, smooth_fill


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    j = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    return i, j


def test_the_energy_operator_is_symmetric_and_the_padding_adjoint_exact():
    g = torch.Generator().manual_seed(0)
    u, v = (torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64) for _ in range(2))
    padded = torch.randn(2, 3, 11, 13, generator=g, dtype=torch.float64)
    lhs = (torch.nn.functional.pad(u, (1, 1, 1, 1), mode="reflect") * padded).sum()
    torch.testing.assert_close(lhs, (u * _reflect_pad_adjoint(padded)).sum(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((_energy_operator(u, 0.1) * v).sum(), (u * _energy_operator(v, 0.1)).sum(),
                               rtol=1e-12, atol=1e-12)


def test_a_plane_is_filled_exactly_and_known_pixels_are_kept():
    i, j = _grid(40, 50)
    plane = (0.3 + 0.02 * i - 0.015 * j)[None, None].float()
    known = torch.ones(1, 1, 40, 50)
    known[..., 8:30, 12:35] = 0                               # a wide hole, away from the border
    filled = smooth_fill(plane * known, known, iterations=500, tolerance=1e-10)
    torch.testing.assert_close(filled, plane, atol=1e-5, rtol=0)
    damaged = plane.clone()
    damaged[known == 0] = 7.0                                 # whatever is in the hole is ignored
    assert torch.equal(smooth_fill(damaged, known)[known == 1], plane[known == 1])


def test_a_quadratic_is_filled_exactly_without_the_membrane_term():
    i, j = _grid(32, 32)
    quadratic = (0.001 * (i - 10) ** 2 - 0.002 * (i - 16) * (j - 5) + 0.0015 * j**2)[None, None]
    known = torch.ones(1, 1, 32, 32, dtype=torch.float64)
    known[..., 9:21, 6:25] = 0
    exact = smooth_fill(quadratic * known, known, membrane=0.0, iterations=2000, tolerance=1e-13)
    torch.testing.assert_close(exact, quadratic, atol=1e-8, rtol=0)
    # The default's small membrane term moves it only slightly.
    near = smooth_fill(quadratic * known, known, iterations=2000, tolerance=1e-13)
    assert 0 < (near - quadratic).abs().max() < 0.02


def test_a_wide_hole_converges_to_the_biharmonic_fill_and_the_default_is_on_its_way():
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 96, 96, generator=g, dtype=torch.float64), 5, 1, 2)
    known = torch.ones(1, 1, 96, 96, dtype=torch.float64)
    known[..., 20:70, 30:80] = 0
    hole = known.expand_as(image) == 0
    converged = smooth_fill(image, known, iterations=5000, tolerance=1e-13)

    def rms_error(fill):
        return float((fill - converged)[hole].pow(2).mean().sqrt())

    # Converged: the stationarity condition (the energy's gradient vanishes on the hole) holds.
    gradient = _energy_operator(converged, 1e-3)[hole]
    assert gradient.abs().max() < 1e-9
    errors = [rms_error(smooth_fill(image, known, iterations=n)) for n in (25, 100, 400)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.8 * rms_error(pull_push_fill(image, known))


def test_fill_touching_the_border_and_all_channels_at_once():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 20, 24, generator=g)
    known = (torch.rand(1, 1, 20, 24, generator=g) > 0.6).float()
    known[..., :4, :5] = 0                                    # a hole in the corner
    filled = smooth_fill(image, known)
    assert filled.shape == image.shape and filled.dtype == image.dtype and torch.isfinite(filled).all()
    assert torch.equal(filled[known.expand_as(image) == 1], image[known.expand_as(image) == 1])
    # Channels and batch items are independent: filling one alone gives the same, to the solver's tolerance
    # (the iterations stop when every batch item has converged).
    torch.testing.assert_close(smooth_fill(image[1:, 2:], known), filled[1:, 2:], atol=2e-4, rtol=0)
    lo, hi = image.min(), image.max()
    assert filled.min() > lo - 0.5 and filled.max() < hi + 0.5  # smooth, no blow-up at the corner


def test_nothing_to_fill_and_bad_shapes():
    image = torch.rand(1, 1, 5, 5)
    assert torch.equal(smooth_fill(image, torch.ones(1, 1, 5, 5)), image)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        smooth_fill(image[0], torch.ones(5, 5))
