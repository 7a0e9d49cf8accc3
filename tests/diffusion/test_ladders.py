import math

import pytest
import torch

from kuosan.diffusion import (
    alpha_bar_to_sigma,
    cosine_sigmas,
    ddpm_alphas_cumprod,
    karras_sigmas,
    knee_sigmas,
    loglinear_sigmas,
    vp_sigmas,
)

LADDERS = [karras_sigmas, loglinear_sigmas, cosine_sigmas, vp_sigmas, knee_sigmas]


@pytest.mark.parametrize("ladder", LADDERS)
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_ladders_descend_and_end_at_zero(ladder, n):
    sigmas = ladder(n, 0.01, 50.0)
    assert sigmas.shape == (n + 1,)
    assert sigmas[-1] == 0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert sigmas[0].item() == pytest.approx(50.0, rel=1e-5)
    if n > 1:
        assert sigmas[-2].item() == pytest.approx(0.01, rel=1e-4)


def test_knee_ladder_jumps_once_then_is_uniform_in_log_sigma():
    sigmas = knee_sigmas(10, 0.002, 80.0).double()
    assert sigmas[0] == 80 and sigmas[1].item() == pytest.approx(5.0, rel=1e-6)
    assert sigmas[-2].item() == pytest.approx(0.005, rel=1e-5) and sigmas[-1] == 0  # the floor, not σ_min
    ratios = sigmas[1:-2] / sigmas[2:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (5.0 / 0.005) ** (1 / 8)), rtol=1e-5, atol=0)
    torch.testing.assert_close(knee_sigmas(6, 0.002, 4.0), loglinear_sigmas(6, 0.005, 4.0))  # no room for a knee
    torch.testing.assert_close(knee_sigmas(8, 0.01, 80.0)[-2], torch.tensor(0.01))          # σ_min above floor
    few = knee_sigmas(5, 0.002, 80.0).double()   # few levels: no step larger than 4.6× below the knee
    assert few[1].item() == pytest.approx(5.0) and few[-2].item() == pytest.approx(5.0 / 4.6**3, rel=1e-5)


def test_karras_matches_edm_formula():
    n, lo, hi, rho = 5, 0.002, 80.0, 7.0
    expected = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]
    torch.testing.assert_close(karras_sigmas(n, lo, hi, rho)[:-1], torch.tensor(expected))


def test_loglinear_is_uniform_in_log_sigma():
    logs = loglinear_sigmas(6, 0.01, 100.0)[:-1].log()
    diffs = logs[1:] - logs[:-1]
    torch.testing.assert_close(diffs, torch.full_like(diffs, -math.log(1e4) / 5))


def test_vp_ladder_matches_discrete_ddpm_linear_schedule():
    """The continuous VP schedule (β_min=0.1, β_max=20) is the limit of DDPM's linear β_t over 1000 steps."""
    discrete = alpha_bar_to_sigma(ddpm_alphas_cumprod(1000, "linear"))
    ladder = vp_sigmas(1000, eps_t=1e-3)[:-1].flip(0)  # ascending, t = 0.001 … 1
    # Same grid t_k = (k+1)/1000; a product of (1 − β_k) vs. the integral of β(t) differ by about half a
    # step: at most 0.05 in log σ (5 %), at the low-σ end.
    assert torch.allclose(ladder.double().log(), discrete.log(), atol=0.05)


def test_cosine_ladder_matches_discrete_cosine_schedule_in_the_middle():
    discrete = alpha_bar_to_sigma(ddpm_alphas_cumprod(1000, "cosine"))
    lo, hi = float(discrete[100]), float(discrete[900])
    ladder = cosine_sigmas(801, lo, hi)[:-1].flip(0)
    assert torch.allclose(ladder.double().log(), discrete[100:901].log(), atol=0.01)


def test_bad_ladder_arguments_are_rejected():
    with pytest.raises(ValueError):
        karras_sigmas(0)
    with pytest.raises(ValueError):
        loglinear_sigmas(5, 1.0, 0.5)
    with pytest.raises(ValueError):
        ddpm_alphas_cumprod(10, "quadratic")
