"""Restoration precision: bf16 autocast of the network (fast on CPUs with native bf16), fp32 otherwise."""

import numpy as np
import pytest
import torch

import kuosan
from kuosan import checkpoint
from kuosan.cli import main
from kuosan.errors import KuosanError
from kuosan.tasks.restore import load_prior
from tests.tasks.test_noise_level import astronaut


def test_precision_choices_and_auto_follows_the_cpu(monkeypatch):
    assert kuosan.load("builtin:photo").autocast_dtype is None                      # fp32 unless asked
    assert kuosan.load("builtin:photo", precision="bf16").autocast_dtype == torch.bfloat16
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(checkpoint, "native_bf16", lambda device, native=native: native)
        assert load_prior("builtin:photo").autocast_dtype == expected               # restoration: auto
    with pytest.raises(KuosanError, match="precision 'half'"):
        kuosan.load("builtin:photo", precision="half")


def test_bf16_denoising_matches_fp32_on_a_photo():
    clean = astronaut(gray=True)[:128, :128] / 127.5 - 1
    noisy = clean + 2 * 25 / 255 * np.random.default_rng(0).standard_normal(clean.shape)
    y = torch.from_numpy(noisy).float()[None, None]
    with torch.no_grad():
        a = kuosan.load("builtin:photo", precision="fp32")(y, 2 * 25 / 255)
        b = kuosan.load("builtin:photo", precision="bf16")(y, 2 * 25 / 255)
    change = (a - b).pow(2).mean().sqrt().item()
    error = (a - torch.from_numpy(clean).float()).pow(2).mean().sqrt().item()
    assert change < 0.1 * error      # the rounding is a tenth of the denoising error or less (~0.3 % of its MSE)


def test_cli_precision_option(tmp_path, capsys):
    from PIL import Image

    noisy = np.clip(astronaut(gray=True)[:32, :32] + 20 * np.random.default_rng(0).standard_normal((32, 32)), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / "in.png")
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--sigma", "20",
                 "--precision", "fp32"]) == 0
    assert (tmp_path / "out.png").exists()
    capsys.readouterr()
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "o2.png"), "--precision", "half"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kuosan: error: argument --precision: invalid choice: 'half'") and "\n" not in err
