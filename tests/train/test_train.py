import json

import torch

import kuosan
from kuosan.checkpoint import build_denoiser, checkpoint_folders, load, save_checkpoint
from kuosan.data import ImageFolder
from kuosan.train import train
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
    with torch.no_grad():
        assert torch.equal(denoiser(x, sigma), loaded(x, sigma))
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
