"""Restoration benchmark on the photos held out from ``builtin:photo``'s training (kuosan.data.photos).

Denoising: centre 256×256 crops, white Gaussian noise (σ = 15, 25, 50 in 0–255 units, seed 0, not clipped), gray
and RGB. PSNR / SSIM / seconds per image of kuosan (MMSE, given σ), kuosan with σ estimated (``--sigma auto``),
kuosan averaged over ``--ensemble`` (8) flips/rotations, kuosan fitted to each image first (``--adapt`` 10
GainTuning steps, alone and with the ensemble), and BM3D (``bm3d.bm3d`` / ``bm3d.bm3d_rgb`` given the
true σ), all in this one run on this machine. Super-resolution ×2 and ×4: the low-resolution input is the crop
shrunk with antialiased bicubic (Pillow's, ``BicubicDownsample``) or box averaging, and (×4 bicubic) the same with
white noise σ = 10 added; kuosan ``upscale`` (mmse, told the kernel; noise given or ``auto``) vs bicubic
interpolation (PSNR). Deblurring: the crop blurred with a Gaussian (std 1.6 or 3 px; reflected edges, not
periodic) plus white noise σ = 2.55 or 7.65; kuosan ``deblur`` (told the blur and σ) vs scikit-image's
unsupervised Wiener–Hunt deconvolution and Richardson–Lucy (30 iterations), PSNR. Inpainting: pixels removed from
the crop by four masks (50 % and 80 % of the pixels at random, seed 0; 4-pixel lines every 24 rows; a 32×32 hole
in the middle); kuosan ``inpaint`` (mmse) vs scikit-image's biharmonic inpainting, PSNR over the whole crop (known
pixels are kept by both).

    pip install -e .[bench]        # bm3d, scikit-image, scikit-learn
    python benchmarks/restore.py [--quick | --denoise-only | --sr-only | --deblur-only | --inpaint-only]
                                  [--panel docs/restore.png]
    python benchmarks/restore.py --model runs/photo-ft --device cuda --no-bm3d     # compare a new prior on a GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kuosan.checkpoint import PRECISIONS


def crop(image: np.ndarray, size: int = 256) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size].astype(np.float64) / 255.0


def degrade(clean: np.ndarray, task: str) -> np.ndarray:
    """``clean`` ([H, W] or [H, W, 3], 0–1) shrunk 4× with antialiased bicubic (``upscale``) or blurred with a
    Gaussian of std 1.6 px, edges reflected (``deblur``), in the same layout."""
    import torch
    import torch.nn.functional as F

    from kuosan.tasks.operators import BicubicDownsample, Blur, gaussian_kernel

    x = torch.from_numpy(clean)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    if task == "upscale":
        out = BicubicDownsample(4)(x)
    else:
        r = 16
        out = Blur(gaussian_kernel(1.6))(F.pad(x, (r, r, r, r), mode="reflect"))[..., r:-r, r:-r]
    return out[0, 0].numpy() if clean.ndim == 2 else out[0].permute(1, 2, 0).numpy()


def bicubic_up(y: np.ndarray, scale: int = 4) -> np.ndarray:
    """``y`` enlarged ``scale``× by bicubic interpolation (the baseline of super-resolution), same layout."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(y)
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[0]
    return out[0].numpy() if y.ndim == 2 else out.permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of an estimate in [0, 1] units, clipped to the displayable range first, as a saved image would be."""
    from kuosan.tasks.restore import psnr as kuosan_psnr

    return kuosan_psnr(np.clip(a, 0, 1), b, peak=1.0)


def save_panel(images: list, path: str) -> None:
    """Images in [0, 1] (gray or RGB, one size) side by side, a white gap after each, as an 8-bit PNG."""
    from PIL import Image

    gap = ((0, 0), (0, 6)) + ((0, 0),) * (np.asarray(images[0]).ndim - 2)
    strip = np.concatenate([np.pad(np.clip(np.asarray(p, np.float64), 0, 1), gap, constant_values=1)
                            for p in images], axis=1)
    Image.fromarray(np.round(strip * 255).astype(np.uint8)).save(path)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(a, 0, 1), b, data_range=1.0,
                                       channel_axis=-1 if a.ndim == 3 else None))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="σ = 25 only, one photo per kind, no SR")
    parser.add_argument("--panel", help="save noisy | BM3D | kuosan | clean for the first RGB photo at σ = 25")
    parser.add_argument("--sr-only", action="store_true", help="only the super-resolution table")
    parser.add_argument("--deblur-only", action="store_true", help="only the deblurring table")
    parser.add_argument("--denoise-only", action="store_true", help="only the denoising table")
    parser.add_argument("--inpaint-only", action="store_true", help="only the inpainting table")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--model", default="builtin:photo", help="the prior: builtin:photo, a run or a model folder")
    parser.add_argument("--colour-model",
                        help="the prior for colour images (default: --model's colour companion if installed, as "
                             "kuosan does, else --model through the opponent colour transform)")
    parser.add_argument("--kinds", default="gray,rgb", help="which rows: gray, rgb or both")
    parser.add_argument("--ensemble", type=int, default=8, choices=range(2, 9), metavar="2..8",
                        help="flips/rotations averaged in the self-ensemble column")
    parser.add_argument("--adapt", type=int, default=10, metavar="STEPS",
                        help="GainTuning steps in the adapted columns (kuosan denoise --adapt; 0: leave them out)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="kuosan's arithmetic, as the restore commands' --precision")
    parser.add_argument("--device", default="cpu", help="where kuosan runs (cpu, cuda); the times are that device's")
    parser.add_argument("--no-bm3d", action="store_true",
                        help="skip BM3D (its columns read nan): to compare priors where bm3d is not installed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import kuosan
    from kuosan.data.photos import held_out_photos
    from kuosan.tasks.restore import colour_companion, load_prior

    device = args.device
    colour_model = args.colour_model or colour_companion(args.model) or args.model   # as kuosan.denoise chooses
    gray_prior = load_prior(args.model, device, precision=args.precision)
    priors = {1: gray_prior, 3: gray_prior if colour_model == args.model
              else load_prior(colour_model, device, precision=args.precision)}
    prior_names = {1: args.model, 3: colour_model}
    kinds = tuple((c, k) for c, k in ((1, "gray"), (3, "rgb")) if k in args.kinds.split(","))
    if args.no_bm3d:
        def bm3d_denoise(noisy, sigma, channels):
            return np.full_like(noisy, np.nan)
    else:
        import bm3d

        def bm3d_denoise(noisy, sigma, channels):
            return (bm3d.bm3d if channels == 1 else bm3d.bm3d_rgb)(noisy, sigma)
    only = args.sr_only or args.deblur_only or args.denoise_only or args.inpaint_only
    sigmas = () if only and not args.denoise_only else (25,) if args.quick else (15, 25, 50)
    rows, panel = [], None
    for channels, kind in kinds:
        p = priors[channels]
        print(f"torch threads: {torch.get_num_threads()}; {kind} images: {prior_names[channels]}, {p.channels}-channel "
              f"({sum(t.numel() for t in p.parameters()) / 1e6:.2f}M parameters)")
    for channels, kind in kinds if sigmas else ():
        prior = priors[channels]
        photos = held_out_photos(channels)
        names = list(photos)[:1] if args.quick else list(photos)
        for sigma in sigmas:
            for name in names:
                clean = crop(photos[name])
                noisy = clean + sigma / 255 * np.random.default_rng(0).standard_normal(clean.shape)
                noisy32 = noisy.astype(np.float32)
                ours, t_ours = timed(kuosan.denoise, noisy32, sigma, model=prior, device=device)
                auto, t_auto = timed(kuosan.denoise, noisy32, None, model=prior, device=device)
                est = kuosan.estimate_noise(noisy32)
                ens, t_ens = timed(kuosan.denoise, noisy32, sigma, model=prior, ensemble=args.ensemble,
                                      device=device)
                ref, t_ref = timed(bm3d_denoise, noisy, sigma / 255, channels)
                adapted = adapted_ens = (np.nan, np.nan, np.nan)
                if args.adapt:
                    out, t = timed(kuosan.denoise, noisy32, sigma, model=prior, adapt=args.adapt, device=device)
                    adapted = (psnr(out, clean), ssim(out, clean), t)
                    out, t = timed(kuosan.denoise, noisy32, sigma, model=prior, adapt=args.adapt,
                                   ensemble=args.ensemble, device=device)
                    adapted_ens = (psnr(out, clean), ssim(out, clean), t)
                rows.append(dict(kind=kind, sigma=sigma, name=name, est=est,
                                 noisy=psnr(noisy, clean),
                                 ours=(psnr(ours, clean), ssim(ours, clean), t_ours),
                                 auto=(psnr(auto, clean), ssim(auto, clean), t_auto),
                                 ens=(psnr(ens, clean), ssim(ens, clean), t_ens),
                                 bm3d=(psnr(ref, clean), ssim(ref, clean), t_ref),
                                 adapted=adapted, adapted_ens=adapted_ens))
                r = rows[-1]
                print(f"{kind:4s} σ={sigma:2d} {name:17s} est σ {est:5.1f}  noisy {r['noisy']:5.2f}  "
                      f"kuosan {r['ours'][0]:5.2f}/{r['ours'][1]:.3f} {t_ours:4.1f}s  "
                      f"auto {r['auto'][0]:5.2f}  ens{args.ensemble} {r['ens'][0]:5.2f} {t_ens:4.1f}s  "
                      f"BM3D {r['bm3d'][0]:5.2f}/{r['bm3d'][1]:.3f} {t_ref:4.1f}s  "
                      f"adapted {adapted[0]:5.2f} {adapted[2]:4.1f}s  "
                      f"+ens {adapted_ens[0]:5.2f} {adapted_ens[2]:4.1f}s",
                      flush=True)
                if kind == "rgb" and sigma == 25 and panel is None:
                    panel = [np.clip(noisy, 0, 1), np.clip(ref, 0, 1), np.clip(ours, 0, 1), clean]

    if sigmas:
        denoising_table(rows, sigmas, args.ensemble, args.adapt)
    if panel is not None and args.panel:
        save_panel(panel, args.panel)
        print(f"\npanel (noisy | BM3D | kuosan | clean) → {args.panel}")
    if args.sr_only or not (args.quick or only):
        super_resolution_table(priors, kinds, held_out_photos, device)
    if args.deblur_only or not (args.quick or only):
        deblurring_table(priors, kinds, held_out_photos, device)
    if args.inpaint_only or not (args.quick or only):
        inpainting_table(priors, kinds, held_out_photos, device)


def denoising_table(rows, sigmas, ensemble: int, adapt: int) -> None:
    print("\nDenoising, mean over held-out photos (PSNR dB / SSIM / s per 256² image):")
    adapted = ((f" kuosan adapt {adapt} | kuosan adapt {adapt} + ensemble×{ensemble} |", "---|---|") if adapt
               else ("", ""))
    print(f"| kind | σ | noisy | BM3D (true σ) | kuosan mmse (true σ) | kuosan σ auto | kuosan ensemble×{ensemble} |"
          f"{adapted[0]} kuosan − BM3D |")
    print(f"|---|---|---|---|---|---|---|{adapted[1]}---|")
    for kind in ("gray", "rgb"):
        for sigma in sigmas:
            sel = [r for r in rows if r["kind"] == kind and r["sigma"] == sigma]
            if not sel:   # a kind left out by --kinds
                continue

            def mean(key, i, sel=sel):
                return float(np.mean([r[key][i] for r in sel]))

            print(f"| {kind} | {sigma} | {np.mean([r['noisy'] for r in sel]):.2f} | "
                  f"{mean('bm3d', 0):.2f} / {mean('bm3d', 1):.3f} / {mean('bm3d', 2):.1f} | "
                  f"{mean('ours', 0):.2f} / {mean('ours', 1):.3f} / {mean('ours', 2):.1f} | "
                  f"{mean('auto', 0):.2f} / {mean('auto', 1):.3f} / {mean('auto', 2):.1f} | "
                  f"{mean('ens', 0):.2f} / {mean('ens', 1):.3f} / {mean('ens', 2):.1f} | " +
                  (f"{mean('adapted', 0):.2f} / {mean('adapted', 1):.3f} / {mean('adapted', 2):.1f} | "
                   f"{mean('adapted_ens', 0):.2f} / {mean('adapted_ens', 1):.3f} / {mean('adapted_ens', 2):.1f} | "
                   if adapt else "") +
                  f"{mean('ours', 0) - mean('bm3d', 0):+.2f} (ens {mean('ens', 0) - mean('bm3d', 0):+.2f}" +
                  (f", adapt {mean('adapted', 0) - mean('bm3d', 0):+.2f}, "
                   f"both {mean('adapted_ens', 0) - mean('bm3d', 0):+.2f}" if adapt else "") + ") |")



def super_resolution_table(priors, kinds, held_out_photos, device: str) -> None:
    import torch.nn.functional as F

    import kuosan
    from kuosan.tasks.restore import downsampling

    print("\nSuper-resolution, PSNR dB, mean over held-out photos (input: the 256² crop shrunk with the kernel, "
          "then noise):")
    print("| kind | scale | kernel | input noise σ | bicubic interpolation | kuosan upscale (mmse) | gain | "
          "kuosan, noise auto | s per image |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [(2, "bicubic", 0), (4, "bicubic", 0), (2, "box", 0), (4, "box", 0), (4, "bicubic", 10)]
    for channels, kind in kinds:
        prior, photos = priors[channels], list(held_out_photos(channels).values())
        for scale, kernel, noise in cases:
            results = []
            for image in photos:
                clean = crop(image)
                x = torch.from_numpy(clean)
                x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
                low = downsampling(kernel, scale)(x)
                low = low + noise / 255 * torch.from_numpy(np.random.default_rng(0).standard_normal(low.shape))
                low = low.float()
                bicubic = F.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False)[0]
                bicubic = bicubic[0].numpy() if channels == 1 else bicubic.permute(1, 2, 0).numpy()
                low_np = low[0, 0].numpy() if channels == 1 else low[0].permute(1, 2, 0).numpy()
                up, t = timed(kuosan.upscale, low_np, scale, model=prior, kernel=kernel, noise=noise, device=device)
                auto = (kuosan.upscale(low_np, scale, model=prior, kernel=kernel, noise=None, device=device)
                        if noise else up)
                results.append((psnr(bicubic, clean), psnr(up, clean), psnr(auto, clean), t))
            b, k, a, t = (float(np.mean(v)) for v in zip(*results, strict=True))
            auto_cell = f"{a:.2f}" if noise else "—"
            print(f"| {kind} | ×{scale} | {kernel} | {noise} | {b:.2f} | {k:.2f} | {k - b:+.2f} | {auto_cell} | "
                  f"{t:.1f} |", flush=True)


def deblurring_table(priors, kinds, held_out_photos, device: str) -> None:
    from skimage.restoration import richardson_lucy, unsupervised_wiener

    import kuosan
    from kuosan.tasks.operators import Blur, gaussian_kernel

    def per_channel(fn, image, psf):
        return fn(image, psf) if image.ndim == 2 else np.stack([fn(image[..., c], psf) for c in range(3)], -1)

    print("\nDeblurring, PSNR dB, mean over held-out photos (input: the 256² crop blurred, reflected edges, "
          "then noise):")
    print("| kind | blur std | noise σ | blurred input | Richardson–Lucy (30) | unsupervised Wiener | "
          "kuosan deblur | s per image |")
    print("|---|---|---|---|---|---|---|---|")
    for channels, kind in kinds:
        prior, photos = priors[channels], list(held_out_photos(channels).values())
        for std, noise in ((1.6, 2.55), (1.6, 7.65), (3.0, 2.55)):
            kernel = gaussian_kernel(std)
            r = kernel.shape[0]
            results = []
            for image in photos:
                clean = crop(image)
                x = torch.from_numpy(clean)
                x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
                blurred = Blur(kernel)(torch.nn.functional.pad(x, (r, r, r, r), mode="reflect"))[..., r:-r, r:-r]
                blurred = blurred[0, 0].numpy() if channels == 1 else blurred[0].permute(1, 2, 0).numpy()
                blurred = blurred + noise / 255 * np.random.default_rng(0).standard_normal(clean.shape)
                ours, t = timed(kuosan.deblur, blurred.astype(np.float32), std, model=prior, noise=noise, device=device)
                rl = per_channel(lambda c, k: richardson_lucy(np.clip(c, 0, 1), k, num_iter=30), blurred,
                                 kernel.numpy())
                wiener = per_channel(lambda c, k: unsupervised_wiener(c, k, rng=0)[0], blurred, kernel.numpy())
                results.append((psnr(blurred, clean), psnr(rl, clean), psnr(wiener, clean), psnr(ours, clean), t))
            b, rl_, w, k, t = (float(np.mean(v)) for v in zip(*results, strict=True))
            print(f"| {kind} | {std} | {noise} | {b:.2f} | {rl_:.2f} | {w:.2f} | {k:.2f} | {t:.1f} |", flush=True)


def inpainting_masks(size: int = 256) -> dict[str, np.ndarray]:
    """Boolean masks, True = missing."""
    rng = np.random.default_rng(0)
    lines = np.zeros((size, size), bool)
    for row in range(8, size, 24):
        lines[row:row + 4] = True
    box = np.zeros((size, size), bool)
    box[size // 2 - 16:size // 2 + 16, size // 2 - 16:size // 2 + 16] = True
    return {"random 50 %": rng.random((size, size)) < 0.5, "random 80 %": rng.random((size, size)) < 0.8,
            "lines 4 px / 24": lines, "box 32×32": box}


def inpainting_table(priors, kinds, held_out_photos, device: str) -> None:
    from skimage.restoration import inpaint_biharmonic

    import kuosan

    print("\nInpainting, PSNR dB over the 256² crop, mean over held-out photos:")
    print("| kind | mask | missing | biharmonic (scikit-image) | kuosan inpaint (mmse) | gain | s per image "
          "(biharmonic / kuosan) |")
    print("|---|---|---|---|---|---|---|")
    for channels, kind in kinds:
        prior, photos = priors[channels], list(held_out_photos(channels).values())
        for name, mask in inpainting_masks().items():
            results = []
            for image in photos:
                clean = crop(image)
                holed = np.where(mask[..., None] if channels == 3 else mask, 0.0, clean)
                ref, t_ref = timed(inpaint_biharmonic, holed, mask, channel_axis=-1 if channels == 3 else None)
                ours, t = timed(kuosan.inpaint, holed.astype(np.float32), mask, model=prior, device=device)
                results.append((psnr(ref, clean), psnr(ours, clean), t_ref, t))
            b, k, tb, tk = (float(np.mean(v)) for v in zip(*results, strict=True))
            print(f"| {kind} | {name} | {mask.mean():.0%} | {b:.2f} | {k:.2f} | {k - b:+.2f} | {tb:.1f} / {tk:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
