import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


class GaussianDenoiser:
    """The exact denoiser of x0 ~ N(m, s²) per pixel: D(x, σ) = m + s²/(s²+σ²)·(x − m). Counts calls."""

    sigma_min, sigma_max, channels = 0.002, 80.0, 1

    def __init__(self, mean: float = 0.3, std: float = 0.5):
        self.mean, self.std, self.calls = mean, std, 0

    def __call__(self, x, sigma, **cond):
        self.calls += 1
        assert sigma.shape == (x.shape[0],), "denoiser contract: sigma has shape [batch]"
        s2 = self.std**2
        sig = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return self.mean + s2 / (s2 + sig**2) * (x - self.mean)

    def flow_map(self, x, sigma_max):
        """Where the exact probability-flow ODE takes x(σ_max) = x at σ = 0: it keeps (x − m)/√(s² + σ²)."""
        return self.mean + self.std * (x - self.mean) / (self.std**2 + sigma_max**2) ** 0.5


@pytest.fixture
def gaussian():
    return GaussianDenoiser()
