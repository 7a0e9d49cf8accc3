"""Denoising photos saved as 8-bit images: the noise clipped at black and white and rounded, as in a real file.

The held-out photos of ``benchmarks/restore.py`` (centre 256×256 crops, white Gaussian noise σ = 15, 25, 50 in
0–255 units, seed 0), then clipped to [0, 255] and rounded. Per photo: the share of clipped pixels, the noise level
``kuosan.estimate_noise`` reads from it, and PSNR of: BM3D given the true σ (with ``--bm3d``); kuosan (MMSE, given
σ) taking the clipped pixels as they are (``--clip-rounds 0``); kuosan filling them first (``--clip-rounds``, 1 by
default: their expected values before clipping given a first estimate); the same with σ estimated; and that with
``--adapt`` (GainTuning steps, 10 by default), all in this one run, with kuosan's seconds (filled, given σ) and
``--adapt``'s. In brackets: filling's gain over taking them as they are, and ``--adapt``'s over filling.

``--tasks upscale,deblur`` adds a table for the same photos shrunk 4× (antialiased bicubic) or blurred (Gaussian,
std 1.6 px, reflected edges), then the noise, clipped and rounded: kuosan ``upscale`` / ``deblur`` told σ, taking
the clipped values as they are (``fill_clipped=False``) and filling them at each step (the default), and with the
noise level estimated; PSNR of bicubic interpolation or of the blurred input for scale.

    python benchmarks/clipped_photos.py [--kinds gray,rgb] [--sigmas 15,25,50] [--adapt 10] [--clip-rounds 1]
                                        [--bm3d] [--panel docs/clipped.png] [--tasks denoise,upscale,deblur]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from restore import bicubic_up, crop, degrade, psnr, save_panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="gray,rgb", help="gray, rgb or both")
    parser.add_argument("--sigmas", default="15,25,50", help="noise levels in 0–255 units")
    parser.add_argument("--adapt", type=int, default=10, metavar="STEPS",
                        help="GainTuning steps (0: leave the column out)")
    parser.add_argument("--clip-rounds", type=int, default=1, help="kuosan denoise --clip-rounds")
    parser.add_argument("--bm3d", action="store_true", help="add BM3D (given σ) to each row")
    parser.add_argument("--panel", help="save noisy | BM3D | kuosan, clipped as they are | kuosan | clean for the "
                                        "last photo (needs --bm3d)")
    parser.add_argument("--tasks", default="denoise", help="denoise, upscale, deblur: any of them, comma-separated")
    args = parser.parse_args()
    if args.panel and not args.bm3d:
        parser.error("--panel needs --bm3d (the panel shows BM3D's result)")
    tasks = args.tasks.split(",")
    if not set(tasks) <= {"denoise", "upscale", "deblur"}:
        parser.error(f"--tasks {args.tasks!r}: use denoise, upscale, deblur")
    if not set(args.kinds.split(",")) <= {"gray", "rgb"}:
        parser.error(f"--kinds {args.kinds!r}: use gray, rgb or both")
    sigmas = [int(s) for s in args.sigmas.split(",")]
    if set(tasks) & {"upscale", "deblur"}:
        restoration_table([t for t in tasks if t != "denoise"], args.kinds.split(","), sigmas)
    if "denoise" not in tasks:
        return
    import kuosan
    from kuosan.data.photos import held_out_photos

    panel = None
    print("| kind | σ | photo | clipped | σ estimated | BM3D (true σ) | kuosan, clipped as they are | kuosan "
          "| kuosan σ auto | kuosan --adapt | s (kuosan · --adapt) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        photos = held_out_photos({"gray": 1, "rgb": 3}[kind])
        for sigma in sigmas:
            for name, photo in photos.items():
                clean = crop(photo)
                noisy = clean + sigma / 255 * np.random.default_rng(0).standard_normal(clean.shape)
                y = (np.round(np.clip(noisy, 0, 1) * 255) / 255).astype(np.float32)
                share = float(np.mean((y == 0) | (y == 1)))
                estimated = kuosan.estimate_noise(y)
                raw = kuosan.denoise(y, sigma, clip_rounds=0)
                as_they_are = psnr(raw, clean)
                start = time.perf_counter()
                ours = kuosan.denoise(y, sigma, clip_rounds=args.clip_rounds)
                seconds = time.perf_counter() - start
                filled = psnr(ours, clean)
                auto = psnr(kuosan.denoise(y, None, clip_rounds=args.clip_rounds), clean)
                fitted, adapt_seconds = "–", "–"
                if args.adapt:
                    start = time.perf_counter()
                    adapted = psnr(kuosan.denoise(y, sigma, adapt=args.adapt, clip_rounds=args.clip_rounds), clean)
                    adapt_seconds = f"{time.perf_counter() - start:.0f}"
                    fitted = f"{adapted:.2f} ({adapted - filled:+.2f})"
                reference = "–"
                if args.bm3d:
                    import bm3d

                    run = bm3d.bm3d if kind == "gray" else bm3d.bm3d_rgb
                    bm3d_out = run(y, sigma / 255)
                    reference = f"{psnr(bm3d_out, clean):.2f}"
                    panel = [y, bm3d_out, raw, ours, clean]
                print(f"| {kind} | {sigma} | {name} | {share * 100:.1f} % | {estimated:.1f} | {reference} "
                      f"| {as_they_are:.2f} | {filled:.2f} ({filled - as_they_are:+.2f}) | {auto:.2f} "
                      f"| {fitted} | {seconds:.1f} · {adapt_seconds} |", flush=True)
    if args.panel and panel is not None:
        save_panel(panel, args.panel)
        print(f"\npanel (noisy 8-bit | BM3D | kuosan, clipped as they are | kuosan | clean) → {args.panel}")


def restoration_table(tasks: list[str], kinds: list[str], sigmas: list[int]) -> None:

    import kuosan
    from kuosan.data.photos import held_out_photos

    print("| kind | task | σ | photo | clipped | bicubic / blurred input | kuosan, clipped as they are | kuosan "
          "| kuosan noise auto | s (kuosan) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for task in tasks:
            for sigma in sigmas:
                for name, photo in held_out_photos({"gray": 1, "rgb": 3}[kind]).items():
                    clean = crop(photo)
                    degraded = degrade(clean, task)
                    noisy = degraded + sigma / 255 * np.random.default_rng(0).standard_normal(degraded.shape)
                    y = (np.round(np.clip(noisy, 0, 1) * 255) / 255).astype(np.float32)
                    share = float(np.mean((y == 0) | (y == 1)))
                    if task == "upscale":
                        base = bicubic_up(y)
                        run = functools.partial(kuosan.upscale, y, 4)
                    else:
                        base, run = y, functools.partial(kuosan.deblur, y, 1.6)
                    as_they_are = psnr(run(noise=sigma, fill_clipped=False), clean)
                    start = time.perf_counter()
                    filled = psnr(run(noise=sigma), clean)
                    seconds = time.perf_counter() - start
                    auto = psnr(run(noise=None), clean)
                    print(f"| {kind} | {task} | {sigma} | {name} | {share * 100:.1f} % | {psnr(base, clean):.2f} "
                          f"| {as_they_are:.2f} | {filled:.2f} ({filled - as_they_are:+.2f}) | {auto:.2f} "
                          f"| {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
