"""Denoising a camera's signal-dependent noise: one σ for the whole photo vs variance stabilisation.

A photo's noise is mostly Poisson–Gaussian: its variance gain·x + floor grows with the clean value x (photon shot
noise plus read noise). The held-out photos of ``benchmarks/restore.py`` (centre 256×256 crops) get such noise for
a few curves (0–255 units; seed 0), saved as 8 bits (rounded, clipped at black and white). Per photo: the curve
``kuosan.estimate_noise_curve`` reads, and PSNR of: the noisy image; BM3D told the noise's RMS σ over the photo
(the best single σ a one-σ method could be told); BM3D through the generalized Anscombe transform with the true
curve and the exact unbiased inverse (Mäkitalo & Foi's VST + BM3D, with ``--bm3d``); kuosan with σ estimated (what
``kuosan denoise`` does without ``--noise-curve``); kuosan told the RMS σ; kuosan through the transform, told the
curve and with it estimated (``--noise-curve auto``), all in this one run, with kuosan's seconds (curve estimated).

``--tasks upscale,deblur`` adds a table for the same photos shrunk 4× (antialiased bicubic) or blurred (Gaussian,
std 1.6 px, reflected edges) before the camera's noise: PSNR of bicubic interpolation or of the blurred input, and
of kuosan ``upscale`` / ``deblur`` with one σ estimated (``--noise auto``), told the RMS σ, and weighing each pixel
by its own noise variance, the curve told and estimated (``--noise-curve``), with the seconds of the last.

    python benchmarks/camera_noise.py [--kinds gray,rgb] [--curves 1,4:3,9:8,16] [--bm3d] [--panel PNG]
                                      [--tasks denoise,upscale,deblur]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from restore import bicubic_up, crop, degrade, psnr, save_panel


def camera_noise(clean: np.ndarray, gain: float, floor: float) -> np.ndarray:
    """``clean`` (0–1) with Poisson–Gaussian noise of variance gain·x + floor (0–255 units, seed 0), saved as 8
    bits (rounded, clipped at black and white), back in 0–1."""
    rng = np.random.default_rng(0)
    noisy = gain * rng.poisson(clean * 255 / gain) + math.sqrt(floor) * rng.standard_normal(clean.shape)
    return (np.clip(np.round(noisy), 0, 255) / 255).astype(np.float32)


def parse_curves(text: str) -> list[tuple[float, float]]:
    try:
        curves = [tuple(float(v) for v in part.split(",")) for part in text.split(":")]
    except ValueError:
        raise SystemExit(f"--curves {text!r}: give GAIN,FLOOR pairs separated by colons, e.g. 1,4:3,9") from None
    if not curves or any(len(c) != 2 or c[0] <= 0 or c[1] < 0 for c in curves):
        raise SystemExit(f"--curves {text!r}: each needs a gain > 0 and a floor ≥ 0, e.g. 1,4:3,9")
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="gray,rgb", help="gray, rgb or both")
    parser.add_argument("--curves", default="1,4:3,9:8,16", help="noise curves GAIN,FLOOR (0–255 units), ':'-separated")
    parser.add_argument("--bm3d", action="store_true", help="add BM3D (RMS σ, and through the transform)")
    parser.add_argument("--panel", help="save noisy | BM3D + transform | kuosan σ auto | kuosan --noise-curve auto "
                                        "| clean for the last photo (needs --bm3d)")
    parser.add_argument("--tasks", default="denoise", help="denoise, upscale, deblur: any of them, comma-separated")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if not kinds or any(k not in ("gray", "rgb") for k in kinds):
        parser.error(f"--kinds {args.kinds!r}: use gray, rgb or gray,rgb")
    if args.panel and not args.bm3d:
        parser.error("--panel needs --bm3d (the panel shows BM3D's result)")
    curves = parse_curves(args.curves)
    tasks = args.tasks.split(",")
    if not set(tasks) <= {"denoise", "upscale", "deblur"}:
        parser.error(f"--tasks {args.tasks!r}: use denoise, upscale, deblur")
    if set(tasks) & {"upscale", "deblur"}:
        restoration_table([t for t in tasks if t != "denoise"], kinds, curves)
    if "denoise" not in tasks:
        return

    import torch

    import kuosan
    from kuosan.data.photos import held_out_photos
    from kuosan.tasks.noise_level import NoiseCurve
    from kuosan.tasks.vst import GeneralizedAnscombe

    panel = None
    print("| kind | noise variance | photo | curve estimated | noisy | BM3D, RMS σ | BM3D + transform | kuosan σ auto "
          "| kuosan, RMS σ | kuosan + transform (curve told) | kuosan + transform (curve auto) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for gain, floor in curves:
            for name, photo in held_out_photos({"gray": 1, "rgb": 3}[kind]).items():
                clean = crop(photo)
                y = camera_noise(clean, gain, floor)
                rms = math.sqrt(float(np.mean(gain * clean * 255 + floor)))
                estimated = kuosan.estimate_noise_curve(y)
                one_sigma_out = kuosan.denoise(y)
                one_sigma = psnr(one_sigma_out, clean)
                rms_told = psnr(kuosan.denoise(y, rms), clean)
                told = psnr(kuosan.denoise(y, noise_curve=(gain, floor)), clean)
                start = time.perf_counter()
                ours = kuosan.denoise(y, noise_curve="auto")
                seconds = time.perf_counter() - start
                auto = psnr(ours, clean)
                bm3d_rms = bm3d_vst = "–"
                if args.bm3d:
                    import bm3d

                    run = bm3d.bm3d if kind == "gray" else bm3d.bm3d_rgb
                    bm3d_rms = f"{psnr(run(y, rms / 255), clean):.2f}"
                    transform = GeneralizedAnscombe(NoiseCurve(gain, floor))
                    stabilised = transform.forward(torch.from_numpy(y.astype(np.float64) * 255)).numpy()
                    through = transform.inverse(torch.from_numpy(np.asarray(run(stabilised, 1.0), np.float64)))
                    bm3d_out = through.numpy() / 255
                    bm3d_vst = f"{psnr(bm3d_out, clean):.2f}"
                    panel = [y, bm3d_out, one_sigma_out, ours, clean]
                print(f"| {kind} | {gain:g}·x + {floor:g} | {name} | {estimated.gain:.2f}·x + {estimated.floor:.1f} "
                      f"| {psnr(y, clean):.2f} | {bm3d_rms} | {bm3d_vst} | {one_sigma:.2f} | {rms_told:.2f} "
                      f"| {told:.2f} | {auto:.2f} | {seconds:.1f} |", flush=True)
    if args.panel and panel is not None:
        save_panel(panel, args.panel)
        print(f"\npanel (noisy 8-bit | BM3D + transform | kuosan σ auto | kuosan --noise-curve auto | clean) → "
              f"{args.panel}")


def restoration_table(tasks: list[str], kinds: list[str], curves: list[tuple[float, float]]) -> None:
    import functools

    import kuosan
    from kuosan.data.photos import held_out_photos

    print("| kind | task | noise variance | photo | curve estimated | bicubic / blurred input | kuosan σ auto "
          "| kuosan, RMS σ | kuosan, curve told | kuosan, curve auto | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for task in tasks:
            for gain, floor in curves:
                for name, photo in held_out_photos({"gray": 1, "rgb": 3}[kind]).items():
                    clean = crop(photo)
                    degraded = np.clip(degrade(clean, task), 0, 1)
                    y = camera_noise(degraded, gain, floor)
                    rms = math.sqrt(float(np.mean(gain * degraded * 255 + floor)))
                    if task == "upscale":
                        base = bicubic_up(y)
                        run = functools.partial(kuosan.upscale, y, 4)
                    else:
                        base, run = y, functools.partial(kuosan.deblur, y, 1.6)
                    estimated = kuosan.estimate_noise_curve(y)
                    one_sigma = psnr(run(noise=None), clean)
                    rms_told = psnr(run(noise=rms), clean)
                    told = psnr(run(noise_curve=(gain, floor)), clean)
                    start = time.perf_counter()
                    auto = psnr(run(noise_curve="auto"), clean)
                    seconds = time.perf_counter() - start
                    print(f"| {kind} | {task} | {gain:g}·x + {floor:g} | {name} | {estimated.gain:.2f}·x + "
                          f"{estimated.floor:.1f} | {psnr(base, clean):.2f} | {one_sigma:.2f} | {rms_told:.2f} "
                          f"| {told:.2f} | {auto:.2f} | {seconds:.1f} |", flush=True)
    print()


if __name__ == "__main__":
    main()
