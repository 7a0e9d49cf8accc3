"""The contract every registered sampler must pass, driven by the exact denoiser of Gaussian data."""

import math

import pytest
import torch

from kuosan import samplers
from kuosan.diffusion import karras_sigmas
from kuosan.diffusion.mixture import GaussianMixture, sliced_w2
from tests.conftest import GaussianDenoiser

ALL = samplers.available()
DETERMINISTIC = [name for name in ALL if not samplers.info(name).stochastic]
STOCHASTIC = [name for name in ALL if samplers.info(name).stochastic]


def run(name, denoiser, n_samples=20_000, steps=60, seed=0, dtype=torch.float64, **options):
    g = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(steps).to(dtype)
    x = torch.randn(n_samples, 1, 1, 1, generator=g, dtype=dtype) * sigmas[0]
    return samplers.get(name)(denoiser, x, sigmas, generator=g, **options), x / sigmas[0]


def test_registry_lists_the_required_samplers():
    assert {"euler", "heun", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ipndm"} <= set(ALL)
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.get("nope")


@pytest.mark.parametrize("name", ALL)
def test_samples_have_the_data_mean_and_variance(name, gaussian):
    # "Enough steps" depends on the order: first-order stochastic steps converge slowest.
    steps = 500 if samplers.info(name).order == 1 and samplers.info(name).stochastic else 100
    out, _ = run(name, gaussian, steps=steps)
    assert out.mean().item() == pytest.approx(gaussian.mean, abs=0.015)
    assert out.std().item() == pytest.approx(gaussian.std, rel=0.03)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_follow_the_exact_flow_map(name, gaussian):
    steps = 100 if samplers.info(name).order >= 2 else 1000
    out, z = run(name, gaussian, n_samples=201, steps=steps)
    exact = gaussian.flow_map(z * 80.0, 80.0)
    assert (out - exact).abs().max().item() < 0.01


def test_mean_start_removes_the_bias_of_a_start_without_the_data_mean():
    # The exact ODE keeps (x − m)/√(s² + σ²). From x = σ_max·z (mean 0) the samples' mean misses m by
    # m·s/√(s² + σ_max²); from mean_start, x = D(0; σ_max) + σ_max·z = m·σ_max²/(s² + σ_max²) + σ_max·z, it misses
    # by m·s³/(s² + σ_max²)^(3/2) only.
    m, s, sigma_max = 2.0, 1.0, 10.0
    data = GaussianDenoiser(mean=m, std=s)
    z = torch.randn(4001, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z -= z.mean()
    sigmas = karras_sigmas(100, sigma_max=sigma_max).double()
    plain = samplers.get("unipc")(data, z * sigma_max, sigmas)
    data.calls = 0
    start = samplers.mean_start(data, z, sigma_max)
    assert data.calls == 1
    assert torch.allclose(start, m * sigma_max**2 / (s**2 + sigma_max**2) + sigma_max * z)
    started = samplers.get("unipc")(data, start, sigmas)
    assert plain.mean().item() - m == pytest.approx(-m * s / (s**2 + sigma_max**2) ** 0.5, abs=1e-5)
    assert started.mean().item() - m == pytest.approx(-m * s**3 / (s**2 + sigma_max**2) ** 1.5, abs=1e-5)
    assert torch.allclose(started, data.flow_map(start, sigma_max), atol=1e-3)


def test_mean_start_with_conditioning_evaluates_each_row():
    calls = []

    def by_label(x, sigma, class_labels):
        calls.append(x.shape[0])
        return x + class_labels.to(x.dtype).reshape(-1, 1, 1, 1)

    z = torch.zeros(3, 1, 2, 2)
    start = samplers.mean_start(by_label, z, 80.0, class_labels=torch.tensor([0, 1, 2]))
    assert calls == [3]
    assert start[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result(name, gaussian):
    a, _ = run(name, gaussian, n_samples=64, steps=10, seed=3)
    b, _ = run(name, gaussian, n_samples=64, steps=10, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_depend_on_the_generator(name, gaussian):
    sigmas = karras_sigmas(10).double()
    x = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    f = samplers.get(name)
    a = f(gaussian, x, sigmas, generator=torch.Generator().manual_seed(1))
    b = f(gaussian, x, sigmas, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("steps", [1, 2, 5, 18])
def test_denoiser_calls_match_the_documented_count(name, steps):
    d = GaussianDenoiser()
    seen = []
    run(name, d, n_samples=4, steps=steps, callback=lambda info: seen.append(info))
    assert d.calls == samplers.info(name).calls(steps)
    assert [s["i"] for s in seen] == list(range(steps))
    assert set(seen[0]) == {"i", "x", "sigma", "denoised"}
    assert seen[0]["sigma"] == pytest.approx(80.0)


@pytest.mark.parametrize("name", ALL)
def test_recommended_sigmas_fit_the_budget(name):
    for nfe in (1, 5, 10, 35):
        sigmas = samplers.recommended_sigmas(name, nfe)
        assert samplers.info(name).calls(len(sigmas) - 1) <= nfe
        assert sigmas[-1] == 0 and sigmas[0] == pytest.approx(80.0)


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_order_of_accuracy(name, order, gaussian):
    """Halving the step (uniform in log σ, σ 20 → 0.05) cuts the error by about 2^order."""
    z = torch.linspace(-3, 3, 101, dtype=torch.float64).reshape(-1, 1, 1, 1)
    start, end = 20.0, 0.05
    s2, m = gaussian.std**2, gaussian.mean
    exact = m + z * math.sqrt(s2 + end**2)  # (x − m)/√(s² + σ²) is constant along the exact flow

    def error(n):
        sigmas = torch.linspace(math.log(start), math.log(end), n + 1, dtype=torch.float64).exp()
        out = samplers.get(name)(gaussian, m + z * math.sqrt(s2 + start**2), sigmas)
        return (out - exact).abs().max().item()

    ratio = error(32) / error(64)
    assert ratio == pytest.approx(2**order, rel=0.1)


def test_ipndm_is_higher_order_than_two():
    """Variable-step Adams–Bashforth of order 4 once its history is full (its first steps use orders 1–3,
    whose small start-up error keeps the measured ratio between 2³ and 2⁴ at these step counts)."""
    gaussian = GaussianDenoiser()
    z = torch.linspace(-3, 3, 101, dtype=torch.float64).reshape(-1, 1, 1, 1)
    exact = gaussian.mean + z * math.sqrt(gaussian.std**2 + 0.05**2)

    def error(name, n, **options):
        sigmas = torch.linspace(math.log(20.0), math.log(0.05), n + 1, dtype=torch.float64).exp()
        x = gaussian.mean + z * math.sqrt(gaussian.std**2 + 20.0**2)
        return (samplers.get(name)(gaussian, x, sigmas, **options) - exact).abs().max().item()

    assert 8 < error("ipndm", 64) / error("ipndm", 128) < 18.4
    assert error("ipndm", 64) < error("dpmpp_2m", 64) / 4
    assert error("ipndm", 64, max_order=2) / error("ipndm", 128, max_order=2) == pytest.approx(4, rel=0.1)


def test_unipc_corrector_raises_the_order_by_one():
    """UniC turns a UniP step of order p into order p + 1 without extra denoiser calls. The ladder ends with
    a vanishing step past σ = 0.05, so the last real step is corrected too (a corrector acts one step late)."""
    gaussian = GaussianDenoiser()
    z = torch.linspace(-3, 3, 101, dtype=torch.float64).reshape(-1, 1, 1, 1)
    end = 0.05 * (1 - 1e-9)
    exact = gaussian.mean + z * math.sqrt(gaussian.std**2 + end**2)

    def error(n, **options):
        sigmas = torch.linspace(math.log(20.0), math.log(0.05), n + 1, dtype=torch.float64).exp()
        sigmas = torch.cat([sigmas, torch.tensor([end], dtype=torch.float64)])
        x = gaussian.mean + z * math.sqrt(gaussian.std**2 + 20.0**2)
        return (samplers.get("unipc")(gaussian, x, sigmas, **options) - exact).abs().max().item()

    assert error(32, order=1, corrector=False) / error(64, order=1, corrector=False) == pytest.approx(2, rel=0.1)
    assert error(32, order=1) / error(64, order=1) == pytest.approx(4, rel=0.1)
    assert error(32, order=2, corrector=False) / error(64, order=2, corrector=False) == pytest.approx(4, rel=0.1)
    assert error(32, order=2) / error(64, order=2) == pytest.approx(8, rel=0.1)
    assert error(32, order=2) < error(32, order=2, corrector=False) / 3


def test_unipc_average_last_step_is_second_order_in_sigma_squared():
    """From an exact point x(σ) of a N(m, s²) flow, the step onto 0 should give m + (x − m)·s/√(s² + σ²).
    D alone gives the factor s²/(s² + σ²); the average (x + D)/2 is off only by O(σ⁴/s⁴)."""
    gaussian = GaussianDenoiser(mean=0.3, std=0.5)
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).reshape(-1, 1, 1, 1)
    for ratio in (0.25, 0.125):
        sigma = ratio * gaussian.std
        x = gaussian.mean + z * math.sqrt(gaussian.std**2 + sigma**2)
        exact = gaussian.mean + z * gaussian.std
        sigmas = torch.tensor([sigma, 0.0], dtype=torch.float64)
        err_avg = (samplers.get("unipc")(gaussian, x, sigmas, last_step="average") - exact).abs().max().item()
        err_d = (samplers.get("unipc")(gaussian, x, sigmas) - exact).abs().max().item()
        scale = 3 * gaussian.std
        assert err_d == pytest.approx(scale * (1 - 1 / math.sqrt(1 + ratio**2)), rel=1e-6)
        root = math.sqrt(1 + ratio**2)
        assert err_avg == pytest.approx(scale * ((root + 1 / root) / 2 - 1), rel=1e-6)
        assert err_avg < err_d * ratio**2       # fourth vs second order in σ/s
    with pytest.raises(ValueError, match="last_step"):
        samplers.get("unipc")(gaussian, x, sigmas, last_step="mean")


def test_unipc_without_corrector_is_dpmpp_2m(gaussian):
    a, _ = run("unipc", gaussian, n_samples=64, steps=12, order=2, corrector=False)
    b, _ = run("dpmpp_2m", GaussianDenoiser(), n_samples=64, steps=12)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_euler_ancestral_with_eta_zero_is_euler(gaussian):
    a, _ = run("euler_ancestral", gaussian, n_samples=32, steps=12, eta=0.0)
    b, _ = run("euler", GaussianDenoiser(), n_samples=32, steps=12)
    torch.testing.assert_close(a, b)


def test_heun_churn_adds_noise_but_keeps_the_distribution(gaussian):
    out, _ = run("heun", gaussian, steps=60, churn=40.0)
    plain, _ = run("heun", GaussianDenoiser(), steps=60)
    assert not torch.allclose(out, plain)
    assert out.std().item() == pytest.approx(gaussian.std, rel=0.03)


@pytest.mark.parametrize("name", ALL)
def test_converges_to_an_exact_gaussian_mixture(name):
    """Driven by the exact denoiser of a 2-D mixture with unequal weights and widths, every sampler's
    samples match exact samples to within the exact-vs-exact noise floor at a large NFE."""
    mixture = GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]], [0.15, 0.3, 0.1], [0.5, 0.3, 0.2])
    g = torch.Generator().manual_seed(0)
    n = 4000
    reference, _ = mixture.sample(n, g)
    directions = torch.randn(2, 32, generator=g, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    # The noise floor is itself random (mostly through the sampled mode weights): take the largest of 8
    # exact-vs-reference distances, so a sampler passes when it is indistinguishable from exact sampling.
    floor = max(sliced_w2(mixture.sample(n, g)[0], reference, directions) for _ in range(8))

    info = samplers.info(name)
    steps = 100 if info.order >= 2 else 1000 if info.stochastic else 400  # first-order SDE converges slowest
    sigmas = karras_sigmas(steps).double()
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = samplers.get(name)(mixture, noise * sigmas[0], sigmas, generator=torch.Generator().manual_seed(2))

    assert sliced_w2(out, reference, directions) < 1.2 * floor
    weights, spreads = mixture.mode_statistics(out)
    assert (weights - mixture.weights).abs().max() < 0.03
    assert ((spreads - 1).abs() < 0.1).all(), spreads  # NaN (an empty mode) fails too
