"""Stein's unbiased risk estimate: equal in expectation to the true MSE, which it never sees."""

import pytest
import torch

from kuosan.diffusion import sure, sure_backward


class Shrink(torch.nn.Module):
    """D(y) = a·y, or a·tanh(y/a) (nonlinear, divergence varies per pixel)."""

    def __init__(self, a: float, nonlinear: bool = False):
        super().__init__()
        self.a, self.nonlinear = a, nonlinear

    def forward(self, y, sigma):
        return self.a * torch.tanh(y / self.a) if self.nonlinear else self.a * y


@pytest.mark.parametrize("nonlinear", [False, True])
@pytest.mark.parametrize("a", [0.3, 0.8, 1.0])
def test_sure_matches_the_true_error_it_never_sees(a, nonlinear):
    g = torch.Generator().manual_seed(0)
    s, sigma = 0.5, 0.3
    x0 = s * torch.randn(4, 1, 256, 256, generator=g)
    y = x0 + sigma * torch.randn(x0.shape, generator=g)
    d = Shrink(a, nonlinear)
    true_mse = (d(y, sigma) - x0).pow(2).mean().item()
    assert sure(d, y, sigma, generator=g).item() == pytest.approx(true_mse, abs=2e-3)
    if not nonlinear:    # and the analytic risk of a·y on N(0, s²) data: (1 − a)²s² + a²σ²
        assert true_mse == pytest.approx((1 - a) ** 2 * s**2 + a**2 * sigma**2, rel=0.01)


def test_sure_is_differentiable_and_its_minimiser_is_the_wiener_gain():
    g = torch.Generator().manual_seed(1)
    s, sigma = 0.5, 0.4
    y = s * torch.randn(1, 1, 256, 256, generator=g) + sigma * torch.randn(1, 1, 256, 256, generator=g)
    a = torch.tensor(1.0, requires_grad=True)
    opt = torch.optim.SGD([a], lr=0.5)
    for _ in range(100):
        loss = sure(lambda x, sig: a * x, y, sigma, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert a.item() == pytest.approx(s**2 / (s**2 + sigma**2), abs=0.02)


def test_sure_backward_gives_sures_value_and_gradient():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1))
    y = torch.randn(2, 1, 16, 16)

    def d(x, sigma):
        return x + net(x)

    value = sure(d, y, 0.3, generator=torch.Generator().manual_seed(5))
    value.backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    got = sure_backward(d, y, 0.3, generator=torch.Generator().manual_seed(5))
    assert got == pytest.approx(value.item(), abs=1e-5)
    for p, g in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_masked_sure_estimates_the_error_on_the_masked_pixels_where_clipping_breaks_plain_sure():
    """Clip the noisy image at ±0.6 (as an 8-bit photo is clipped at black and white): over all pixels SURE is
    far off, over pixels chosen independently of the noise (clean value 4σ clear of the ends) it matches their
    true error; an all-true mask is no mask, an empty one an error."""
    g = torch.Generator().manual_seed(2)
    sigma = 0.1
    x0 = 0.5 * torch.randn(2, 1, 256, 256, generator=g)
    y = (x0 + sigma * torch.randn(x0.shape, generator=g)).clamp(-0.6, 0.6)
    keep = x0.abs() < 0.6 - 4 * sigma
    d = Shrink(0.8, nonlinear=True)
    error = (d(y, sigma) - x0).pow(2)
    masked = sure(d, y, sigma, generator=torch.Generator().manual_seed(3), mask=keep).item()
    assert masked == pytest.approx(error[keep].mean().item(), rel=0.02)
    assert sure(d, y, sigma, generator=g).item() < 0.5 * error.mean().item()
    everywhere = torch.ones_like(keep)
    for a, b in [(sure(d, y, sigma, generator=torch.Generator().manual_seed(4), mask=everywhere),
                  sure(d, y, sigma, generator=torch.Generator().manual_seed(4)))]:
        assert a.item() == pytest.approx(b.item(), rel=1e-5)
    with pytest.raises(ValueError, match="no pixel"):
        sure(d, y, sigma, mask=torch.zeros_like(keep))
