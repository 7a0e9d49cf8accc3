"""The ``kuosan`` command line: parses arguments, calls the library, prints. Errors → one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kuosan import __version__
from kuosan.errors import KuosanError

EPILOG = "Noise levels on the command line are in 0–255 pixel units unless stated. Docs: README.md"


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def check_output_file(path: str | Path, what: str = "") -> Path:
    """Fail before any work when ``path`` cannot be written: its folder must exist and be writable."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise KuosanError(f"{label}: is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise KuosanError(f"{label}: folder {parent} does not exist" if not parent.exists()
                          else f"{label}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KuosanError(f"{label}: folder {parent} is not writable")
    return path


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """A folder to create or fill: it must be a folder if it exists, and writable (or creatable)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KuosanError(f"{what} {path}: exists and is not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise KuosanError(f"{what} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KuosanError(f"{what} {path}: {existing} is not writable")
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line and exit code 2, not argparse's usage block (subcommand parsers are of this class too)."""
        self.exit(2, f"kuosan: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from kuosan.config import TrainConfig
    from kuosan.nets.unet import PRESETS

    t = TrainConfig()
    parser = _Parser(prog="kuosan", description="Diffusion models for images: train, sample.",
                     epilog=EPILOG, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kuosan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("train", help="train a diffusion model on a folder of images", formatter_class=fmt,
                       description="Train an EDM-preconditioned UNet on DATA and write checkpoints to RUN.")
    p.add_argument("data", metavar="DATA", help="a folder of images (searched recursively) or builtin:digits")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write (checkpoints, samples, logs)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="network size")
    p.add_argument("--size", type=_positive_int, help="training resolution in pixels (square); default: 28 "
                   "for builtin:digits, 64 for folders")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 = gray, 3 = RGB; default: 1 for "
                   "builtin:digits, 3 for folders")
    p.add_argument("--class-cond", action="store_true",
                   help="condition on class labels (subfolder names; digit labels for builtin:digits)")
    p.add_argument("--steps", type=_positive_int, default=t.steps, help="optimiser steps")
    p.add_argument("--minutes", type=_nonneg_float, default=t.max_minutes,
                   help="stop after this many minutes of wall time (with a final checkpoint); 0 = no limit")
    p.add_argument("--batch", type=_positive_int, default=t.batch, help="images per step")
    p.add_argument("--lr", type=_positive_float, default=t.lr, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=t.warmup_steps, help="LR warm-up steps")
    p.add_argument("--cooldown", type=int, default=t.cooldown_steps,
                   help="LR falls linearly to zero over the last this many of --steps (0: constant LR)")
    p.add_argument("--ema-halflife", type=_positive_float, default=t.ema_halflife_kimg,
                   help="EMA half-life in thousands of images")
    p.add_argument("--grad-clip", type=_nonneg_float, default=t.grad_clip, help="max gradient norm, 0 = off")
    p.add_argument("--label-dropout", type=_nonneg_float, default=t.label_dropout,
                   help="probability of training without the label (enables --guidance when sampling)")
    p.add_argument("--dropout", type=_nonneg_float, default=0.0, help="dropout in residual blocks")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips; default: on for folders, off for builtin:digits")
    p.add_argument("--random-crop", action="store_true", help="random instead of centre crops")
    p.add_argument("--seed", type=int, default=t.seed, help="seed for init, data order and noise")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=t.workers, help="data-loading processes")
    p.add_argument("--log-every", type=_positive_int, default=t.log_every, help="steps between log lines")
    p.add_argument("--sample-every", type=_non_negative_int, default=t.sample_every,
                   help="steps between preview grids (RUN/samples/; 64 images up to 32², fewer when larger); "
                        "0 = none")
    p.add_argument("--checkpoint-every", type=_positive_int, default=t.checkpoint_every,
                   help="steps between checkpoints (RUN/checkpoints/)")
    p.add_argument("--keep", type=_positive_int, default=t.keep_checkpoints, help="checkpoints to keep")
    p.add_argument("--resume", choices=("auto", "never"), default="auto",
                   help="auto: if RUN has checkpoints, continue from the newest complete one (same settings "
                   "required; --steps and --minutes may grow); never: refuse a RUN that has checkpoints")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only, and float32 on a CPU: bitwise-repeatable runs and resumes "
                        "(may be slower)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each network block in the backward pass: the same training in less memory "
                        "(larger --batch or --size), for more time per step")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    from kuosan import samplers

    p = sub.add_parser("sample", help="generate images from a model", formatter_class=fmt,
                       description="Generate images. OUT: a .png grid, a folder/ (one PNG per image) or .npz.")
    p.add_argument("model", metavar="MODEL", help="run folder, checkpoint folder or builtin:NAME")
    p.add_argument("--n", type=_positive_int, default=64, help="number of images")
    p.add_argument("--sampler", default="heun", choices=samplers.available(), help="sampling algorithm")
    p.add_argument("--steps", type=_positive_int, default=18,
                   help="sampler steps on its recommended σ ladder (heun: 2·steps−1 network calls)")
    p.add_argument("--nfe", type=_positive_int, help="budget of network calls instead of --steps")
    p.add_argument("--sigmas", metavar="S,S,...,0",
                   help="an explicit σ ladder (descending, ending in 0; e.g. printed by --tune-ladder) instead "
                        "of --steps/--nfe")
    p.add_argument("--tune-ladder", metavar="DRAWS", type=_positive_int,
                   help="first fit the σ ladder to this model (deterministic samplers; best at 5–12 calls): "
                        "few-step solves of DRAWS noise images of its own are matched to accurate ones; "
                        "prints the ladder for reuse with --sigmas")
    p.add_argument("--mean-start", action="store_true",
                   help="start from the data mean the model predicts at σ_max instead of 0 (one more network "
                        "call; removes a bias of about |mean|·spread/σ_max)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--label", type=int, help="class index for every image (class-conditional models); "
                   "default: cycle through all classes")
    p.add_argument("--guidance", type=_nonneg_float, default=1.0,
                   help="classifier-free guidance scale (1 = off, >1 = stronger class adherence)")
    p.add_argument("--out", required=True, help="grid.png, a folder ending in / , or samples.npz")
    p.add_argument("--nrow", type=_positive_int, help="images per grid row")
    p.add_argument("--scale", type=_positive_int, default=1, help="enlarge the grid this many times")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per network batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")

    restore_help = ("Restore a photo with a diffusion prior (default builtin:photo, shipped in the package). "
                    "Any size (tiles), gray/RGB/RGBA (alpha kept), 8/16-bit PNG, JPEG. OUT never replaces IN.")
    p = sub.add_parser("denoise", help="remove noise from a photo (noise level estimated or given)",
                       formatter_class=fmt, description=restore_help)
    p.add_argument("input", metavar="IN", help="noisy image file")
    p.add_argument("output", metavar="OUT", help="where to write the result (.png keeps 16 bits and alpha)")
    p.add_argument("--sigma", default="auto",
                   help="noise standard deviation in 0–255 pixel units, or auto (estimated from the image by "
                        "Chen et al. 2015's patch-PCA rule refined on weak-texture patches)")
    p.add_argument("--noise-curve", metavar="auto|GAIN,FLOOR",
                   help="the noise is signal-dependent, as a camera's (Poisson–Gaussian: variance GAIN·x + FLOOR "
                        "at clean value x, 0–255 units): auto estimates it; the image is variance-stabilised "
                        "(generalized Anscombe), denoised and transformed back (instead of --sigma)")
    p.add_argument("--mode", choices=("mmse", "sample"), default="mmse",
                   help="mmse: posterior mean, best PSNR (one network pass); sample: a posterior sample "
                        "(sampler from σ down to 0; seeds give different plausible results)")
    p.add_argument("--steps", type=_positive_int, default=10, help="sampler steps for --mode sample")
    p.add_argument("--ensemble", type=int, default=1, choices=range(1, 9), metavar="1..8",
                   help="--mode mmse: average over this many flips/rotations (slower, slightly better; a colour "
                        "image with a gray prior: luminance over that many, chroma over that many flip×basis views, "
                        "so 8 with 2 bases costs 24 network passes, one pass 5)")
    p.add_argument("--chroma-bases", type=int, default=2, choices=range(1, 9), metavar="1..8",
                   help="colour images with a gray prior: average the chroma over this many rotated colour bases "
                        "(each costs 2 network passes)")
    p.add_argument("--adapt", type=_non_negative_int, default=0, metavar="STEPS",
                   help="--mode mmse: first fit the prior to this image for this many steps (GainTuning: channel "
                        "gains minimising SURE at the noise level; 10 steps: +0.1–0.2 dB for ~40 network passes per "
                        "plane, on --tile-sized crops; peak memory ~1.7 GiB gray, ~1.8 colour at 256; 0: off)")
    p.add_argument("--clip-rounds", type=_non_negative_int, default=1, metavar="N",
                   help="an image with pixels at black or white (noise clipped there, as in a saved photo): N "
                        "times, estimate the image and put each clipped pixel at its expected value before "
                        "clipping, then denoise that (one network pass each; 0: take them as they are)")
    p.add_argument("--compare", metavar="PANEL.png", help="also write noisy | denoised side by side")
    _restore_options(p)

    p = sub.add_parser("upscale", help="super-resolve a photo 2× or 4×", formatter_class=fmt,
                       description=restore_help + " The input is taken to be the output shrunk with --kernel "
                       "(bicubic: as Pillow, MATLAB and most software shrink images; box: block averages), "
                       "plus noise of σ --noise.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4, 8), help="enlargement factor")
    p.add_argument("--mode", choices=("mmse", "sample"), default="mmse",
                   help="mmse: plug-and-play with the prior, best PSNR; sample: DDNM posterior sample")
    p.add_argument("--steps", type=_positive_int, help="iterations (default 10 for mmse, 20 for sample)")
    from kuosan.tasks.restore import DOWNSAMPLING_KERNELS

    p.add_argument("--kernel", choices=tuple(DOWNSAMPLING_KERNELS), default="bicubic",
                   help="how the input was shrunk: bicubic (antialiased) or box averages")
    p.add_argument("--noise", default="0", metavar="SIGMA|auto",
                   help="noise σ of the input in 0–255 pixel units (default 0), or auto to estimate it")
    p.add_argument("--noise-curve", metavar="auto|GAIN,FLOOR", help=NOISE_CURVE_DATA_HELP)
    p.add_argument("--compare", metavar="PANEL.png", help="also write bicubic | kuosan side by side")
    _restore_options(p)

    p = sub.add_parser("deblur", help="undo a known blur (Gaussian of given width, or a kernel image)",
                       formatter_class=fmt,
                       description=restore_help + " The input is taken to be the output blurred with --blur "
                       "or --kernel, plus noise of σ --noise.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--blur", type=float, default=1.6, metavar="STD",
                   help="std of the Gaussian blur in pixels")
    p.add_argument("--kernel", metavar="KERNEL.png",
                   help="instead of --blur: the blur kernel as a gray image (odd sides; normalised to sum 1)")
    p.add_argument("--steps", type=_positive_int, default=20, help="plug-and-play iterations")
    p.add_argument("--noise", default="0", metavar="SIGMA|auto",
                   help="noise σ of the input in 0–255 pixel units (default 0), or auto to estimate it")
    p.add_argument("--noise-curve", metavar="auto|GAIN,FLOOR", help=NOISE_CURVE_DATA_HELP)
    p.add_argument("--compare", metavar="PANEL.png", help="also write input | kuosan side by side")
    _restore_options(p)

    p = sub.add_parser("inpaint", help="fill the white part of a mask", formatter_class=fmt,
                       description=restore_help + " MASK: same size as IN, white = fill.")
    p.add_argument("input", metavar="IN")
    p.add_argument("mask", metavar="MASK", help="mask image, white = pixels to fill")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--mode", choices=("mmse", "sample"), default="mmse",
                   help="mmse: best PSNR, the thin-plate fill sharpened by the prior (smooth in large holes); "
                        "sample: a posterior sample, texture drawn into the holes (--seed)")
    p.add_argument("--steps", type=_positive_int, default=20,
                   help="mmse: plug-and-play iterations; sample: sampler steps")
    p.add_argument("--resample", type=_positive_int, default=3,
                   help="sample mode: RePaint resampling, each step redone this many times (harmonises the fill)")
    p.add_argument("--compare", metavar="PANEL.png",
                   help="also write the input with the pixels to fill in white | kuosan side by side")
    _restore_options(p)

    p = sub.add_parser("eval", help="score a digit model: Fréchet distance, KID, conditional accuracy",
                       formatter_class=fmt,
                       description="Generate --n digits and score them against the 2,000 held-out digits "
                                   "(builtin:digits-test) on the features of kuosan's shipped digit classifier. "
                                   "Other kinds of data have no feature network in kuosan (none is downloaded).")
    p.add_argument("model", metavar="MODEL", help="run folder, checkpoint folder or builtin:digits")
    p.add_argument("--n", type=_positive_int, default=2000, help="number of samples (≥ 2)")
    p.add_argument("--sampler", default="heun", choices=samplers.available(), help="sampling algorithm")
    p.add_argument("--steps", type=_positive_int, default=18, help="sampler steps")
    p.add_argument("--nfe", type=_positive_int, help="budget of network calls instead of --steps")
    p.add_argument("--guidance", type=_nonneg_float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--sweep-steps", metavar="NFE,NFE,...",
                   help="instead: print the scores against the NFE budget for each sampler in --samplers")
    p.add_argument("--samplers", metavar="NAME,NAME,...", help="samplers for --sweep-steps (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--batch-size", type=_positive_int, default=500, help="images per network batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")

    p = sub.add_parser("demo", help="show what kuosan does, with the shipped models (about a minute on a CPU)",
                       formatter_class=fmt)
    p.add_argument("--out", default="kuosan-demo", help="folder to write (index.html and images)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps (seconds; for tests)")

    p = sub.add_parser("info", help="describe a model", formatter_class=fmt)
    p.add_argument("model", metavar="MODEL", help="run folder, checkpoint folder or builtin:NAME")
    return parser


def _restore_options(p) -> None:
    p.add_argument("--model", default="builtin:photo", help="builtin:photo, a run folder or a checkpoint folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling modes; --adapt's probes and crops)")
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels (bounds memory); 0 = no tiling")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the network's arithmetic: auto = bf16 on CPUs with native bf16 (AMX / AVX-512 BF16: "
                        "~3× faster, PSNR within 0.01 dB), else fp32")


def _restore_io(args):
    """Check IN/OUT before any work: OUT must not be IN, its folder must exist, its format must be known."""
    from PIL import Image

    from kuosan.data.io import open_image

    src, dst = Path(args.input), Path(args.output)
    image = open_image(src)
    if dst.exists() and dst.resolve() == src.resolve():
        raise KuosanError(f"{dst}: the output would overwrite the input; choose another file name")
    check_output_file(dst)
    if getattr(args, "compare", None):
        compare = check_output_file(args.compare, "--compare")
        if compare.resolve() in (src.resolve(), dst.resolve()):
            raise KuosanError(f"--compare {compare}: would overwrite the input or the output; choose another name")
    if dst.suffix.lower() not in Image.registered_extensions():
        raise KuosanError(f"{dst}: unknown image format; use .png (or .jpg, .tif, .webp)")
    if args.tile and args.tile < 64:
        raise KuosanError(f"--tile {args.tile}: use 0 (no tiling) or at least 64")
    from kuosan.checkpoint import resolve_model

    resolve_model(args.model)
    return image, dst


def _save_result(image, dst: Path) -> None:
    from kuosan.data.io import save_image

    if dst.suffix.lower() in (".jpg", ".jpeg") and image.mode not in ("L", "RGB"):
        if image.mode in ("RGBA", "LA"):
            raise KuosanError(f"{dst}: JPEG cannot keep the alpha channel; use .png")
        image = image.convert("L" if image.mode.startswith("I") else "RGB")
    save_image(image, dst)


def _panel(images, dst: str) -> None:
    from kuosan.data.io import save_image, side_by_side

    save_image(side_by_side(images), dst)


NOISE_CURVE_DATA_HELP = ("the input's noise is signal-dependent, as a camera's (variance GAIN·x + FLOOR at clean "
                         "value x, 0–255 units): auto estimates it; each data step weighs every pixel by its own "
                         "noise (instead of --noise)")


def _input_noise(args, image):
    """``--noise`` or ``--noise-curve`` of upscale and deblur: (σ, None) or (0, curve)."""
    from kuosan.tasks.restore import estimate_noise

    if args.noise_curve is None:
        sigma = _noise_level(args.noise, "--noise", image, estimate_noise)
        if args.noise == "auto":
            _hint_signal_dependence(image)
        return sigma, None
    if args.noise != "0":
        raise KuosanError("give --noise (white noise) or --noise-curve (signal-dependent noise), not both")
    return 0.0, _noise_curve(args.noise_curve, image)


def _noise_level(value: str, flag: str, image, estimate) -> float:
    """A noise σ option: a number in 0–255 units, or ``auto`` (estimated from the image, and said)."""
    if value == "auto":
        sigma = estimate(image)
        print(f"kuosan: estimated noise σ = {sigma:.1f} (0–255 units)", file=sys.stderr)
        return sigma
    try:
        sigma = float(value)
    except ValueError:
        raise KuosanError(f"{flag} {value!r}: give a number (0–255 units) or auto") from None
    if not 0 <= sigma <= 255:
        raise KuosanError(f"{flag} {value}: must be between 0 and 255")
    return sigma


def _noise_curve(value: str, image):
    """``--noise-curve``: ``auto`` (estimated from the image, and said) or GAIN,FLOOR."""
    from kuosan.tasks.noise_level import NoiseCurve
    from kuosan.tasks.restore import estimate_noise_curve

    if value == "auto":
        curve = estimate_noise_curve(image)
        print(f"kuosan: estimated noise variance = {curve.gain:.3g}·x + {curve.floor:.3g} (0–255 units: σ "
              f"{curve.sigma(0):.1f} at black, {curve.sigma(128):.1f} at mid-gray, {curve.sigma(255):.1f} at white)",
              file=sys.stderr)
        return curve
    try:
        gain, floor = (float(v) for v in value.split(","))
        return NoiseCurve(gain, floor)
    except ValueError:
        raise KuosanError(f"--noise-curve {value!r}: give auto or GAIN,FLOOR (two numbers ≥ 0, e.g. 2,4)") from None


# σ in the highlights over σ in the shadows (the image's 90th and 10th percentile values) from the noise curve,
# above which the noise is called signal-dependent: white noise (σ 5–50, 8-bit) on 256² crops of the 20 gray and
# 10 colour photos of kuosan.data.photos read at most 1.75; a camera's (variance 0.3·x + 4 to 8·x + 16) a median of
# 1.3–1.5 in gray and 1.9–2.1 in colour, up to 6–7. The two overlap, so this only says so.
SIGNAL_DEPENDENT = 2.0


def _hint_signal_dependence(image) -> None:
    """Say so when the noise looks signal-dependent, which ``--noise-curve auto`` handles better than one σ."""
    from kuosan.tasks.restore import noise_in_shadows_and_highlights

    try:
        shadows, highlights = noise_in_shadows_and_highlights(image)
    except ValueError:          # too small to tell
        return
    if highlights > SIGNAL_DEPENDENT * max(shadows, 1e-6):
        print(f"kuosan: the noise looks signal-dependent (σ {shadows:.1f} in the shadows, {highlights:.1f} in the "
              "highlights), as a camera's: --noise-curve auto may do better", file=sys.stderr)


def cmd_denoise(args) -> None:
    from kuosan.tasks.restore import denoise, estimate_noise
    from kuosan.train.trainer import resolve_device

    if args.adapt and args.mode != "mmse":
        raise KuosanError("--adapt works with --mode mmse (it fits the posterior mean)")
    image, dst = _restore_io(args)
    curve = None
    if args.noise_curve is not None:
        if args.sigma != "auto":
            raise KuosanError("give --sigma (white noise) or --noise-curve (signal-dependent noise), not both")
        sigma, curve = None, _noise_curve(args.noise_curve, image)
    else:
        sigma = _noise_level(args.sigma, "--sigma", image, estimate_noise)
        if args.sigma == "auto":
            _hint_signal_dependence(image)
    out = denoise(image, sigma, noise_curve=curve, model=args.model, mode=args.mode, steps=args.steps,
                  seed=args.seed, ensemble=args.ensemble, chroma_bases=args.chroma_bases, adapt=args.adapt,
                  clip_rounds=args.clip_rounds, tile=args.tile, device=resolve_device(args.device),
                  precision=args.precision, progress=True)
    _save_result(out, dst)
    if args.compare:
        _panel([image, out], args.compare)
    print(f"kuosan: wrote {dst}" + (f" and {args.compare}" if args.compare else ""))


def cmd_upscale(args) -> None:
    from PIL import Image

    from kuosan.tasks.restore import upscale
    from kuosan.train.trainer import resolve_device

    image, dst = _restore_io(args)
    noise, curve = _input_noise(args, image)
    out = upscale(image, args.scale, model=args.model, mode=args.mode, steps=args.steps, kernel=args.kernel,
                  noise=noise, noise_curve=curve, seed=args.seed, tile=args.tile, device=resolve_device(args.device),
                  precision=args.precision, progress=True)
    _save_result(out, dst)
    if args.compare:
        _panel([image.resize(out.size, Image.BICUBIC), out], args.compare)
    print(f"kuosan: wrote {dst}" + (f" and {args.compare}" if args.compare else ""))


def cmd_deblur(args) -> None:
    import numpy as np

    from kuosan.data.io import open_image
    from kuosan.tasks.restore import deblur
    from kuosan.train.trainer import resolve_device

    image, dst = _restore_io(args)
    blur = args.blur
    if args.kernel:
        blur = np.asarray(open_image(args.kernel).convert("F"), dtype=np.float64)
    noise, curve = _input_noise(args, image)
    out = deblur(image, blur, model=args.model, steps=args.steps, noise=noise, noise_curve=curve, tile=args.tile,
                 device=resolve_device(args.device), precision=args.precision, progress=True)
    _save_result(out, dst)
    if args.compare:
        _panel([image, out], args.compare)
    print(f"kuosan: wrote {dst}" + (f" and {args.compare}" if args.compare else ""))


def cmd_inpaint(args) -> None:
    from kuosan.data.io import open_image, side_by_side
    from kuosan.tasks.restore import inpaint, pixels_to_fill
    from kuosan.train.trainer import resolve_device

    image, dst = _restore_io(args)
    mask = open_image(args.mask)
    if mask.size != image.size:
        raise KuosanError(f"{args.mask}: mask is {mask.width}×{mask.height} but the image is "
                          f"{image.width}×{image.height}")
    if Path(args.output).resolve() == Path(args.mask).resolve():
        raise KuosanError(f"{args.output}: the output would overwrite the mask; choose another file name")
    out = inpaint(image, mask, model=args.model, mode=args.mode, steps=args.steps, resample=args.resample,
                  seed=args.seed, tile=args.tile, device=resolve_device(args.device),
                  precision=args.precision, progress=True)
    _save_result(out, dst)
    if args.compare:
        from PIL import Image

        holed = side_by_side([image], gap=0)                    # the input as 8-bit RGB
        holed.paste((255, 255, 255), mask=Image.fromarray(pixels_to_fill(mask)))  # the pixels inpaint filled
        _panel([holed, out], args.compare)
    print(f"kuosan: wrote {dst}" + (f" and {args.compare}" if args.compare else ""))


def _sigma_ladder(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KuosanError(f"--sigmas {text!r}: give numbers separated by commas, e.g. 80,5,1,0.1,0") from None
    return values  # generate() checks that it is a ladder


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KuosanError(f"{what} {text!r}: give whole numbers separated by commas") from None
    if not values or min(values) < 1:
        raise KuosanError(f"{what} {text!r}: give positive whole numbers separated by commas")
    return values


def cmd_eval(args) -> None:
    import torch

    from kuosan import samplers
    from kuosan.checkpoint import load
    from kuosan.tasks.evaluate import load_classifier, score_digits
    from kuosan.tasks.generate import generate
    from kuosan.train.trainer import resolve_device

    if args.n < 2:
        raise KuosanError("--n must be at least 2")
    budgets = _int_list(args.sweep_steps, "--sweep-steps") if args.sweep_steps else None
    names = [n.strip() for n in args.samplers.split(",")] if args.samplers else samplers.available()
    unknown = [n for n in names if n not in samplers.available()]
    if unknown:
        raise KuosanError(f"--samplers: unknown sampler {unknown[0]!r}; available: {', '.join(samplers.available())}")
    denoiser = load(args.model, device=resolve_device(args.device))
    data = denoiser.config.data
    if (data.size, data.channels) != (28, 1):
        raise KuosanError(f"{args.model}: kuosan eval scores 28×28 gray digit models with its digit classifier; "
                          f"this model makes {data.size}×{data.size}×{data.channels} images, and kuosan has no "
                          "feature network for them (it never downloads one)")
    classifier = load_classifier()
    classes = len(data.class_names)
    labels = torch.arange(args.n) % classes if classes else None

    def run(sampler: str, steps: int | None, nfe: int | None):
        images = generate(denoiser, args.n, sampler=sampler, steps=steps, nfe=nfe, seed=args.seed, labels=labels,
                          guidance=args.guidance, batch_size=args.batch_size, progress=True)
        return score_digits(images.cpu(), labels, classifier)

    acc_head = " | class accuracy" if classes else ""
    accuracy = classifier.card.get("held_out_accuracy", 0)
    print(f"evaluator: kuosan digit classifier (held-out accuracy {accuracy:.4f}); the yardsticks are two "
          "disjoint halves of the held-out digits against each other")
    print("| sampler | NFE | FD (n vs 2000 real) | FD (≤1000 vs 1000) | FD real-vs-real | KID | KID real-vs-real"
          f"{acc_head} |")
    print("|---|---|---|---|---|---|---|" + ("---|" if classes else ""))
    jobs = [(s, None, b) for s in names for b in budgets] if budgets else \
        [(args.sampler, None if args.nfe else args.steps, args.nfe)]
    for sampler, steps, nfe in jobs:
        sc = run(sampler, steps, nfe)
        info = samplers.info(sampler)
        calls = info.calls(info.steps_for(nfe) if nfe else steps)
        acc = f" | {sc.accuracy:.4f}" if sc.accuracy is not None else ""
        print(f"| {sampler} | {calls} | {sc.fd:.3f} | {sc.fd_half:.3f} | {sc.fd_reference:.3f} | {sc.kid:.5f} | "
              f"{sc.kid_reference:.5f}{acc} |", flush=True)


def cmd_demo(args) -> None:
    from kuosan.tasks.demo import run_demo

    out = check_output_folder(args.out)
    page = run_demo(out, quick=args.quick, log=lambda text: print(text, file=sys.stderr))
    print(f"kuosan: demo written; open {page.resolve()}")


def cmd_train(args) -> None:
    from dataclasses import replace

    from kuosan import __version__ as version
    from kuosan.checkpoint import checkpoint_folders
    from kuosan.config import DataConfig, RunConfig, TrainConfig
    from kuosan.data.folder import open_dataset
    from kuosan.nets.unet import count_parameters, preset
    from kuosan.train.trainer import distributed_from_env, train

    out = check_output_folder(args.out)
    resuming = args.resume == "auto" and bool(checkpoint_folders(out))
    builtin = args.data.startswith("builtin:")
    dataset = open_dataset(args.data, args.size, args.channels, class_labels=args.class_cond,
                           random_crop=args.random_crop)
    data = DataConfig(source=args.data, size=dataset.size, channels=dataset.channels,
                      class_names=tuple(dataset.class_names),
                      hflip=args.hflip if args.hflip is not None else not builtin, random_crop=args.random_crop)
    net = preset(args.preset, channels=data.channels, num_classes=len(data.class_names), dropout=args.dropout)
    tc = replace(TrainConfig(), steps=args.steps, batch=args.batch, lr=args.lr, warmup_steps=args.warmup,
                 cooldown_steps=args.cooldown, ema_halflife_kimg=args.ema_halflife, grad_clip=args.grad_clip,
                 label_dropout=args.label_dropout,
                 seed=args.seed, log_every=args.log_every, sample_every=args.sample_every,
                 checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep, workers=args.workers,
                 max_minutes=args.minutes, deterministic=args.deterministic,
                 gradient_checkpointing=args.gradient_checkpointing)
    config = RunConfig(net=net, data=data, train=tc, preset=args.preset, kuosan_version=version)
    from kuosan.nets.unet import UNet

    main_process = distributed_from_env().main
    if main_process and not resuming:
        print(f"kuosan: training {args.preset} UNet ({count_parameters(UNet(net)) / 1e6:.2f}M parameters) on "
              f"{args.data}: {len(dataset)} images, {data.size}×{data.size}, {data.channels} channel(s)"
              + (f", {len(data.class_names)} classes" if data.class_names else ""), file=sys.stderr)
    last = train(config, out, device=args.device, progress=not args.no_progress, dataset=dataset,
                 resume=args.resume)
    if main_process:
        print(f"kuosan: done; model in {last}")


def cmd_sample(args) -> None:
    import torch

    from kuosan.checkpoint import load
    from kuosan.tasks.generate import generate
    from kuosan.train.trainer import resolve_device

    out = args.out
    kind = "npz" if out.endswith(".npz") else "dir" if out.endswith(("/", "\\")) or Path(out).is_dir() else "png"
    if kind == "png" and not out.lower().endswith(".png"):
        raise KuosanError(f"--out {out}: use a .png grid, a folder ending in /, or a .npz file")
    if kind == "dir":
        check_output_folder(out)
    else:
        check_output_file(out, "--out")
    denoiser = load(args.model, device=resolve_device(args.device))
    classes = list(denoiser.config.data.class_names)
    labels = None
    if args.label is not None:
        labels = torch.full((args.n,), args.label)
    elif classes:
        labels = torch.arange(args.n) % len(classes)
    sigmas = _sigma_ladder(args.sigmas) if args.sigmas else None
    if args.tune_ladder:
        from kuosan import samplers
        from kuosan.tasks.generate import tune_ladder

        if sigmas is not None:
            raise KuosanError("give either --sigmas or --tune-ladder, not both")
        nfe = args.nfe or samplers.info(args.sampler).calls(args.steps)
        tune_labels = None
        if classes:
            tune_labels = (torch.full((args.tune_ladder,), args.label) if args.label is not None
                           else torch.arange(args.tune_ladder) % len(classes))
        sigmas = tune_ladder(denoiser, args.tune_ladder, sampler=args.sampler, nfe=nfe, seed=args.seed,
                             labels=tune_labels, guidance=args.guidance, progress=True)
        print("kuosan: tuned σ ladder (reuse with --sigmas): " + ",".join(f"{float(v):.5g}" for v in sigmas),
              file=sys.stderr)
    images = generate(denoiser, args.n, sampler=args.sampler, steps=args.steps, nfe=args.nfe, seed=args.seed,
                      labels=labels, guidance=args.guidance, batch_size=args.batch_size, sigmas=sigmas,
                      mean_start=args.mean_start, progress=True)
    nrow = args.nrow or (len(classes) if classes and args.label is None else None)
    written = write_samples(images, labels, out, kind, nrow=nrow, scale=args.scale)
    print(f"kuosan: wrote {written}")


def write_samples(images, labels, out: str, kind: str, nrow: int | None, scale: int) -> str:
    """Write a grid (png), arrays (npz) or one PNG per image (dir); returns what was written."""
    import numpy as np

    from kuosan.data.io import atomic_write, save_grid, save_image, tensor_to_uint8

    if kind == "png":
        return str(save_grid(images, out, nrow=nrow, scale=scale))
    if kind == "npz":
        arrays = {"images": tensor_to_uint8(images),
                  "labels": (labels.numpy() if labels is not None else np.full(len(images), -1)).astype(np.int64)}
        # The temporary name ends in .npz too, so numpy does not append another suffix.
        return str(atomic_write(out, lambda p: np.savez_compressed(p, **arrays)))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        name = f"{k:05d}" + (f"_label{int(labels[k])}" if labels is not None else "") + ".png"
        save_image(image, folder / name)
    return f"{len(images)} images to {folder}/"


def cmd_info(args) -> None:
    import json

    from kuosan.checkpoint import STATE_FILE, checkpoint_folders, load, resolve_model
    from kuosan.nets.unet import count_parameters

    folder = resolve_model(args.model)
    denoiser = load(folder)
    cfg = denoiser.config
    lines = [
        f"model:        {folder}",
        f"kuosan:       {cfg.kuosan_version or 'unknown'} (config format {cfg.format})",
        f"network:      {cfg.preset or 'custom'} UNet, {count_parameters(denoiser) / 1e6:.2f}M parameters, "
        f"channel_mult {list(cfg.net.channel_mult)} × {cfg.net.base_channels}, attention at levels "
        f"{list(cfg.net.attention_levels)}",
        f"denoiser:     {cfg.denoiser.kind}, σ_data {cfg.denoiser.sigma_data}, trained for σ ∈ "
        f"[{cfg.denoiser.sigma_min}, {cfg.denoiser.sigma_max}] (model units)",
        f"data:         {cfg.data.source}, {cfg.data.size}×{cfg.data.size}, {cfg.data.channels} channel(s)",
        f"classes:      {', '.join(cfg.data.class_names) if cfg.data.class_names else 'none (unconditional)'}",
        f"training:     batch {cfg.train.batch}, lr {cfg.train.lr}, until {cfg.train.steps:,} steps"
        + (f" or {cfg.train.max_minutes:g} minutes, whichever came first" if cfg.train.max_minutes else ""),
    ]
    if cfg.data.channels == 1:
        from kuosan.tasks.restore import colour_companion

        companion = colour_companion(args.model)
        lines.append("colour:       " + (f"colour images are restored by {companion}" if companion else
                                         "colour images are restored in an opponent colour space, one plane at "
                                         "a time (kuosan.diffusion.color)"))
    if (folder / STATE_FILE).is_file():
        import torch

        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        lines.append(f"checkpoint:   step {state.get('step')}")
    run = folder.parent.parent
    ckpts = checkpoint_folders(run)
    if ckpts:
        lines.append(f"checkpoints:  {', '.join(p.name for p in ckpts)}")
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if rows:
            last = rows[-1]
            lines.append(f"last log:     step {last['step']}, loss {last['loss']:.4f}, "
                         f"{last['images_per_s']:.0f} images/s, {last['elapsed_s'] / 60:.1f} min")
    print("\n".join(lines))


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "info": cmd_info, "denoise": cmd_denoise,
            "upscale": cmd_upscale, "deblur": cmd_deblur, "inpaint": cmd_inpaint, "eval": cmd_eval,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:            # --help (0) or a one-line argument error (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        COMMANDS[args.command](args)
    except KuosanError as e:
        if args.debug:
            raise
        print(f"kuosan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kuosan: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"kuosan: error: {e}", file=sys.stderr)
        return 2
    return 0
