import pytest
import torch
from torch import nn

from kuosan.diffusion import EDMDenoiser, VPEpsDenoiser, alpha_bar_to_sigma, ddpm_alphas_cumprod
from kuosan.diffusion.forward import vp_to_sigma
from kuosan.diffusion.precond import edm_scalings
from tests.conftest import GaussianDenoiser


class ConvNet(nn.Module):
    """A raw network with random weights, to check preconditioning independently of training."""

    channels = 1

    def __init__(self, zero: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.zero = zero
        if zero:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x, c_noise, class_labels=None):
        return self.conv(x) + (0 if self.zero else c_noise.reshape(-1, 1, 1, 1))


def test_edm_scalings_match_table_1():
    sigma, sd = torch.tensor([0.5, 2.0]), 0.5
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sd)
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # Unit variance of the raw network's input and of its ideal target (EDM's design goals):
    torch.testing.assert_close(c_in**2 * (sd**2 + sigma**2), torch.ones(2))


def test_denoiser_is_identity_as_sigma_goes_to_zero():
    torch.manual_seed(0)
    d = EDMDenoiser(ConvNet(), sigma_data=0.5)
    x = torch.randn(2, 1, 8, 8)
    for sigma in (1e-3, 1e-5):
        err = (d(x, sigma) - x).abs().max().item()
        assert err < 50 * sigma  # c_out ≈ σ and F stays bounded


def test_zero_network_is_the_exact_denoiser_of_gaussian_data_with_variance_sigma_data_squared():
    """For x0 ~ N(0, σ_data²), D*(x; σ) = σ_data²/(σ² + σ_data²)·x = c_skip·x, so the ideal F is 0."""
    d = EDMDenoiser(ConvNet(zero=True), sigma_data=0.5)
    exact = GaussianDenoiser(mean=0.0, std=0.5)
    x = torch.randn(5, 1, 4, 4)
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0, 80.0])
    torch.testing.assert_close(d(x, sigma), exact(x, sigma))


def test_sigma_may_be_a_float_or_a_batch_tensor_but_not_another_shape():
    d = EDMDenoiser(ConvNet(), sigma_data=0.5)
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(d(x, 0.7), d(x, torch.full((3,), 0.7)))
    with pytest.raises(ValueError, match="shape"):
        d(x, torch.ones(2))


@pytest.fixture
def vp_adapter():
    alphas_cumprod = ddpm_alphas_cumprod(1000, "linear")
    adapter = VPEpsDenoiser(nn.Identity(), alphas_cumprod, channels=1)
    return adapter, alphas_cumprod


def test_vp_adapter_round_trips_sigma_and_t(vp_adapter):
    adapter, alphas_cumprod = vp_adapter
    t = torch.tensor([0.0, 1.0, 17.5, 500.0, 998.25, 999.0])
    torch.testing.assert_close(adapter.sigma_to_t(adapter.t_to_sigma(t)), t, atol=1e-3, rtol=0)
    integer_t = torch.tensor([0, 10, 999])
    sigmas = alpha_bar_to_sigma(alphas_cumprod[integer_t]).float()
    torch.testing.assert_close(adapter.sigma_to_t(sigmas), integer_t.float(), atol=1e-3, rtol=0)
    sigma = torch.tensor([0.05, 1.0, 30.0])
    torch.testing.assert_close(adapter.t_to_sigma(adapter.sigma_to_t(sigma)), sigma, rtol=1e-4, atol=0)


def test_vp_adapter_with_exact_eps_network_is_the_exact_denoiser(vp_adapter):
    adapter, alphas_cumprod = vp_adapter
    exact = GaussianDenoiser(mean=0.2, std=0.6)

    class ExactEps(nn.Module):
        """ε-prediction of the Gaussian data in the VP parametrisation DDPM networks use."""

        def forward(self, x_vp, t):
            sigma = adapter.t_to_sigma(t)
            x_sigma = vp_to_sigma(x_vp, sigma)
            return (x_sigma - exact(x_sigma, sigma)) / sigma.reshape(-1, 1, 1, 1)

    wrapped = VPEpsDenoiser(ExactEps(), alphas_cumprod, channels=1)
    x = torch.randn(4, 1, 3, 3) * 3
    sigma = torch.tensor([0.02, 0.5, 4.0, 100.0])
    torch.testing.assert_close(wrapped(x, sigma), exact(x, sigma), rtol=1e-4, atol=1e-4)
    assert wrapped.sigma_min == pytest.approx(float(alpha_bar_to_sigma(alphas_cumprod[0])))


def test_vp_adapter_can_quantize_to_integer_timesteps():
    adapter = VPEpsDenoiser(nn.Identity(), ddpm_alphas_cumprod(1000), channels=1, quantize=True)
    t = adapter.sigma_to_t(adapter.t_to_sigma(torch.tensor([3.4, 3.6])))
    torch.testing.assert_close(t, torch.tensor([3.0, 4.0]))


def test_bf16_autocast_runs_only_the_network_so_its_rounding_is_scaled_by_c_out():
    torch.manual_seed(0)
    net = ConvNet()
    fp32, bf16 = EDMDenoiser(net), EDMDenoiser(net)
    bf16.autocast_dtype = torch.bfloat16
    x = torch.randn(4, 1, 8, 8)
    for sigma in (1e-3, 0.2, 5.0):
        a, b = fp32(x, sigma), bf16(x, sigma)
        assert b.dtype == torch.float32
        c_out = float(edm_scalings(torch.tensor(sigma), 0.5)[1])
        f = (a - float(edm_scalings(torch.tensor(sigma), 0.5)[0]) * x) / c_out     # the network's output
        err = (b - a).abs().max().item()
        assert 0 < err <= c_out * 2**-7 * (f.abs().max().item() + 1)      # bf16 keeps 8 significant bits
