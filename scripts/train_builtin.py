"""Reproduce the models shipped in the package (``builtin:photo`` gray + colour, ``builtin:digits``).

    python scripts/train_builtin.py photo --channels 3 --out runs/photo-rgb --minutes 7
    python scripts/train_builtin.py photo --channels 1 --out runs/photo-gray --minutes 7
    python scripts/train_builtin.py digits --out runs/digits --minutes 7
    python scripts/train_builtin.py classifier --out src/kuosan/models/digit-classifier
    python scripts/train_builtin.py export runs/photo-rgb src/kuosan/models/photo-rgb --card '{"data": "..."}'

Training uses kuosan's own trainer; only the recipe (network, data, schedule) is fixed here. The photo
set needs scikit-image and scikit-learn (``pip install kuosan[bench]``). A GPU is used when present; the
same commands run on a CPU, only slower (the model cards say what hardware made the shipped weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np

from kuosan import __version__
from kuosan.checkpoint import export_model
from kuosan.config import DataConfig, RunConfig, TrainConfig
from kuosan.data.folder import open_dataset
from kuosan.data.photos import RandomCrops, training_photos
from kuosan.nets.unet import UNetConfig, preset
from kuosan.train.trainer import train

DIGITS_NET = UNetConfig(channels=1, base_channels=48, channel_mult=(1, 2, 2), num_res_blocks=2,
                        attention_levels=(2,), num_classes=10)


def photo_recipe(channels: int, minutes: float, batch: int, size: int, photos: str | None = None,
                 area_cap: int | None = None, gray_mix: bool = False, min_contrast: float = 1.0,
                 min_scale: float = 0.5, chroma_mix: float = 0.0, chroma_guide: bool = False):
    if gray_mix and channels != 1:
        raise SystemExit("train_builtin.py: --gray-mix makes gray crops; use it with --channels 1")
    if chroma_mix and not gray_mix:
        raise SystemExit("train_builtin.py: --chroma-mix is a kind of --gray-mix crop; give both")
    if chroma_guide and not chroma_mix:
        raise SystemExit("train_builtin.py: --chroma-guide guides the --chroma-mix crops; give both")
    if photos:   # the same photos saved by `save-photos`, for machines without scikit-image's data
        with np.load(photos) as f:
            images = [f[k] for k in sorted(f.files)]
    else:
        images = training_photos(channels, keep_colour=gray_mix)
    dataset = RandomCrops(images, size=size, area_cap=area_cap, gray_mix=gray_mix, min_contrast=min_contrast,
                          min_scale=min_scale, chroma_mix=chroma_mix, chroma_guide=chroma_guide)
    config = RunConfig(
        net=preset("photo", channels=channels, guide_channels=int(chroma_guide)),
        data=DataConfig(source="photos: scikit-image + scikit-learn (kuosan.data.photos)", size=size,
                        channels=channels),
        train=replace(TrainConfig(), steps=1_000_000, batch=batch, lr=5e-4, warmup_steps=500,
                      ema_halflife_kimg=50, sample_every=4000, checkpoint_every=2000, log_every=100,
                      max_minutes=minutes, workers=6),
        preset="photo", kuosan_version=__version__)
    return config, dataset


def digits_recipe(minutes: float, batch: int):
    dataset = open_dataset("builtin:digits-train", class_labels=True)
    config = RunConfig(
        net=DIGITS_NET,
        data=DataConfig(source="builtin:digits-train", size=28, channels=1, class_names=tuple(dataset.class_names)),
        train=replace(TrainConfig(), steps=1_000_000, batch=batch, lr=1e-3, warmup_steps=500,
                      ema_halflife_kimg=50, sample_every=4000, checkpoint_every=2000, log_every=100,
                      max_minutes=minutes, workers=2),
        preset="", kuosan_version=__version__)
    return config, dataset


def train_classifier(out: str, epochs: int, seed: int = 0) -> None:
    """The evaluator's digit classifier: trained on builtin:digits-train only (random ±2 px shifts), tested
    on the 2,000 held-out digits; weights + card.json (with the accuracy) to ``out``."""
    import time
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from kuosan.data.folder import digits_split
    from kuosan.nets.classifier import DigitClassifier
    from kuosan.tasks.evaluate import features_and_predictions

    torch.manual_seed(seed)
    start = time.perf_counter()
    images, labels = digits_split("train")
    x = torch.from_numpy(images).float()[:, None] / 127.5 - 1
    y = torch.from_numpy(labels).long()
    test_images, test_labels = digits_split("test")
    xt = torch.from_numpy(test_images).float()[:, None] / 127.5 - 1
    net = DigitClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps_per_epoch = len(x) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(steps_per_epoch):
            idx = perm[i * 64:(i + 1) * 64]
            shift = torch.randint(-2, 3, (2,))
            batch = torch.roll(F.pad(x[idx], (2, 2, 2, 2), value=-1), tuple(shift.tolist()), (2, 3))[..., 2:-2, 2:-2]
            loss = F.cross_entropy(net(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        _, pred = features_and_predictions(net, xt)
        acc = float((pred == torch.from_numpy(test_labels)).float().mean())
        print(f"epoch {epoch + 1}: loss {float(loss):.4f}, held-out accuracy {acc:.4f}", file=sys.stderr)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / "model.safetensors")
    card = {"kind": "digit-classifier", "train": "builtin:digits-train (8,000)",
            "test": "builtin:digits-test (2,000)", "held_out_accuracy": acc, "epochs": epochs, "seed": seed,
            "seconds": round(time.perf_counter() - start, 1), "kuosan_version": __version__}
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{folder}: held-out accuracy {acc:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    photo = sub.add_parser("photo")
    photo.add_argument("--channels", type=int, choices=(1, 3), required=True)
    photo.add_argument("--size", type=int, default=96, help="crop size")
    photo.add_argument("--batch", type=int, default=96)
    photo.add_argument("--photos", help="an .npz written by save-photos, instead of scikit-image/-learn")
    photo.add_argument("--area-cap", type=int,
                       help="draw photos ∝ their area up to this many pixels (the shipped prior: no cap, so retina "
                            "gave a third of the gray crops and 45%% of the colour ones)")
    photo.add_argument("--gray-mix", action="store_true",
                       help="gray prior: colour photos rendered with random channel weights per crop, not luma")
    photo.add_argument("--min-contrast", type=float, default=1.0,
                       help="scale each crop's contrast by a gain drawn in [this, 1] (1: off)")
    photo.add_argument("--chroma-mix", type=float, default=0.0,
                       help="with --gray-mix: this fraction of the colour crops as chroma planes (zero-sum mixes), "
                            "the planes the gray prior denoises in colour photos")
    photo.add_argument("--chroma-guide", action="store_true",
                       help="with --chroma-mix: a prior with a guide plane, each chroma crop denoised beside its "
                            "own denoised luminance (as OpponentColorDenoiser runs it)")
    photo.add_argument("--guide-lr-mult", type=float, default=10.0,
                       help="with --chroma-guide: LR × this for the guide's convolution, which starts at zero")
    photo.add_argument("--min-scale", type=float, default=0.5, help="crops shrunk by a factor drawn in [this, 1]")
    for p in (photo, sub.add_parser("digits")):
        p.add_argument("--out", required=True)
        p.add_argument("--minutes", type=float, required=True)
        p.add_argument("--device", default="auto")
        p.add_argument("--workers", type=int)
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--init", help="a model folder to start from (fine-tuning; a gray model may start a "
                                      "colour one, see inflate_to_colour)")
        p.add_argument("--lr", type=float, help="learning rate instead of the recipe's")
        p.add_argument("--p-mean", type=float, help="ln σ ~ N(P_mean, P_std²) instead of the recipe's -1.2")
        p.add_argument("--p-std", type=float, help="instead of the recipe's 1.2")
        p.add_argument("--ema-halflife", type=float, help="EMA half-life in thousands of images (recipe: 50)")
        p.add_argument("--warmup", type=int, help="LR warm-up steps (recipe: 500)")
        p.add_argument("--steps", type=int, help="optimiser steps (recipe: no limit but --minutes)")
        p.add_argument("--cooldown", type=int,
                       help="LR falls linearly to zero over the last this many of --steps (recipe: 0, constant)")
        p.add_argument("--keep", type=int, help="checkpoints kept (recipe: 3)")
        p.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute each network block in the backward pass (less memory, more time)")
        p.add_argument("--ema-rampup", type=float,
                       help="EMA half-life ≤ this × images seen (recipe: 0.1; 0 with --init, whose weights are "
                            "not a random start for the average to forget)")
    sub.choices["digits"].add_argument("--batch", type=int, default=128)
    p = sub.add_parser("classifier", help="the evaluator's digit classifier")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p = sub.add_parser("save-photos")
    p.add_argument("--channels", type=int, choices=(1, 3), required=True)
    p.add_argument("out")
    p = sub.add_parser("export")
    p.add_argument("run")
    p.add_argument("dest")
    p.add_argument("--card", default="{}", help="JSON object stored as card.json")
    args = parser.parse_args(argv)

    if args.what == "export":
        print(export_model(args.run, args.dest, card=json.loads(args.card) or None))
        return
    if args.what == "classifier":
        train_classifier(args.out, args.epochs)
        return
    if args.what == "save-photos":
        photos = training_photos(args.channels)
        np.savez_compressed(args.out, **{f"{k:03d}": p for k, p in enumerate(photos)})
        print(f"{args.out}: {len(photos)} photos")
        return
    if args.what == "photo":
        config, dataset = photo_recipe(args.channels, args.minutes, args.batch, args.size, args.photos,
                                       args.area_cap, args.gray_mix, args.min_contrast, args.min_scale,
                                       args.chroma_mix, args.chroma_guide)
    else:
        config, dataset = digits_recipe(args.minutes, args.batch)
    guide_lr_mult = args.guide_lr_mult if args.what == "photo" and args.chroma_guide else None
    overrides = {"workers": args.workers, "guide_lr_mult": guide_lr_mult, "lr": args.lr, "p_mean": args.p_mean,
                 "p_std": args.p_std,
                 "ema_halflife_kimg": args.ema_halflife, "warmup_steps": args.warmup, "steps": args.steps,
                 "cooldown_steps": args.cooldown, "keep_checkpoints": args.keep,
                 "gradient_checkpointing": args.gradient_checkpointing or None,
                 "ema_rampup": args.ema_rampup if args.ema_rampup is not None else 0.0 if args.init else None}
    config = replace(config, train=replace(config.train, **{k: v for k, v in overrides.items() if v is not None}))
    init = None
    if args.init:
        from safetensors.torch import load_file

        from kuosan.checkpoint import WEIGHTS_FILE, build_denoiser, resolve_model
        from kuosan.train.warmstart import add_guide_inputs, inflate_to_colour

        init = load_file(resolve_model(args.init) / WEIGHTS_FILE)
        target = build_denoiser(config).state_dict()
        if config.net.guide_channels:
            init = add_guide_inputs(init, target)
        init = inflate_to_colour(init, target)
    print(f"training {args.what}: {json.dumps(config.to_dict()['net'])}", file=sys.stderr)
    train(config, args.out, device=args.device, progress=not args.no_progress, dataset=dataset, init=init)


if __name__ == "__main__":
    main()
