"""The flips/rotations and their self-ensemble: exact answers for equivariant and for linear denoisers."""

import pytest
import torch
import torch.nn.functional as F

from kuosan.diffusion.symmetry import DIHEDRAL, FlipEnsemble, turn, turn_back


def test_the_eight_turns_are_distinct_and_each_undone_by_its_inverse():
    x = torch.randn(1, 2, 5, 7)
    square = torch.randn(1, 1, 6, 6)
    seen = []
    for k, flip in DIHEDRAL:
        assert torch.equal(turn_back(turn(x, k, flip), k, flip), x)
        seen.append(turn(square, k, flip))
    assert DIHEDRAL[0] == (0, False) and len(set(DIHEDRAL)) == 8
    assert all(not torch.equal(a, b) for i, a in enumerate(seen) for b in seen[i + 1:])


class Conv:
    """A linear denoiser: zero-padded correlation with a fixed, asymmetric 3×3 kernel."""

    sigma_min, sigma_max, channels = 0.002, 80.0, 1

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, x, sigma, **cond):
        return F.conv2d(x, self.kernel[None, None], padding=1)


def test_the_ensemble_of_a_correlation_is_the_correlation_with_the_symmetrised_kernel():
    kernel = torch.arange(9.0).reshape(3, 3) ** 1.5
    x = torch.randn(2, 1, 9, 12)
    for flips in (1, 2, 5, 8):
        averaged = sum(turn_back(kernel, k, f) for k, f in DIHEDRAL[:flips]) / flips
        got = FlipEnsemble(Conv(kernel), flips)(x, torch.tensor([0.3, 0.3]))
        assert torch.allclose(got, F.conv2d(x, averaged[None, None], padding=1), atol=1e-5)
    symmetric = FlipEnsemble(Conv(kernel), 8)
    assert torch.allclose(symmetric(turn(x, 1, True), 0.3), turn(symmetric(x, 0.3), 1, True), atol=1e-5)


def test_an_exact_denoiser_of_a_flip_invariant_distribution_is_unchanged():
    # i.i.d. N(0, s²) pixels: D(x, σ) = s²/(s²+σ²)·x, which every turn leaves as it is.
    class Exact:
        sigma_min, sigma_max, channels = 0.002, 80.0, 3

        def __call__(self, x, sigma, **cond):
            return 0.25 / (0.25 + sigma.reshape(-1, 1, 1, 1) ** 2) * x

    x, sigma = torch.randn(2, 3, 6, 10), torch.tensor([0.2, 0.7])
    assert torch.allclose(FlipEnsemble(Exact(), 8)(x, sigma), Exact()(x, sigma), atol=1e-6)


def test_image_shaped_conditions_turn_with_the_image_and_others_pass_as_given():
    seen = []

    class Guided:
        sigma_min, sigma_max, channels = 0.002, 80.0, 1

        def __call__(self, x, sigma, guide=None, class_labels=None):
            seen.append(class_labels)
            return x + guide

    x, guide, labels = torch.randn(1, 1, 4, 6), torch.randn(1, 1, 4, 6), torch.tensor([3])
    assert torch.allclose(FlipEnsemble(Guided(), 8)(x, 0.1, guide=guide, class_labels=labels), x + guide)
    assert all(v is labels for v in seen) and len(seen) == 8


def test_flips_out_of_range_are_refused():
    for flips in (0, 9):
        with pytest.raises(ValueError, match="flips"):
            FlipEnsemble(Conv(torch.ones(3, 3)), flips)
