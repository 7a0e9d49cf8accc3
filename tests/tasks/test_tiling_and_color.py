"""Tiles give the untiled answer; the opponent-colour wrapper is an exact colour denoiser."""

import math

import pytest
import torch

from kuosan.diffusion.color import OpponentColorDenoiser, from_opponent, to_opponent
from kuosan.diffusion.precond import EDMDenoiser
from kuosan.nets.unet import UNet, preset
from kuosan.tasks.tiling import TiledDenoiser, tile_layout


def local_denoiser(channels=1, guided=False):
    """A small random photo-preset denoiser: local, nonlinear, and no rotation of its chroma."""
    torch.manual_seed(0)
    net = UNet(preset("photo", channels=channels, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      guide_channels=int(guided)))
    for p in net.parameters():                 # zero-initialised output layers would hide tiling errors
        torch.nn.init.normal_(p, std=0.05)
    return EDMDenoiser(net, 0.5).eval()


def test_tile_layout_covers_the_length_with_overlap_and_few_pixels_twice():
    cases = [(100, 32, 8), (64, 64, 8), (65, 64, 8), (300, 256, 64), (10, 32, 8), (4000, 512, 64),
             (3000, 256, 64), (512, 256, 64), (257, 256, 64)]
    for length, tile, overlap in cases:
        size, starts = tile_layout(length, tile, overlap)
        assert size <= tile and starts[0] == 0 and starts[-1] + size == length
        covered = set()
        for s in starts:
            covered.update(range(s, s + size))
        assert covered == set(range(length))
        assert all(size - (b - a) >= overlap for a, b in zip(starts, starts[1:], strict=False))
        # fewest tiles that can overlap so: one fewer could not cover the length
        n = len(starts)
        assert n == 1 or (n - 1) * (tile - overlap) + overlap < length
    # a 4000-pixel side in 512-pixel tiles: 9 tiles of 504, not 10 of 512 with the last mostly repeated
    assert tile_layout(4000, 512, 64) == (504, [0, 437, 874, 1311, 1748, 2185, 2622, 3059, 3496])


def test_tiled_equals_untiled_for_a_local_network():
    d = local_denoiser()
    x = torch.randn(1, 1, 96, 80, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.3])
    with torch.no_grad():
        full = d(x, sigma)
        tiled = TiledDenoiser(d, tile=48, overlap=16)(x, sigma)
        hard = TiledDenoiser(d, tile=48, overlap=0)(x, sigma)
    # Tile borders change only what the network sees near them; blending over the overlap hides it.
    assert (tiled - full).abs().mean() < 1e-4 * full.abs().mean()
    assert (tiled - full).abs().max() < 1e-3 * full.abs().max()
    assert (tiled - full).abs().max() < 0.5 * (hard - full).abs().max()
    with torch.no_grad():   # an image that fits one tile goes through untouched
        assert torch.equal(TiledDenoiser(d, tile=128, overlap=16)(x, sigma), full)


def test_tiles_holding_no_wanted_pixel_are_skipped_and_the_wanted_pixels_are_unchanged():
    d = local_denoiser()
    calls = []

    def counted(x, sigma):
        calls.append(x.shape)
        return d(x, sigma)

    counted.sigma_min, counted.sigma_max, counted.channels = d.sigma_min, d.sigma_max, d.channels
    x = torch.randn(1, 1, 96, 160, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.3])
    where = torch.zeros(96, 160, dtype=torch.bool)
    where[5, 150] = where[90, 7] = True                 # two corners: 2 of the 3 × 5 tiles
    tiled = TiledDenoiser(counted, tile=48, overlap=16)
    with torch.no_grad():
        full = tiled(x, sigma)
        calls.clear()
        part = tiled(x, sigma, where=where)
    assert len(calls) == 2
    assert torch.equal(part[0, 0][where], full[0, 0][where])
    covered = part != x                                  # the rest is x itself
    assert covered.sum() == 2 * 48 * 48 and torch.equal(part[~covered], x[~covered])


def test_opponent_transform_is_orthonormal():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    u = to_opponent(x)
    assert torch.allclose(from_opponent(u), x)
    assert torch.allclose(u.norm(), x.norm())
    assert torch.allclose(u[:, 0], x.sum(1) / math.sqrt(3))


@pytest.mark.parametrize("s", [0.2, 0.5])
def test_opponent_wrapper_of_an_exact_gray_denoiser_is_the_exact_colour_denoiser(s):
    # Colour pixels with x ~ N(0, s²·I₃) per pixel: the exact denoiser is s²/(s²+σ²)·x. The gray
    # denoiser sees the channel mean, whose variance is s²/3, at noise σ/√3: the same shrinkage.
    class Gray:
        sigma_min, sigma_max, channels = 0.002, 80.0, 1

        def __call__(self, x, sigma, **cond):
            var = torch.where(sigma < 0.3 - 1e-6, s**2 / 3, s**2)    # the mean plane comes at σ/√3
            sig = sigma.reshape(-1, 1, 1, 1)
            return var.reshape(-1, 1, 1, 1) / (var.reshape(-1, 1, 1, 1) + sig**2) * x

    x = torch.randn(2, 3, 4, 4)
    out = OpponentColorDenoiser(Gray())(x, torch.tensor([0.3, 0.3]))
    assert torch.allclose(out, s**2 / (s**2 + 0.09) * x, atol=1e-6)


def test_a_guided_prior_denoises_luminance_first_and_each_chroma_plane_beside_it():
    calls = []

    class GuidedGray:
        sigma_min, sigma_max, channels, guide_channels = 0.002, 80.0, 1, 1

        def __call__(self, x, sigma, guide=None):
            calls.append((x.clone(), sigma.clone(), None if guide is None else guide.clone()))
            return 0.5 * x + (0 if guide is None else 0.25 * guide)

    x = torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.3, 0.6])
    out = OpponentColorDenoiser(GuidedGray())(x, sigma)
    (lum_x, lum_sigma, lum_guide), (chroma_x, chroma_sigma, chroma_guide) = calls
    u = to_opponent(x)
    assert lum_guide is None
    assert torch.allclose(lum_x, x.mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(lum_sigma, sigma / math.sqrt(3))
    assert torch.allclose(chroma_x, torch.cat([u[:, 1:2], u[:, 2:3]]), atol=1e-6)
    assert torch.allclose(chroma_sigma, torch.cat([sigma, sigma]))
    lum = 0.5 * x.mean(1, keepdim=True)
    assert torch.allclose(chroma_guide, torch.cat([lum, lum]), atol=1e-6)
    expected = torch.cat([lum * math.sqrt(3), 0.5 * u[:, 1:] + 0.25 * lum], dim=1)
    assert torch.allclose(out, from_opponent(expected), atol=1e-6)


@torch.no_grad()
def test_a_guided_net_with_zero_guide_weights_is_the_unguided_colour_denoiser():
    from kuosan.train.warmstart import add_guide_inputs

    plain = local_denoiser()
    torch.manual_seed(1)
    net = UNet(preset("photo", channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      guide_channels=1))
    guided = EDMDenoiser(net, 0.5).eval()
    guided.load_state_dict(add_guide_inputs(plain.state_dict(), guided.state_dict()))
    x, sigma = torch.randn(1, 3, 16, 16), torch.tensor([0.4])
    a, b = OpponentColorDenoiser(plain)(x, sigma), OpponentColorDenoiser(guided)(x, sigma)
    assert torch.allclose(a, b, atol=1e-5)
    guided.net.guide_stem.weight.normal_(0, 0.2)      # a trained guide changes the chroma planes only
    c = OpponentColorDenoiser(guided)(x, sigma)
    assert (c - a).abs().max() > 1e-3
    assert torch.allclose(to_opponent(c)[:, :1], to_opponent(a)[:, :1], atol=1e-5)


def test_tiled_equals_untiled_for_a_guided_colour_denoiser():
    d = OpponentColorDenoiser(local_denoiser(guided=True))
    x = torch.randn(1, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.3])
    with torch.no_grad():
        full = d(x, sigma)
        tiled = TiledDenoiser(d, tile=48, overlap=16)(x, sigma)
    assert (tiled - full).abs().mean() < 1e-4 * full.abs().mean()
    assert (tiled - full).abs().max() < 1e-3 * full.abs().max()


def _rotate_chroma(x, angle):
    """RGB → RGB with the chroma plane rotated by ``angle`` about the gray axis (luminance unchanged)."""
    u = to_opponent(x)
    c, s = math.cos(angle), math.sin(angle)
    return from_opponent(torch.cat([u[:, :1], c * u[:, 1:2] + s * u[:, 2:3], c * u[:, 2:3] - s * u[:, 1:2]], 1))


@pytest.mark.parametrize("guided", [False, True])
@torch.no_grad()
def test_chroma_bases_average_the_estimates_of_the_colour_image_with_its_chroma_rotated(guided):
    gray = local_denoiser(guided=guided)
    x, sigma = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.5])
    one = OpponentColorDenoiser(gray)
    assert torch.equal(OpponentColorDenoiser(gray, chroma_bases=1)(x, sigma), one(x, sigma))
    for bases in (2, 3):
        angles = [0.5 * math.pi * k / bases for k in range(bases)]
        expected = sum(_rotate_chroma(one(_rotate_chroma(x, a), sigma), -a) for a in angles) / bases
        got = OpponentColorDenoiser(gray, chroma_bases=bases)(x, sigma)
        assert torch.allclose(got, expected, atol=1e-5)
        assert (got - one(x, sigma)).abs().max() > 1e-3         # the bases do differ
        # luminance is denoised once, untouched by the chroma bases
        assert torch.allclose(to_opponent(got)[:, :1], to_opponent(one(x, sigma))[:, :1], atol=1e-5)


def test_chroma_bases_keep_the_exact_colour_denoiser_exact():
    # i.i.d. Gaussian colour pixels: the exact denoiser is rotation-invariant, so every basis gives it.
    s2 = 0.25

    class Gray:
        sigma_min, sigma_max, channels = 0.002, 80.0, 1

        def __call__(self, x, sigma, **cond):
            var = torch.where(sigma < 0.3 - 1e-6, s2 / 3, s2).reshape(-1, 1, 1, 1)   # luminance at σ/√3
            return var / (var + sigma.reshape(-1, 1, 1, 1) ** 2) * x

    x = torch.randn(2, 3, 4, 4)
    out = OpponentColorDenoiser(Gray(), chroma_bases=3)(x, torch.tensor([0.3, 0.3]))
    assert torch.allclose(out, s2 / (s2 + 0.09) * x, atol=1e-6)
    with pytest.raises(ValueError, match="chroma_bases"):
        OpponentColorDenoiser(Gray(), chroma_bases=0)


@pytest.mark.parametrize("guided", [False, True])
@torch.no_grad()
def test_colour_flips_average_luminance_over_the_turns_and_chroma_over_that_many_views(guided):
    from kuosan.diffusion.symmetry import FlipEnsemble

    gray = local_denoiser(guided=guided)
    x, sigma = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.5])
    for bases, flips, chroma_turns in [(1, 1, 1), (2, 8, 4), (2, 3, 2), (3, 8, 3), (1, 5, 5)]:
        one = OpponentColorDenoiser(gray, chroma_bases=bases)
        got = to_opponent(OpponentColorDenoiser(gray, chroma_bases=bases, flips=flips)(x, sigma))
        lum = to_opponent(FlipEnsemble(one, flips)(x, sigma))[:, :1]
        # each turn's chroma planes are guided by that turn's own luminance, as a whole pass of ``one`` does
        chroma = to_opponent(FlipEnsemble(one, chroma_turns)(x, sigma))[:, 1:]
        assert torch.allclose(got, torch.cat([lum, chroma], 1), atol=1e-5)
    assert (got - to_opponent(one(x, sigma))).abs().max() > 1e-3
