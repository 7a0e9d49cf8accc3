from dataclasses import replace

import pytest
import torch

from kuosan.config import RunConfig
from kuosan.errors import KuosanError
from kuosan.nets import PRESETS, UNet, UNetConfig, count_parameters, preset, set_gradient_checkpointing

SMALL = UNetConfig(channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                   attention_head_channels=8, num_classes=3, groups=4)


def test_tiny_preset_is_about_one_million_parameters():
    n = count_parameters(UNet(preset("tiny", channels=1)))
    assert 0.8e6 < n < 1.5e6
    assert count_parameters(UNet(preset("small", channels=3))) > 4 * n


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(8, 8), (13, 17), (28, 28), (5, 3)])
def test_any_size_and_channels_keep_the_shape(channels, hw):
    net = UNet(UNetConfig(channels=channels, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                          attention_levels=(2,), attention_head_channels=8, groups=4))
    x = torch.randn(2, channels, *hw)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_output_depends_on_noise_level_and_class_label():
    torch.manual_seed(0)
    net = UNet(SMALL)
    for p in net.parameters():  # zero-initialised output layers would hide the conditioning
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 8, 8)
    base = net(x, torch.zeros(1), torch.tensor([0]))
    assert not torch.allclose(base, net(x, torch.ones(1), torch.tensor([0])))
    assert not torch.allclose(base, net(x, torch.zeros(1), torch.tensor([1])))
    null = net(x, torch.zeros(1), torch.tensor([-1]))
    torch.testing.assert_close(null, net(x, torch.zeros(1)))  # no labels = the null class


def test_initial_network_outputs_zero():
    """Zero-initialised output layers make the initial D(x; σ) = c_skip·x, the Gaussian optimum."""
    out = UNet(SMALL)(torch.randn(2, 1, 8, 8), torch.zeros(2))
    assert torch.count_nonzero(out) == 0


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="1-channel images, got 3"):
        UNet(SMALL)(torch.randn(1, 3, 8, 8), torch.zeros(1))


def test_config_round_trips_and_rejects_unknown_keys_and_bad_types():
    for cfg in PRESETS.values():
        assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        UNetConfig.from_dict({"channels": 1, "width": 3})
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(5,))
    d = RunConfig().to_dict()
    d["net"]["base_channels"] = "64"
    with pytest.raises(KuosanError, match="base_channels"):
        RunConfig.from_dict(d)
    d = RunConfig().to_dict()
    d["train"]["speed"] = 1
    with pytest.raises(KuosanError, match="train.speed"):
        RunConfig.from_dict(d)


@torch.no_grad()
def test_guide_planes_enter_beside_x_and_zeros_mean_no_guide():
    torch.manual_seed(0)
    cfg = preset("photo", channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
    plain, guided = UNet(cfg), UNet(replace(cfg, guide_channels=1))
    for p in guided.parameters():
        p.normal_(0, 0.1)
    state = guided.state_dict()
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("guide_stem")})
    x, c_noise = torch.randn(2, 1, 12, 12), torch.tensor([-0.5, 0.2])
    assert torch.allclose(guided(x, c_noise), plain(x, c_noise), atol=1e-6)          # guide omitted = zeros
    assert torch.allclose(guided(x, c_noise, guide=torch.zeros_like(x)), plain(x, c_noise), atol=1e-6)
    assert not torch.allclose(guided(x, c_noise, guide=torch.randn_like(x)), plain(x, c_noise), atol=1e-3)
    with pytest.raises(ValueError, match="guide must have shape"):
        guided(x, c_noise, guide=torch.zeros(2, 2, 12, 12))
    with pytest.raises(ValueError, match="no guide"):
        plain(x, c_noise, guide=torch.zeros_like(x))
    with pytest.raises(ValueError, match="guide_channels"):
        replace(cfg, guide_channels=-1)


def test_a_guide_enters_as_local_detail_so_its_level_is_ignored():
    from kuosan.nets.unet import local_detail

    torch.manual_seed(0)
    flat = torch.full((1, 1, 12, 12), 0.7)
    assert torch.allclose(local_detail(flat), torch.zeros_like(flat), atol=1e-6)
    ramp = torch.arange(12.0).expand(1, 1, 12, 12).contiguous()
    assert torch.allclose(local_detail(ramp)[..., 2:-2], torch.zeros(1, 1, 12, 8), atol=1e-5)  # linear inside
    guided = UNet(preset("photo", channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                         guide_channels=1))
    with torch.no_grad():
        for p in guided.parameters():
            p.normal_(0, 0.1)
        x, c_noise, g = torch.randn(1, 1, 12, 12), torch.tensor([0.0]), torch.randn(1, 1, 12, 12)
        assert torch.allclose(guided(x, c_noise, guide=g), guided(x, c_noise, guide=g + 0.5), atol=1e-5)
        assert not torch.allclose(guided(x, c_noise, guide=g), guided(x, c_noise), atol=1e-3)


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    net = UNet(preset("tiny", channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attention_levels=(1,), guide_channels=1))
    for p in net.parameters():                 # zero-initialised output layers would make every gradient zero
        torch.nn.init.normal_(p, std=0.1)
    x, guide = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    c_noise = torch.tensor([-0.3, 0.4])

    def run(checkpointing: bool):
        net.gradient_checkpointing = checkpointing
        net.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        saved = []                             # what the forward pass keeps for the backward pass

        def pack(t):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = net(xi, c_noise, guide=guide)
        out.pow(2).sum().backward()
        return out.detach(), xi.grad, {n: p.grad.clone() for n, p in net.named_parameters()}, sum(saved)

    out, x_grad, grads, kept = run(False)
    out_ckpt, x_grad_ckpt, grads_ckpt, kept_ckpt = run(True)
    assert kept_ckpt < kept / 2
    torch.testing.assert_close(out_ckpt, out, rtol=0, atol=0)
    torch.testing.assert_close(x_grad_ckpt, x_grad)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)
    with torch.no_grad():                      # no graph is being recorded: the plain forward
        torch.testing.assert_close(net(x, c_noise, guide=guide), out, rtol=0, atol=0)


def test_set_gradient_checkpointing_switches_every_network_inside_and_returns_the_old_settings():
    first, second = UNet(SMALL), UNet(SMALL)
    second.gradient_checkpointing = True
    pair = torch.nn.ModuleList([first, torch.nn.Sequential(second)])
    previous = set_gradient_checkpointing(pair, True)
    assert previous == {first: False, second: True}
    assert first.gradient_checkpointing and second.gradient_checkpointing
    for module, setting in previous.items():
        module.gradient_checkpointing = setting
    assert not first.gradient_checkpointing and second.gradient_checkpointing
