import json

import pytest
import torch

import kuosan
from kuosan.checkpoint import build_denoiser, checkpoint_folders, load, save_checkpoint
from kuosan.config import TrainConfig
from kuosan.data import ImageFolder
from kuosan.train import train
from kuosan.train.trainer import lr_factor, preview_count
from tests.helpers import tiny_config, write_folder


def test_training_lowers_the_loss_and_reproduces_a_training_image(tmp_path):
    data = write_folder(tmp_path / "data", 4)
    run = tmp_path / "run"
    last = train(tiny_config(str(data), steps=300, ema_halflife_kimg=0.3, sample_every=150),
                 run, device="cpu", progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5

    denoiser = kuosan.load(run)
    assert denoiser.source == last
    samples = kuosan.generate(denoiser, 8, sampler="heun", steps=18, seed=0)
    training = torch.stack([ImageFolder(data, 8, 1).get(k).image for k in range(4)])
    mse_to_nearest = ((samples[:, None] - training[None]) ** 2).mean((2, 3, 4)).min(1).values
    assert (mse_to_nearest < 0.05).sum() >= 4, mse_to_nearest  # memorised: samples are training images
    assert (run / "samples" / "step-0000150.png").is_file() and (run / "samples" / "step-0000300.png").is_file()


def test_lr_warms_up_stays_then_cools_down_linearly_to_zero():
    tc = TrainConfig(steps=100, warmup_steps=10, cooldown_steps=40)
    assert [lr_factor(s, tc) for s in (1, 5, 10, 30, 61)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, tc) for s in (62, 81, 100)] == pytest.approx([39 / 40, 20 / 40, 1 / 40])
    assert lr_factor(101, tc) == 0.0
    constant = TrainConfig(steps=100, warmup_steps=10)
    assert lr_factor(100, constant) == lr_factor(10, constant) == 1.0


def test_the_trainer_logs_the_cooled_down_lr(tmp_path):
    data = write_folder(tmp_path / "data", 2)
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=20, warmup_steps=4, cooldown_steps=10, lr=1e-3), run, device="cpu",
          progress=False)
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert lrs == pytest.approx({5: 1e-3, 10: 1e-3, 15: 0.6e-3, 20: 0.1e-3})


def test_save_then_load_gives_identical_outputs(tmp_path):
    config = tiny_config("unused")
    torch.manual_seed(0)
    denoiser = build_denoiser(config)
    for p in denoiser.parameters():
        torch.nn.init.normal_(p, std=0.05)
    folder = save_checkpoint(tmp_path / "ckpt", config, denoiser)
    loaded = load(folder)
    x = torch.randn(3, 1, 8, 8)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    state = denoiser.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())   # the weights, bit for bit
    with torch.no_grad():
        # On the CPU the loaded weights are channels-last (faster convolutions): the same outputs to rounding,
        # and bit for bit once put back in the layout they were saved from.
        torch.testing.assert_close(loaded(x, sigma), denoiser(x, sigma), rtol=1e-5, atol=1e-6)
        assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in loaded.parameters())
        assert torch.equal(denoiser(x, sigma), loaded.to(memory_format=torch.contiguous_format)(x, sigma))
    assert loaded.config == config
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left


def test_checkpoints_hold_training_state_that_loads_weights_only(tmp_path):
    data = write_folder(tmp_path / "data", 4)
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=6, checkpoint_every=2, keep_checkpoints=2), run, device="cpu",
          progress=False)
    folders = checkpoint_folders(run)
    assert [p.name for p in folders] == ["step-0000004", "step-0000006"]  # keeps the last 2
    state = torch.load(folders[-1] / "training_state.pt", weights_only=True)
    assert state["step"] == 6 and "optimizer" in state and "model" in state
    config = json.loads((folders[-1] / "config.json").read_text())
    assert config["kuosan_version"] == "" or isinstance(config["kuosan_version"], str)
    assert config["net"]["base_channels"] == 16


def test_class_conditional_training_and_guided_sampling(tmp_path):
    data = tmp_path / "data"
    write_folder(data / "a", 2)
    write_folder(data / "b", 2)
    config = tiny_config(str(data), steps=4)
    config = config.__class__(net=config.net.__class__(**{**config.net.to_dict(), "num_classes": 2,
                                                          "channel_mult": (1, 2), "attention_levels": (1,)}),
                              data=config.data.__class__(source=str(data), size=8, channels=1,
                                                         class_names=("a", "b")),
                              train=config.train)
    train(config, tmp_path / "run", device="cpu", progress=False)
    denoiser = kuosan.load(tmp_path / "run")
    assert denoiser.config.data.class_names == ("a", "b")
    out = kuosan.generate(denoiser, 4, steps=3, labels=[0, 1, 0, 1], guidance=2.0)
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()


class _PoisonedDigits:
    """Eight pattern images; the ones listed in ``poisoned`` are NaN (a broken decoder, a bad file)."""

    class_names: list = []

    def __init__(self, poisoned):
        from kuosan.data.folder import Example
        from tests.helpers import pattern_images

        self.example = Example
        self.images = [torch.from_numpy(a).float()[None] / 127.5 - 1 for a in pattern_images(8)]
        for k in poisoned:
            self.images[k] = torch.full_like(self.images[k], float("nan"))

    def __len__(self):
        return len(self.images)

    def get(self, index, rng=None):
        return self.example(self.images[index], -1)


def test_non_finite_steps_are_skipped_and_weights_stay_finite(tmp_path, capsys):
    config = tiny_config("poisoned", steps=16, batch=1, checkpoint_every=8)
    last = train(config, tmp_path / "run", device="cpu", progress=False, dataset=_PoisonedDigits([0]))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Image 0 comes up once per epoch of 8 positions: twice in 16 steps, each step skipped with a warning.
    assert records[-1]["skipped_steps"] == 2
    assert capsys.readouterr().err.count("non-finite loss or gradient, update skipped") == 2
    assert all(r["loss"] is None or r["loss"] == r["loss"] for r in records)      # NaN never logged
    model = load(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_non_finite_steps_in_a_row_stop_with_a_clear_error_and_no_checkpoint(tmp_path):
    config = tiny_config("poisoned", steps=50, batch=2, max_bad_steps=5)
    with pytest.raises(kuosan.KuosanError, match="5 non-finite losses or gradients in a row"):
        train(config, tmp_path / "run", device="cpu", progress=False, dataset=_PoisonedDigits(range(8)))
    assert checkpoint_folders(tmp_path / "run") == []


def test_weights_gone_non_finite_are_never_checkpointed(tmp_path, monkeypatch):
    """If the weights themselves turn NaN (here: injected after the 3rd update), the next checkpoint is
    refused with a clear error naming the last good one, and nothing is written for that step."""
    original, updates = torch.optim.AdamW.step, []

    def poisoning_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        updates.append(1)
        if len(updates) == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    config = tiny_config("poison-weights", steps=8, batch=2, checkpoint_every=2, max_bad_steps=100)
    with pytest.raises(kuosan.KuosanError, match=r"step 4: the weights hold NaN or inf; no checkpoint was "
                                                 r"written \(the last good one is .*step-0000002\)"):
        train(config, tmp_path / "run", device="cpu", progress=False, dataset=_PoisonedDigits([]))
    assert [f.name for f in checkpoint_folders(tmp_path / "run")] == ["step-0000002"]


def test_a_guided_prior_learns_from_chroma_crops_beside_their_denoised_luminance(tmp_path):
    from dataclasses import replace

    import numpy as np

    from kuosan.data.photos import RandomCrops
    from kuosan.train.warmstart import add_guide_inputs

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    colour = np.stack([gray, np.roll(gray, 3, 0), 255 - gray], axis=2)   # chroma planes with structure
    dataset = RandomCrops([colour, gray], size=8, gray_mix=True, chroma_mix=0.5, chroma_guide=True)
    config = tiny_config("photos", steps=8)
    config = replace(config, net=replace(config.net, guide_channels=1))
    torch.manual_seed(0)
    plain = build_denoiser(tiny_config("photos")).state_dict()
    init = add_guide_inputs(plain, build_denoiser(config).state_dict())
    train(config, tmp_path / "run", device="cpu", progress=False, dataset=dataset, init=init)
    trained = kuosan.load(tmp_path / "run")
    # The guide weights started at zero; only gradients through real (non-zero) guides can move them.
    assert trained.net.guide_stem.weight.abs().max() > 1e-4

    # guide_lr_mult: AdamW's first step moves each weight by about the LR (m/√v = ±1), the guide's by 10×.
    # (From random weights: the zero-initialised output layers of a fresh net pass no gradient back.)
    init = {k: torch.randn_like(v) * 0.1 for k, v in init.items()}
    config = replace(config, train=replace(config.train, steps=1, warmup_steps=1, lr=1e-3, guide_lr_mult=10.0))
    train(config, tmp_path / "one", device="cpu", progress=False, dataset=dataset, init=init)
    state = torch.load(checkpoint_folders(tmp_path / "one")[-1] / "training_state.pt", weights_only=True)["model"]
    guide_step = float((state["net.guide_stem.weight"] - init["net.guide_stem.weight"]).abs().max())
    other_step = max(float((state[k] - init[k]).abs().max()) for k in init if k != "net.guide_stem.weight")
    assert 0.9e-2 < guide_step < 1.01e-2 and 0.9e-3 < other_step < 1.01e-3


@torch.no_grad()
def test_denoised_guides_are_the_models_own_luminance_estimate_and_zero_without_a_guide():
    from kuosan.diffusion.color import luminance_guide
    from kuosan.train.trainer import _denoised_guides

    torch.manual_seed(0)
    denoiser = build_denoiser(tiny_config("unused")).eval()
    for p in denoiser.parameters():
        p.normal_(0, 0.1)
    guides, noise = torch.rand(3, 1, 8, 8) * 2 - 1, torch.randn(3, 1, 8, 8)
    sigma = torch.tensor([0.1, 1.0, 3.0])
    out = _denoised_guides(denoiser, guides, torch.tensor([True, False, True]), sigma, noise, use_bf16=False)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    expected = luminance_guide(denoiser, guides[[0, 2]], sigma[[0, 2]], noise[[0, 2]])
    assert torch.allclose(out[[0, 2]], expected, atol=1e-6)
    # σ/√3 of noise on the luminance: at small σ the guide is nearly the clean luminance.
    assert (out[0] - guides[0]).abs().mean() < (out[2] - guides[2]).abs().mean()


def test_preview_grids_shrink_with_the_image_size_and_sample_every_0_writes_none(tmp_path):
    assert [preview_count(size) for size in (28, 32, 48, 64, 128, 256, 512)] == [64, 64, 16, 16, 4, 1, 1]
    data = write_folder(tmp_path / "data", 2)
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=2, sample_every=0), run, device="cpu", progress=False)
    assert not list((run / "samples").iterdir()) and (run / "checkpoints" / "step-0000002").is_dir()
