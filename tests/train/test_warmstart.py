from dataclasses import replace

import pytest
import torch

from kuosan.checkpoint import build_denoiser
from kuosan.errors import KuosanError
from kuosan.train.warmstart import add_guide_inputs, inflate_to_colour
from tests.helpers import tiny_config


def _denoisers():
    torch.manual_seed(0)
    gray_config = tiny_config("unused")
    colour_config = replace(gray_config, net=replace(gray_config.net, channels=3),
                            data=replace(gray_config.data, channels=3))
    gray = build_denoiser(gray_config)
    for p in gray.parameters():          # zero-initialised output layers would make the test vacuous
        p.data.normal_(0, 0.2)
    return gray.eval(), build_denoiser(colour_config).eval()


@torch.no_grad()
def test_an_inflated_colour_net_is_the_gray_prior_on_the_channel_mean_plus_the_skip_path():
    gray, colour = _denoisers()
    colour.load_state_dict(inflate_to_colour(gray.state_dict(), colour.state_dict()))
    x = torch.randn(2, 3, 16, 16)
    sigma = torch.tensor([0.3, 2.0])
    s = sigma.view(-1, 1, 1, 1)
    c_skip = 0.25 / (s**2 + 0.25)      # σ_data = 0.5
    mean = x.mean(1, keepdim=True)
    # D_colour(x) = c_skip·x + c_out·F(c_in·mean x); D_gray(mean x) = c_skip·mean x + c_out·F(c_in·mean x)
    expected = c_skip * x + (gray(mean, sigma) - c_skip * mean)
    assert torch.allclose(colour(x, sigma), expected, atol=1e-5)
    assert not torch.allclose(gray(mean, sigma), c_skip * mean, atol=1e-3)   # the network part is not zero


def test_matching_weights_are_copied_and_other_networks_refused():
    gray, colour = _denoisers()
    state = gray.state_dict()
    same = inflate_to_colour(state, state)
    assert all(same[k] is state[k] for k in state)
    with pytest.raises(KuosanError, match="another network"):
        inflate_to_colour({k: v for k, v in state.items() if "out_conv" not in k}, colour.state_dict())
    wider = {k: (v.repeat(2, *([1] * (v.ndim - 1))) if k.endswith("stem.weight") else v) for k, v in state.items()}
    with pytest.raises(KuosanError, match="stem.weight"):
        inflate_to_colour(wider, colour.state_dict())


@torch.no_grad()
def test_added_guide_inputs_start_at_zero_so_the_net_ignores_any_guide():
    gray, _ = _denoisers()
    config = tiny_config("unused")
    guided = build_denoiser(replace(config, net=replace(config.net, guide_channels=1))).eval()
    guided.load_state_dict(add_guide_inputs(gray.state_dict(), guided.state_dict()))
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.3, 2.0])
    assert torch.allclose(guided(x, sigma, guide=torch.randn_like(x)), gray(x, sigma), atol=1e-6)
    state = guided.state_dict()
    assert add_guide_inputs(state, state)["net.guide_stem.weight"] is state["net.guide_stem.weight"]
    with pytest.raises(KuosanError, match="no guide planes"):
        add_guide_inputs(state, gray.state_dict())
    with pytest.raises(KuosanError, match="another network"):
        add_guide_inputs({k: v for k, v in gray.state_dict().items() if "out_conv" not in k}, state)


@torch.no_grad()
def test_a_guided_gray_prior_inflates_to_colour_without_its_guide():
    gray, colour = _denoisers()
    config = tiny_config("unused")
    guided = build_denoiser(replace(config, net=replace(config.net, guide_channels=1))).eval()
    state = add_guide_inputs(gray.state_dict(), guided.state_dict())
    state["net.guide_stem.weight"] = torch.randn_like(state["net.guide_stem.weight"])
    a = inflate_to_colour(state, colour.state_dict())
    b = inflate_to_colour(gray.state_dict(), colour.state_dict())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
