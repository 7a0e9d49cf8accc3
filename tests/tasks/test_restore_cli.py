"""Restoration end to end: the Python API and the CLI on small images; bad input → exit 2."""

import numpy as np
import pytest
import torch
from PIL import Image

import kuosan
from kuosan.checkpoint import build_denoiser, save_checkpoint
from kuosan.cli import main
from kuosan.config import DataConfig, RunConfig
from kuosan.errors import KuosanError
from kuosan.nets.unet import preset
from tests.tasks.test_noise_level import astronaut


def psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.fixture(scope="module")
def tiny_rgb_model(tmp_path_factory):
    """An untrained 3-channel local model: fast, and enough to exercise every code path."""
    torch.manual_seed(0)
    config = RunConfig(net=preset("photo", channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1),
                       data=DataConfig(source="test", size=16, channels=3))
    return save_checkpoint(tmp_path_factory.mktemp("m") / "model", config, build_denoiser(config))


@pytest.fixture
def files(tmp_path):
    clean = astronaut(gray=False)[:48, :64].astype(np.uint8)
    noisy = np.clip(clean + 20 * np.random.default_rng(0).standard_normal(clean.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    rgba = Image.fromarray(clean).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))))
    rgba.save(tmp_path / "rgba.png")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path, clean


def test_builtin_photo_prior_denoises_a_held_out_photo():
    clean = astronaut(gray=True)[64:128, 64:128]
    noisy = np.clip(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape), 0, 255).astype(np.uint8)
    out = kuosan.denoise(Image.fromarray(noisy))          # σ estimated; gray image, gray prior
    assert out.mode == "L" and out.size == (64, 64)
    assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_a_photo_whose_noise_is_clipped_at_black_and_white_gains_from_filling_the_clipped_pixels():
    """8-bit noise, σ = 25: 7.9 % of the shipped astronaut crop's pixels are at 0 or 255. Denoising again with
    each put at its expected value before clipping is worth +0.73 dB (30.27 → 30.99)."""
    clean = astronaut(gray=True)
    noisy = np.clip(np.round(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    noisy = noisy.astype(np.uint8)
    taken_as_they_are = psnr(kuosan.denoise(noisy, 25, clip_rounds=0), clean)
    assert psnr(kuosan.denoise(noisy, 25), clean) > taken_as_they_are + 0.5
    unclipped = np.clip(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape), 1, 254).round()
    assert np.array_equal(kuosan.denoise(unclipped.astype(np.uint8), 25, clip_rounds=0),
                          kuosan.denoise(unclipped.astype(np.uint8), 25))     # nothing clipped: nothing filled


def test_filling_removes_the_bias_that_clipping_gives_a_flat_bright_image():
    """Flat 240 plus noise σ = 25, saved as 8-bit: 28 % of the values are cut to 255, so taken as they are
    the denoised image is darker than 240 (the mean of the clipped noise is below zero); filled, it is 240."""
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(240.0 + 25 * rng.standard_normal((48, 48, 3))), 0, 255).astype(np.uint8)
    assert 0.2 < (noisy == 255).mean() < 0.35
    assert kuosan.denoise(noisy, 25, clip_rounds=0).mean() < 237.0
    assert abs(kuosan.denoise(noisy, 25).mean() - 240.0) < 1.0


@pytest.mark.parametrize("task", ["upscale", "deblur"])
def test_upscaling_and_deblurring_a_noisy_8_bit_image_fill_its_clipped_values_as_they_go(task):
    """The flat bright image above (gray, 28 % at 255), upscaled 2× or deblurred, told its noise: each data step
    takes the clipped values at their expected value before clipping given the step's estimate, so the result
    is 240, not darker (235.6 / 235.3 with the values as they are, measured on an RGB copy: 239.7 / 239.5)."""
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(240.0 + 25 * rng.standard_normal((24, 24))), 0, 255).astype(np.uint8)
    run = {"upscale": lambda **k: kuosan.upscale(noisy, 2, noise=25, **k),
           "deblur": lambda **k: kuosan.deblur(noisy, 1.0, noise=25, **k)}[task]
    assert abs(np.asarray(run()).mean() - 240.0) < 1.0
    assert np.asarray(run(fill_clipped=False)).mean() < 237.0


def test_builtin_photo_prior_deblurs_a_held_out_photo():
    from kuosan.tasks.operators import Blur, gaussian_kernel

    clean = astronaut(gray=True)[64:128, 64:128].astype(np.float64)
    x = torch.nn.functional.pad(torch.from_numpy(clean)[None, None], (7, 7, 7, 7), mode="reflect")
    blurred = Blur(gaussian_kernel(2.0))(x)[0, 0, 7:-7, 7:-7].numpy()
    blurred = np.clip(blurred + 2 * np.random.default_rng(0).standard_normal(blurred.shape), 0, 255)
    out = kuosan.deblur(Image.fromarray(blurred.round().astype(np.uint8)), 2.0, noise=2)
    assert out.mode == "L" and out.size == (64, 64)
    assert psnr(out, clean) > psnr(blurred, clean) + 2


def test_cli_denoise_upscale_inpaint(files, tiny_rgb_model, capsys):
    root, clean = files
    model = ["--model", str(tiny_rgb_model), "--device", "cpu"]
    assert main(["denoise", str(root / "noisy.png"), str(root / "d.png"), "--sigma", "20",
                 "--compare", str(root / "panel.png"), *model]) == 0
    assert Image.open(root / "d.png").size == (64, 48)
    assert Image.open(root / "panel.png").size == (64 * 2 + 8, 48)
    assert main(["denoise", str(root / "noisy.png"), str(root / "s.png"), "--mode", "sample", "--steps", "2",
                 *model]) == 0
    assert main(["denoise", str(root / "noisy.png"), str(root / "a.png"), "--sigma", "20", "--adapt", "2",
                 *model]) == 0
    assert Image.open(root / "a.png").size == (64, 48)
    for curve in ("auto", "2,4"):       # a camera's signal-dependent noise
        assert main(["denoise", str(root / "noisy.png"), str(root / "c.png"), "--noise-curve", curve, *model]) == 0
        assert Image.open(root / "c.png").size == (64, 48)
    assert "estimated noise variance" in capsys.readouterr().err

    assert main(["upscale", str(root / "rgba.png"), str(root / "u.png"), "--scale", "2", "--steps", "2",
                 *model]) == 0
    up = Image.open(root / "u.png")
    assert up.mode == "RGBA" and up.size == (128, 96)
    # Data consistency: shrinking the result as Pillow does (bicubic, the default kernel) gives back the input,
    # to 8-bit rounding (clipping to [0, 255] can break it where the estimate overshoots).
    low = np.asarray(up.convert("RGB").resize((64, 48), Image.BICUBIC), np.float64)
    assert np.mean(np.abs(low - clean) <= 1.0) > 0.99
    # The same with box averaging, and with noise in the input (which is then not reproduced exactly).
    assert main(["upscale", str(root / "rgba.png"), str(root / "b.png"), "--kernel", "box", "--steps", "2",
                 *model]) == 0
    low = np.asarray(Image.open(root / "b.png"), np.float64)[..., :3].reshape(48, 2, 64, 2, 3).mean((1, 3))
    assert np.mean(np.abs(low - clean) <= 1.0) > 0.99
    assert main(["upscale", str(root / "rgba.png"), str(root / "n.png"), "--noise", "auto", "--steps", "2",
                 *model]) == 0
    assert Image.open(root / "n.png").size == (128, 96)
    for task, extra in (("upscale", ["--scale", "2"]), ("deblur", ["--blur", "1.2"])):   # a camera's noise
        for curve in ("auto", "2,4"):
            assert main([task, str(root / "noisy.png"), str(root / "nc.png"), *extra, "--noise-curve", curve,
                         "--steps", "2", *model]) == 0
            assert Image.open(root / "nc.png").size == {"upscale": (128, 96), "deblur": (64, 48)}[task]
    assert "estimated noise variance" in capsys.readouterr().err

    assert main(["deblur", str(root / "rgba.png"), str(root / "db.png"), "--blur", "1.2", "--steps", "2",
                 "--compare", str(root / "db-panel.png"), *model]) == 0
    assert Image.open(root / "db.png").mode == "RGBA" and Image.open(root / "db.png").size == (64, 48)
    assert Image.open(root / "db-panel.png").size == (64 * 2 + 8, 48)
    Image.fromarray(np.array([[0, 64, 0], [64, 255, 64], [0, 64, 0]], np.uint8)).save(root / "kernel.png")
    assert main(["deblur", str(root / "noisy.png"), str(root / "dk.png"), "--kernel", str(root / "kernel.png"),
                 "--noise", "auto", "--steps", "2", *model]) == 0
    assert Image.open(root / "dk.png").size == (64, 48)

    assert main(["inpaint", str(root / "noisy.png"), str(root / "mask.png"), str(root / "i.png"),
                 "--steps", "2", *model]) == 0
    assert main(["inpaint", str(root / "noisy.png"), str(root / "mask.png"), str(root / "is.png"),
                 "--mode", "sample", "--steps", "2", "--resample", "2", "--compare", str(root / "ip.png"), *model]) == 0
    noisy, keep = np.asarray(Image.open(root / "noisy.png")), np.asarray(Image.open(root / "mask.png")) == 0
    filled, sampled = np.asarray(Image.open(root / "i.png")), np.asarray(Image.open(root / "is.png"))
    for out in (filled, sampled):
        assert np.array_equal(out[keep], noisy[keep])          # known pixels untouched
        assert not np.array_equal(out[~keep], noisy[~keep])
    assert not np.array_equal(filled, sampled)                 # two different methods
    panel = np.asarray(Image.open(root / "ip.png").convert("RGB"))
    assert panel.shape == (48, 64 * 2 + 8, 3)
    assert (panel[:, :64][~keep] == 255).all()                 # the holes shown white
    assert np.array_equal(panel[:, 72:], np.asarray(Image.open(root / "is.png").convert("RGB")))


def test_api_keeps_the_callers_format(tiny_rgb_model):
    gray16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)
    out = kuosan.denoise(Image.fromarray(gray16), 10, model="builtin:photo")
    assert out.mode == "I;16" and out.size == (32, 32)
    arr = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32)
    res = kuosan.denoise(arr, 5, model=str(tiny_rgb_model))
    assert res.dtype == np.float32 and res.shape == (16, 16, 4)
    assert np.array_equal(res[..., 3], arr[..., 3])                 # alpha kept


BAD = [
    (["denoise", "{root}/missing.png", "{root}/o.png"], "no such image file"),
    (["denoise", "{root}/mask.txt", "{root}/o.png"], "not a readable image"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--sigma", "-3"], "between 0 and 255"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--sigma", "lots"], "give a number"),
    (["denoise", "{root}/noisy.png", "{root}/noisy.png"], "overwrite the input"),
    (["denoise", "{root}/noisy.png", "{root}/nofolder/o.png"], "does not exist"),
    (["denoise", "{root}/noisy.png", "{root}/o.xyz"], "unknown image format"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--model", "{root}/nomodel"], "no such model"),
    (["denoise", "{root}/rgba.png", "{root}/o.jpg", "--sigma", "5"], "alpha"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--chroma-bases", "0"], "--chroma-bases"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--adapt", "-1"], "--adapt"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--clip-rounds", "-1"], "--clip-rounds: must be at least 0"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--adapt", "2", "--mode", "sample"], "mode mmse"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--noise-curve", "2"], "--noise-curve '2': give auto or"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--noise-curve", "2,-4"], "GAIN,FLOOR (two numbers ≥ 0"),
    (["denoise", "{root}/noisy.png", "{root}/o.png", "--noise-curve", "auto", "--sigma", "5"], "not both"),
    (["upscale", "{root}/noisy.png", "{root}/o.png", "--tile", "8"], "--tile"),
    (["upscale", "{root}/noisy.png", "{root}/o.png", "--noise", "-1"], "--noise -1: must be between 0 and 255"),
    (["upscale", "{root}/noisy.png", "{root}/o.png", "--noise", "some"], "--noise 'some': give a number"),
    (["upscale", "{root}/noisy.png", "{root}/o.png", "--noise-curve", "2,x"], "--noise-curve '2,x': give auto"),
    (["upscale", "{root}/noisy.png", "{root}/o.png", "--noise-curve", "auto", "--noise", "5"], "not both"),
    (["deblur", "{root}/noisy.png", "{root}/o.png", "--noise-curve", "1,4", "--noise", "auto"], "not both"),
    (["deblur", "{root}/noisy.png", "{root}/o.png", "--blur", "0"], "blur std must be > 0 pixels, got 0.0"),
    (["deblur", "{root}/noisy.png", "{root}/o.png", "--kernel", "{root}/small.png"], "odd sides"),
    (["deblur", "{root}/noisy.png", "{root}/o.png", "--kernel", "{root}/missing.png"], "no such image file"),
    (["deblur", "{root}/noisy.png", "{root}/o.png", "--noise", "-1"], "--noise -1: must be between 0 and 255"),
    (["inpaint", "{root}/noisy.png", "{root}/small.png", "{root}/o.png"], "mask is 8×8"),
    (["inpaint", "{root}/noisy.png", "{root}/mask.png", "{root}/mask.png"], "overwrite"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1] for b in BAD])
def test_bad_restore_input_is_one_clear_line_and_exit_2(files, args, message, capsys):
    root, _ = files
    (root / "mask.txt").write_text("not an image")
    Image.new("L", (8, 8)).save(root / "small.png")
    before = (root / "noisy.png").read_bytes()
    assert main([a.format(root=root) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kuosan: error:") and message in err and "\n" not in err
    assert (root / "noisy.png").read_bytes() == before


def test_a_colour_companion_restores_colour_images_and_the_gray_prior_gray_ones(tiny_rgb_model, monkeypatch,
                                                                               capsys):
    from kuosan.tasks import restore

    rgb = astronaut(gray=False)[:32, :32].astype(np.uint8)
    gray = astronaut(gray=True)[:32, :32].astype(np.uint8)
    monkeypatch.setattr(restore, "COLOUR_COMPANIONS", {"builtin:photo": str(tiny_rgb_model)})
    routed_rgb, routed_gray = kuosan.denoise(rgb, 20), kuosan.denoise(gray, 20)
    assert np.array_equal(routed_rgb, kuosan.denoise(rgb, 20, model=tiny_rgb_model))
    gray_prior = kuosan.load("builtin:photo", precision="auto")     # as restoration loads it
    assert np.array_equal(routed_gray, kuosan.denoise(gray, 20, model=gray_prior))
    main(["info", "builtin:photo"])
    assert f"colour images are restored by {tiny_rgb_model}" in capsys.readouterr().out
    # without an installed companion, colour images go through the gray prior (opponent colour space)
    monkeypatch.setattr(restore, "COLOUR_COMPANIONS", {"builtin:photo": "builtin:no-such-model"})
    assert np.array_equal(kuosan.denoise(rgb, 20), kuosan.denoise(rgb, 20, model=gray_prior))
    assert not np.array_equal(kuosan.denoise(rgb, 20), routed_rgb)
    main(["info", "builtin:photo"])
    assert "opponent colour space" in capsys.readouterr().out


def test_denoise_says_when_the_noise_looks_signal_dependent(tmp_path, tiny_rgb_model, capsys):
    """σ auto: the noise curve is read too, and where σ in the highlights is over twice σ in the shadows the
    command says --noise-curve may do better (the shipped astronaut crop, colour: a camera's noise 6·x + 4, 8-bit,
    reads σ 8.8 → 37.8; white noise σ 25 reads flat, 25.3); deblur (and upscale) with --noise auto too."""
    from kuosan.tasks.restore import noise_in_shadows_and_highlights
    from tests.tasks.test_vst import poisson_gaussian

    clean = astronaut(gray=False)
    camera = poisson_gaussian(clean, 6.0, 4.0)
    white = np.clip(np.round(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    shadows, highlights = noise_in_shadows_and_highlights(camera)
    assert highlights > 3 * shadows
    shadows, highlights = noise_in_shadows_and_highlights(white.astype(np.uint8))
    assert highlights < 1.2 * shadows
    for name, noisy in (("camera", camera), ("white", white.astype(np.uint8))):
        Image.fromarray(noisy).save(tmp_path / f"{name}.png")
        assert main(["denoise", str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}-out.png"),
                     "--model", str(tiny_rgb_model)]) == 0
        said = capsys.readouterr().err
        assert ("signal-dependent" in said) == (name == "camera")
        assert main(["deblur", str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}-db.png"), "--noise", "auto",
                     "--steps", "1", "--model", str(tiny_rgb_model)]) == 0
        said = capsys.readouterr().err
        assert ("signal-dependent" in said) == (name == "camera")


@pytest.mark.parametrize("task", ["upscale", "deblur"])
def test_upscaling_and_deblurring_a_cameras_noise_weigh_each_pixel_by_its_own_noise(task):
    """The shipped astronaut (gray) shrunk 2× or blurred (Gaussian std 1.6), then a camera's noise 6·x + 4
    (Poisson–Gaussian, 8-bit): told the curve, each data step weighs every pixel by its own variance, which
    beats one σ, even the noise's RMS over the image (measured: ×2 on 256² 26.10 → 26.55 dB; deblurring the
    centre 128² crop 26.81 → 27.13); the curve estimated from the input does as well as told within 0.3 dB
    (measured 26.69 and 27.15)."""
    from kuosan.tasks.operators import BicubicDownsample, Blur, gaussian_kernel

    clean = astronaut(gray=True).astype(np.float64)
    if task == "deblur":
        clean = clean[64:192, 64:192]
    x = torch.from_numpy(clean / 255)[None, None]
    if task == "upscale":
        degraded = BicubicDownsample(2)(x)
    else:
        padded = torch.nn.functional.pad(x, (16,) * 4, mode="reflect")
        degraded = Blur(gaussian_kernel(1.6))(padded)[..., 16:-16, 16:-16]
    degraded = degraded[0, 0].clamp(0, 1).numpy() * 255
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(6 * rng.poisson(degraded / 6) + 2 * rng.standard_normal(degraded.shape)), 0, 255)
    noisy = noisy.astype(np.uint8)
    rms = float(np.sqrt(np.mean(6 * degraded + 4)))
    run = {"upscale": lambda **k: kuosan.upscale(noisy, 2, **k), "deblur": lambda **k: kuosan.deblur(noisy, 1.6, **k)}
    white, curve = psnr(run[task](noise=rms), clean), psnr(run[task](noise_curve=(6, 4)), clean)
    assert curve > white + {"upscale": 0.25, "deblur": 0.15}[task]
    assert psnr(run[task](noise_curve="auto"), clean) > curve - 0.3
    with pytest.raises(KuosanError, match="not both"):
        run[task](noise=rms, noise_curve=(6, 4))
