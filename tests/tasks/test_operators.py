"""Degradation operators: A·A⁺ = I, projections, and the consistent denoiser."""

import pytest
import torch

from kuosan.tasks.operators import BoxDownsample, ConsistentDenoiser, Identity, Mask


def operators():
    known = (torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    return [Identity(), BoxDownsample(2), BoxDownsample(3), BoxDownsample(4), Mask(known)]


@pytest.mark.parametrize("op", operators(), ids=lambda o: type(o).__name__ + str(getattr(o, "scale", "")))
def test_pinv_is_a_right_inverse_and_projection_is_consistent_and_idempotent(op):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 12, generator=g)
    y = op(torch.randn(2, 3, 12, 12, generator=g))
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
