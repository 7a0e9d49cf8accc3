"""``kuosan demo``: what kuosan does, on the models shipped in the package, in about a minute on a CPU.

Writes into one folder: a grid of generated digits (one column per class), a GIF of one sampling trajectory,
the denoising of the shipped photo (noisy | denoised | clean, with PSNR), a 2× upscale and an inpainting,
and ``index.html`` that shows them with their numbers.
"""

from __future__ import annotations

import html
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kuosan.data.io import atomic_write, save_grid, save_image, side_by_side


def demo_photo() -> Image.Image:
    with resources.files("kuosan.data.builtin").joinpath("astronaut.png").open("rb") as f:
        return Image.open(f).convert("RGB")


def run_demo(out: str | Path, quick: bool = False, log=print) -> Path:
    """Write the demo into ``out`` (created if needed); returns the path of index.html."""
    import kuosan
    from kuosan import samplers
    from kuosan.diffusion.ladders import loglinear_sigmas
    from kuosan.tasks.restore import psnr

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []

    # 1. Digits, one column per class, and one trajectory as a GIF.
    start = time.perf_counter()
    digits = kuosan.load("builtin:digits")
    per_class = 2 if quick else 10
    labels = torch.arange(10).repeat(per_class)
    steps = 4 if quick else 12
    images = kuosan.generate(digits, len(labels), sampler="dpmpp_2m", steps=steps, labels=labels, seed=0)
    save_grid(images, out / "digits.png", nrow=10, scale=2)
    frames = []
    sigmas = loglinear_sigmas(steps, digits.sigma_min, digits.sigma_max)
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(7)) * sigmas[0]
    with torch.no_grad():
        samplers.get("dpmpp_2m")(digits, x, sigmas, class_labels=torch.tensor([7]),
                                 callback=lambda info: frames.append(info["x"].clone()))
    gif = [Image.fromarray(((f[0, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()).resize((112, 112),
                                                                                               Image.NEAREST)
           for f in frames]
    atomic_write(out / "trajectory.gif", lambda p: gif[0].save(p, format="GIF", save_all=True,
                                                               append_images=gif[1:] + [gif[-1]] * 4,
                                                               duration=250, loop=0))
    t_digits = time.perf_counter() - start
    log(f"kuosan demo: digits ({len(labels)} samples, {steps} steps) in {t_digits:.1f} s")
    sections.append(("Generated digits", "digits.png",
                     f"builtin:digits, DPM-Solver++(2M), {steps} steps, one column per class, {t_digits:.1f} s "
                     "including the trajectory below."))
    sections.append(("One sampling trajectory (a 7, from noise to digit)", "trajectory.gif", ""))

    # 2. Photo restoration with builtin:photo.
    photo = demo_photo()
    if quick:
        photo = photo.crop((64, 32, 128, 96))
    clean = np.asarray(photo)
    noisy_arr = np.clip(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape), 0, 255)
    noisy = Image.fromarray(noisy_arr.round().astype(np.uint8))
    start = time.perf_counter()
    sigma = kuosan.estimate_noise(noisy)
    denoised = kuosan.denoise(noisy, sigma)
    t_denoise = time.perf_counter() - start
    p_noisy, p_denoised = psnr(np.asarray(noisy), clean), psnr(np.asarray(denoised), clean)
    save_image(side_by_side([noisy, denoised, photo], gap=6), out / "denoise.png")
    log(f"kuosan demo: denoising {p_noisy:.2f} → {p_denoised:.2f} dB in {t_denoise:.1f} s")
    sections.append(("Denoising (noisy | kuosan | clean)", "denoise.png",
                     f"Noise σ = 25 added; kuosan estimated σ = {sigma:.1f} from the image alone. PSNR "
                     f"{p_noisy:.2f} dB → {p_denoised:.2f} dB, {t_denoise:.1f} s."))

    crop = photo.crop((0, 0, 64, 64)) if quick else photo.crop((48, 16, 176, 144))
    small = crop.resize((crop.width // 2, crop.height // 2), Image.BICUBIC)   # as most software shrinks
    start = time.perf_counter()
    big = kuosan.upscale(small, 2, steps=3 if quick else 10)
    t_up = time.perf_counter() - start
    bicubic = small.resize(crop.size, Image.BICUBIC)
    p_bic, p_up = psnr(np.asarray(bicubic), np.asarray(crop)), psnr(np.asarray(big), np.asarray(crop))
    save_image(side_by_side([small.resize(crop.size, Image.NEAREST), bicubic, big, crop], gap=6), out / "upscale.png")
    log(f"kuosan demo: upscale ×2 bicubic {p_bic:.2f} dB, kuosan {p_up:.2f} dB in {t_up:.1f} s")
    sections.append(("Upscaling ×2 (input | bicubic | kuosan | original)", "upscale.png",
                     f"PSNR bicubic {p_bic:.2f} dB, kuosan {p_up:.2f} dB, {t_up:.1f} s."))

    mask = np.zeros(crop.size[::-1], np.uint8)
    h, w = mask.shape
    mask[h // 3:h // 3 + h // 5, w // 4:w // 4 + w // 3] = 255
    start = time.perf_counter()
    filled = kuosan.inpaint(crop, mask, mode="sample", steps=3 if quick else 10, resample=1 if quick else 2)
    t_in = time.perf_counter() - start
    holed = np.asarray(crop).copy()
    holed[mask > 0] = 255
    save_image(side_by_side([Image.fromarray(holed), filled, crop], gap=6), out / "inpaint.png")
    log(f"kuosan demo: inpainting in {t_in:.1f} s")
    sections.append(("Inpainting (hole | kuosan | original)", "inpaint.png", f"{t_in:.1f} s."))

    body = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n<img src=\"{name}\" alt=\"{html.escape(title)}\">\n"
        + (f"<p>{html.escape(text)}</p>" if text else "") for title, name, text in sections)
    page = ("<!doctype html>\n<meta charset=\"utf-8\">\n<title>kuosan demo</title>\n"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}img{image-rendering:pixelated;"
            "max-width:100%}</style>\n<h1>kuosan demo</h1>\n<p>Made on this machine by <code>kuosan demo</code> "
            "with the models shipped in the package (builtin:digits, builtin:photo).</p>\n" + body + "\n")
    return atomic_write(out / "index.html", lambda p: p.write_text(page, encoding="utf-8"))
