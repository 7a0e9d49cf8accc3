"""Training loop: AdamW, LR warm-up, EMA, gradient clipping, bf16 autocast on CUDA, progress, logs,
sample grids and checkpoints.

Data order is a pure function of (seed, position in the stream): position k draws image
perm(seed, epoch=k // N)[k % N] with its own augmentation RNG, so a run is reproducible and a resumed run
continues the same stream.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from kuosan.checkpoint import CHECKPOINTS_DIR, build_denoiser, save_checkpoint
from kuosan.config import RunConfig
from kuosan.data.folder import open_dataset
from kuosan.data.io import atomic_write, save_grid
from kuosan.diffusion.guidance import NULL_LABEL
from kuosan.diffusion.ladders import karras_sigmas
from kuosan.diffusion.loss import EDMLoss
from kuosan.errors import KuosanError
from kuosan.samplers import heun
from kuosan.train.ema import ema_beta, update_ema


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KuosanError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise KuosanError(f"--device {name}: use auto, cpu or cuda")
    return torch.device(name)


class DataStream(torch.utils.data.Dataset):
    """Map-style view of an infinite, seeded stream of training examples (see module docstring)."""

    def __init__(self, dataset, seed: int, hflip: bool):
        self.dataset, self.seed, self.hflip = dataset, seed, hflip
        self._epoch, self._perm = -1, None

    def index_at(self, position: int) -> int:
        n = len(self.dataset)
        epoch = position // n
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._epoch = epoch
        return int(self._perm[position % n])

    def __getitem__(self, position: int):
        rng = np.random.default_rng([self.seed, 1 << 20, position])
        example = self.dataset.get(self.index_at(position), rng)
        image = example.image
        if self.hflip and rng.random() < 0.5:
            image = image.flip(-1)
        return image, example.label


class _StepBatches(torch.utils.data.Sampler):
    def __init__(self, start_step: int, end_step: int, batch: int):
        self.start, self.end, self.batch = start_step, end_step, batch

    def __iter__(self):
        for step in range(self.start, self.end):
            yield list(range(step * self.batch, (step + 1) * self.batch))

    def __len__(self) -> int:
        return self.end - self.start


def preview_labels(config: RunConfig, n: int) -> torch.Tensor | None:
    k = len(config.data.class_names)
    return torch.arange(n) % k if k else None


@torch.no_grad()
def preview_grid(denoiser, config: RunConfig, path: Path, device: torch.device, n: int = 64,
                 steps: int = 18) -> None:
    """A fixed-seed grid (Heun, EDM's 18 steps) to watch training progress; one column per class."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    size, ch = config.data.size, config.data.channels
    k = len(config.data.class_names)
    if k:
        n = k * max(1, n // k)
    sigmas = karras_sigmas(steps, config.denoiser.sigma_min, config.denoiser.sigma_max).to(device)
    x = torch.randn(n, ch, size, size, generator=g).to(device) * sigmas[0]
    labels = preview_labels(config, n)
    cond = {"class_labels": labels.to(device)} if labels is not None else {}
    out = heun(denoiser, x, sigmas, **cond)
    save_grid(out, path, nrow=k or None)


def train(config: RunConfig, out: str | Path, device: str = "auto", progress: bool = True,
          dataset=None, init: dict | None = None) -> Path:
    """Train a model as ``config`` says and write the run folder ``out``; returns the last checkpoint.

    ``dataset`` may be given when the caller already opened ``config.data`` (saves a second folder scan).
    ``init`` is a state dict to start from (fine-tuning; the optimizer and EMA start afresh from it).
    """
    out = Path(out)
    tc = config.train
    if tc.steps < 1 or tc.batch < 1 or tc.lr <= 0:
        raise KuosanError("steps, batch and lr must be positive")
    dev = resolve_device(device)
    torch.manual_seed(tc.seed)
    if dataset is None:
        dataset = open_dataset(config.data.source, config.data.size, config.data.channels,
                               class_labels=bool(config.data.class_names), random_crop=config.data.random_crop)
    if list(config.data.class_names) != list(dataset.class_names):
        config = replace(config, data=replace(config.data, class_names=tuple(dataset.class_names)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)

    denoiser = build_denoiser(config)
    if init is not None:
        denoiser.load_state_dict(init)
    denoiser = denoiser.to(dev)
    ema = copy.deepcopy(denoiser).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=tc.lr, betas=(0.9, 0.999),
                                  weight_decay=tc.weight_decay)
    loss_fn = EDMLoss(tc.p_mean, tc.p_std, config.denoiser.sigma_data)
    noise_gen = torch.Generator(device=dev).manual_seed(tc.seed + 1)
    label_gen = torch.Generator(device="cpu").manual_seed(tc.seed + 2)
    conditional = bool(config.data.class_names)

    stream = DataStream(dataset, tc.seed, config.data.hflip)
    loader = torch.utils.data.DataLoader(stream, batch_sampler=_StepBatches(0, tc.steps, tc.batch),
                                         num_workers=tc.workers, persistent_workers=False)
    use_bf16 = dev.type == "cuda"
    if use_bf16:
        torch.backends.cudnn.benchmark = True   # fixed shapes: let cuDNN pick the fastest kernels
    log_path = out / "metrics.jsonl"
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(config.to_dict(), indent=2) + "\n"))

    from tqdm.auto import tqdm

    bar = tqdm(total=tc.steps, disable=not progress, unit="step", dynamic_ncols=True)
    start = last_time = time.perf_counter()
    images_since, loss_sum, loss_count = 0, 0.0, 0
    skipped, bad_in_a_row, grad_norm = 0, 0, torch.tensor(0.0)
    last_ckpt = None
    denoiser.train()
    with open(log_path, "a") as log:
        for step, (images, labels) in enumerate(loader, start=1):
            images = images.to(dev, non_blocking=True)
            cond = {}
            if conditional:
                drop = torch.rand(labels.shape, generator=label_gen) < tc.label_dropout
                cond["class_labels"] = torch.where(drop, NULL_LABEL, labels).to(dev)
            for group in optimizer.param_groups:
                group["lr"] = tc.lr * min(1.0, step / max(1, tc.warmup_steps))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(denoiser, images, generator=noise_gen, **cond).mean()
            optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), tc.grad_clip or math.inf)
                finite = bool(torch.isfinite(grad_norm))
            if finite:
                optimizer.step()
                update_ema(ema, denoiser,
                           ema_beta(tc.batch, step * tc.batch, tc.ema_halflife_kimg, tc.ema_rampup))
                bad_in_a_row = 0
            else:
                # A non-finite loss or gradient (bad data, overflow): skip the update, keep the weights.
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                bad_in_a_row += 1
                bar.write(f"kuosan: warning: step {step}: non-finite loss or gradient, update skipped",
                          file=sys.stderr)
                if bad_in_a_row >= tc.max_bad_steps:
                    raise KuosanError(f"training stopped at step {step}: {bad_in_a_row} non-finite losses or "
                                      "gradients in a row (check the data for NaN/inf, or lower --lr)")

            out_of_time = tc.max_minutes > 0 and time.perf_counter() - start >= tc.max_minutes * 60
            last_step = step == tc.steps or out_of_time
            if finite:
                loss_sum += float(loss.detach())
                loss_count += 1
            images_since += images.shape[0]
            bar.update(1)
            if step % tc.log_every == 0 or last_step:
                now = time.perf_counter()
                rate = images_since / max(now - last_time, 1e-9)
                record = {"step": step, "loss": loss_sum / loss_count if loss_count else None,
                          "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                          "images_per_s": rate, "elapsed_s": now - start, "skipped_steps": skipped}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss'] or float('nan'):.4f}", img_s=f"{rate:.0f}")
                last_time, images_since, loss_sum, loss_count = now, 0, 0.0, 0
            paused_at = time.perf_counter()  # previews and checkpoints are left out of images/s
            if step % tc.sample_every == 0 or last_step:
                preview_grid(ema, config, out / "samples" / f"step-{step:07d}.png", dev)
            if step % tc.checkpoint_every == 0 or last_step:
                if not all(bool(torch.isfinite(t).all()) for t in [*ema.state_dict().values(),
                                                                    *denoiser.state_dict().values()]
                           if t.is_floating_point()):
                    raise KuosanError(f"step {step}: the weights hold NaN or inf; no checkpoint was written"
                                      + (f" (the last good one is {last_ckpt})" if last_ckpt else ""))
                last_ckpt = save_checkpoint(
                    out / CHECKPOINTS_DIR / f"step-{step:07d}", config, ema,
                    {"step": step, "model": denoiser.state_dict(), "optimizer": optimizer.state_dict(),
                     "noise_rng": noise_gen.get_state(), "label_rng": label_gen.get_state()})
                _prune(out / CHECKPOINTS_DIR, tc.keep_checkpoints)
            last_time += time.perf_counter() - paused_at
            if out_of_time:
                break
    bar.close()
    return last_ckpt


def _prune(root: Path, keep: int) -> None:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in folders[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
