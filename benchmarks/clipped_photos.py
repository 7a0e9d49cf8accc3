"""Denoising photos saved as 8-bit images: the noise clipped at black and white and rounded, as in a real file.

The held-out photos of ``benchmarks/restore.py`` (centre 256×256 crops, white Gaussian noise σ = 15, 25, 50 in
0–255 units, seed 0), then clipped to [0, 255] and rounded. Per photo: the share of clipped pixels, the noise level
``kuosan.estimate_noise`` reads from it, PSNR of
kuosan (MMSE, given σ), kuosan ``--adapt`` (GainTuning steps, 10 by default) and, with ``--bm3d``, BM3D given
the true σ, all in this one run. It shows what fitting the prior does where SURE's Gaussian noise model fails.

    python benchmarks/clipped_photos.py [--kinds gray,rgb] [--sigmas 15,25,50] [--adapt 10] [--bm3d]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from restore import crop, psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="gray,rgb", help="gray, rgb or both")
    parser.add_argument("--sigmas", default="15,25,50", help="noise levels in 0–255 units")
    parser.add_argument("--adapt", type=int, default=10, metavar="STEPS", help="GainTuning steps")
    parser.add_argument("--bm3d", action="store_true", help="add BM3D (given σ) to each row")
    args = parser.parse_args()
    import kuosan
    from kuosan.data.photos import held_out_photos

    print("| kind | σ | photo | clipped | σ estimated | kuosan | kuosan --adapt | Δ | BM3D | s (adapt) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        photos = held_out_photos({"gray": 1, "rgb": 3}[kind])
        for sigma in (int(s) for s in args.sigmas.split(",")):
            for name, photo in photos.items():
                clean = crop(photo)
                noisy = clean + sigma / 255 * np.random.default_rng(0).standard_normal(clean.shape)
                y = (np.round(np.clip(noisy, 0, 1) * 255) / 255).astype(np.float32)
                share = float(np.mean((y == 0) | (y == 1)))
                estimated = kuosan.estimate_noise(y)
                plain = psnr(kuosan.denoise(y, sigma), clean)
                start = time.perf_counter()
                adapted = psnr(kuosan.denoise(y, sigma, adapt=args.adapt), clean)
                seconds = time.perf_counter() - start
                reference = "–"
                if args.bm3d:
                    import bm3d

                    run = bm3d.bm3d if kind == "gray" else bm3d.bm3d_rgb
                    reference = f"{psnr(run(y, sigma / 255), clean):.2f}"
                print(f"| {kind} | {sigma} | {name} | {share * 100:.1f} % | {estimated:.1f} | {plain:.2f} "
                      f"| {adapted:.2f} | {adapted - plain:+.2f} | {reference} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
