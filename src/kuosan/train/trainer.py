"""Training loop: AdamW, LR warm-up, EMA, gradient clipping, bf16 autocast on CUDA and on CPUs with native bf16
(there with channels-last weights: ~3× the fp32 speed), progress, logs, sample grids and checkpoints.

Data order is a pure function of (seed, position in the stream): position k draws image
perm(seed, epoch=k // N)[k % N] with its own augmentation RNG, so a run is reproducible and a resumed run
continues the same stream.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kuosan.checkpoint import (
    CHECKPOINTS_DIR,
    ResumePoint,
    build_denoiser,
    checkpoint_folders,
    clean_partial,
    latest_resumable,
    native_bf16,
    prune_checkpoints,
    read_resume_point,
    save_checkpoint,
)
from kuosan.config import RunConfig, TrainConfig
from kuosan.data.folder import open_dataset
from kuosan.data.io import atomic_write, save_grid
from kuosan.diffusion.color import luminance_guide
from kuosan.diffusion.guidance import NULL_LABEL
from kuosan.diffusion.ladders import karras_sigmas
from kuosan.diffusion.loss import EDMLoss
from kuosan.errors import KuosanError
from kuosan.nets.unet import set_gradient_checkpointing
from kuosan.samplers import heun
from kuosan.train.ema import ema_beta, update_ema


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto, cpu, cuda or cuda:N; under torchrun plain cuda means this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KuosanError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
    if name == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu" and not name.startswith("cuda:"):
        raise KuosanError(f"--device {name}: use auto, cpu or cuda")
    try:
        return torch.device(name)
    except RuntimeError:
        raise KuosanError(f"--device {name}: use auto, cpu, cuda or cuda:N") from None


class DataStream(torch.utils.data.Dataset):
    """Map-style view of an infinite, seeded stream of training examples (see module docstring)."""

    def __init__(self, dataset, seed: int, hflip: bool, guide_channels: int = 0):
        self.dataset, self.seed, self.hflip, self.guide_channels = dataset, seed, hflip, guide_channels
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
        image, guide = example.image, example.guide
        has_guide = guide is not None and self.guide_channels > 0
        if not has_guide:   # a batch stacks guides: examples without one carry zeros ([0, H, W] when unused)
            guide = image.new_zeros((self.guide_channels, *image.shape[1:]))
        if self.hflip and rng.random() < 0.5:
            image, guide = image.flip(-1), guide.flip(-1)
        return image, example.label, example.failed, guide, has_guide


class _StepBatches(torch.utils.data.Sampler):
    """The distributed sampler: step k's global batch is stream positions [k·B, (k+1)·B); a rank takes its
    ``share`` of them."""

    def __init__(self, start_step: int, end_step: int, batch: int, share: slice = slice(None)):
        self.start, self.end, self.batch, self.share = start_step, end_step, batch, share

    def __iter__(self):
        for step in range(self.start, self.end):
            yield list(range(step * self.batch, (step + 1) * self.batch))[self.share]

    def __len__(self) -> int:
        return self.end - self.start


def preview_labels(config: RunConfig, n: int) -> torch.Tensor | None:
    k = len(config.data.class_names)
    return torch.arange(n) % k if k else None


def preview_count(size: int) -> int:
    """Images in a preview grid at ``size``² pixels: 64 up to 32², then a square number (16, 4, 1) so that a
    grid costs about as much as 64 images of 32²; at 128² on a CPU a grid of 64 took longer than 100 steps."""
    side = 8
    while side > 1 and side * side * size * size > 64 * 32 * 32:
        side //= 2
    return side * side


@torch.no_grad()
def preview_grid(denoiser, config: RunConfig, path: Path, device: torch.device, n: int | None = None,
                 steps: int = 18) -> None:
    """A fixed-seed grid (Heun, EDM's 18 steps) to watch training progress; one column per class;
    ``preview_count`` images unless ``n`` is given."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    size, ch = config.data.size, config.data.channels
    n = preview_count(size) if n is None else n
    k = len(config.data.class_names)
    if k:
        n = k * max(1, n // k)
    sigmas = karras_sigmas(steps, config.denoiser.sigma_min, config.denoiser.sigma_max).to(device)
    x = torch.randn(n, ch, size, size, generator=g).to(device) * sigmas[0]
    labels = preview_labels(config, n)
    cond = {"class_labels": labels.to(device)} if labels is not None else {}
    out = heun(denoiser, x, sigmas, **cond)
    save_grid(out, path, nrow=k or None)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, batch: int) -> slice:
        """This rank's part of a global batch: consecutive slices, so together the ranks see exactly the
        batch a single process would."""
        per = batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def distributed_from_env() -> Distributed:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise KuosanError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise KuosanError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return Distributed(rank, world, local)


# Training settings that may differ when a run is resumed: they change how long it runs and what it writes,
# not the result of any step already taken.
RESUME_MAY_CHANGE = frozenset({"steps", "max_minutes", "log_every", "sample_every", "checkpoint_every",
                               "keep_checkpoints", "workers", "max_bad_steps", "deterministic",
                               "gradient_checkpointing"})


def check_resumable(saved: RunConfig, new: RunConfig, run: Path) -> None:
    """Refuse to resume ``run`` with settings that would change the training it already did."""
    old_d, new_d = saved.to_dict(), new.to_dict()
    for section in ("net", "denoiser", "data", "train"):
        for key, value in old_d[section].items():
            if section == "train" and key in RESUME_MAY_CHANGE:
                continue
            if new_d[section].get(key) != value:
                raise KuosanError(f"{run}: cannot resume with {section}.{key}={new_d[section].get(key)!r}; the run "
                                  f"was started with {value!r} (use the same settings, or a new --out folder)")


def train(config: RunConfig, out: str | Path, device: str = "auto", progress: bool = True,
          dataset=None, init: dict | None = None, resume: str = "auto") -> Path:
    """Train a model as ``config`` says and write the run folder ``out``; returns the last checkpoint.

    ``resume="auto"`` continues a run folder that already has checkpoints from its newest complete one
    (damaged ones are skipped with a warning); weights, EMA, optimizer, step, RNG states and the data stream
    are restored, so the continued run takes exactly the steps the uninterrupted one would. ``"never"``
    refuses a folder that holds checkpoints.
    ``dataset`` may be given when the caller already opened ``config.data`` (saves a second folder scan).
    ``init`` is a state dict to start from (fine-tuning; the optimizer and EMA start afresh from it).
    Under torchrun (WORLD_SIZE > 1) each process trains its share of every global batch with
    DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0 logs and writes checkpoints.
    """
    out = Path(out)
    tc = config.train
    if tc.steps < 1 or tc.batch < 1 or tc.lr <= 0:
        raise KuosanError("steps, batch and lr must be positive")
    if resume not in ("auto", "never"):
        raise KuosanError(f"resume={resume!r}: use auto or never")
    dist = distributed_from_env()
    if tc.batch % dist.world:
        raise KuosanError(f"--batch {tc.batch} (the global batch) must be a multiple of the {dist.world} "
                          "processes")
    dev = resolve_device(device, dist.local_rank)
    owns_group = dist.world > 1 and not torch.distributed.is_initialized()
    if owns_group:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    if tc.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        return _train(config, out, dev, dist, progress, dataset, init, resume)
    finally:
        torch.use_deterministic_algorithms(previous_determinism)
        if owns_group:
            torch.distributed.destroy_process_group()


def _warn(message: str) -> None:
    print(f"kuosan: warning: {message}", file=sys.stderr)


def _find_resume_point(out: Path, dist: Distributed) -> ResumePoint | None:
    """Rank 0 cleans what a crash left and picks the newest good checkpoint; every rank loads that one."""
    found = None
    if dist.main:
        removed = clean_partial(out)
        if removed:
            _warn(f"removed {removed} half-written checkpoint folder(s) left by an interrupted run")
        found = latest_resumable(out, warn=_warn)
    if dist.world > 1:
        name = [found.folder.name if found else None]
        torch.distributed.broadcast_object_list(name, src=0)
        if not dist.main:
            found = read_resume_point(out / CHECKPOINTS_DIR / name[0]) if name[0] is not None else None
    return found


def _train(config: RunConfig, out: Path, dev: torch.device, dist: Distributed, progress: bool, dataset, init,
           resume: str) -> Path:
    tc = config.train
    torch.manual_seed(tc.seed)
    if dataset is None:
        dataset = open_dataset(config.data.source, config.data.size, config.data.channels,
                               class_labels=bool(config.data.class_names), random_crop=config.data.random_crop)
    if list(config.data.class_names) != list(dataset.class_names):
        config = replace(config, data=replace(config.data, class_names=tuple(dataset.class_names)))
    summary = getattr(dataset, "summary", None)
    if dist.main and summary:
        _warn(summary)

    if resume == "never" and checkpoint_folders(out):
        raise KuosanError(f"{out}: already holds a trained run; resume it or choose a new --out folder")
    resume_from = _find_resume_point(out, dist) if resume == "auto" else None
    if resume_from is None and checkpoint_folders(out):
        raise KuosanError(f"{out}: none of its checkpoints loads; move them away or choose a new --out folder")
    if resume_from is not None:
        check_resumable(resume_from.config, config, out)
    if dist.main:
        (out / "samples").mkdir(parents=True, exist_ok=True)

    denoiser = build_denoiser(config)
    if init is not None:
        denoiser.load_state_dict(init)
    denoiser = denoiser.to(dev)
    set_gradient_checkpointing(denoiser, tc.gradient_checkpointing)
    # bf16 autocast where it is fast: CUDA, and CPUs with AMX (see native_bf16), where oneDNN's
    # channels-last bf16 convolutions train the photo preset ~3× faster than fp32 (contiguous fp32 elsewhere).
    # --deterministic keeps fp32 on a CPU, where bf16 rounding would make the weights depend on how the batch
    # is split over processes.
    use_bf16 = dev.type == "cuda" or (native_bf16(dev) and not tc.deterministic)
    channels_last = dev.type == "cpu" and use_bf16
    if channels_last:
        denoiser = denoiser.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(denoiser).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(_param_groups(denoiser, tc.guide_lr_mult), lr=tc.lr, betas=(0.9, 0.999),
                                  weight_decay=tc.weight_decay)
    loss_fn = EDMLoss(tc.p_mean, tc.p_std, config.denoiser.sigma_data)
    noise_gen = torch.Generator(device=dev).manual_seed(tc.seed + 1)
    label_gen = torch.Generator(device="cpu").manual_seed(tc.seed + 2)
    conditional = bool(config.data.class_names)

    start_step, elapsed_before, skipped, bad_in_a_row = 0, 0.0, 0, 0
    if resume_from is not None:
        folder, state = resume_from.folder, resume_from.state
        denoiser.load_state_dict(state["model"])
        ema.load_state_dict(resume_from.ema)
        optimizer.load_state_dict(state["optimizer"])
        noise_gen.set_state(state["noise_rng"])
        label_gen.set_state(state["label_rng"])
        if "cpu_rng" in state:
            torch.set_rng_state(state["cpu_rng"])
        if dev.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        start_step = state["step"]
        elapsed_before = float(state.get("elapsed_s", 0.0))
        skipped, bad_in_a_row = int(state.get("skipped_steps", 0)), int(state.get("bad_in_a_row", 0))
        if start_step >= tc.steps or (tc.max_minutes > 0 and elapsed_before >= tc.max_minutes * 60):
            if dist.main:
                print(f"kuosan: {out} is already trained to step {start_step} (--steps {tc.steps}"
                      + (f", --minutes {tc.max_minutes:g}" if tc.max_minutes else "") + "); nothing to do",
                      file=sys.stderr)
            return folder
        if dist.main:
            print(f"kuosan: resuming {out} from {folder.name}", file=sys.stderr)

    model = denoiser
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            denoiser, device_ids=[dev.index] if dev.type == "cuda" else None)
    share = dist.share(tc.batch)
    guide_channels = config.net.guide_channels
    stream = DataStream(dataset, tc.seed, config.data.hflip, guide_channels)
    loader = torch.utils.data.DataLoader(stream, batch_sampler=_StepBatches(start_step, tc.steps, tc.batch, share),
                                         num_workers=tc.workers, persistent_workers=False)
    if dev.type == "cuda" and not tc.deterministic:
        torch.backends.cudnn.benchmark = True   # fixed shapes: let cuDNN pick the fastest kernels
    log_path = out / "metrics.jsonl"
    if dist.main:
        atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(config.to_dict(), indent=2) + "\n"))
        _truncate_log(log_path, start_step)

    from tqdm.auto import tqdm

    bar = tqdm(total=tc.steps, initial=start_step, disable=not (progress and dist.main), unit="step",
               dynamic_ncols=True)
    start = last_time = time.perf_counter()
    images_since, loss_sum, loss_count = 0, 0.0, 0
    grad_norm = torch.tensor(0.0)
    last_ckpt = None
    undecodable: set[int] = set()   # dataset indices that failed to decode (seen by this rank)
    reported_undecodable = 0
    denoiser.train()
    shape = (tc.batch, config.data.channels, config.data.size, config.data.size)
    with open(log_path, "a") if dist.main else contextlib.nullcontext() as log:
        for step, (images, labels, failed, guides, has_guide) in enumerate(loader, start=start_step + 1):
            images = images.to(dev, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            undecodable.update(int(i) for i in failed if i >= 0)
            # σ, noise and label dropout are drawn for the whole global batch, then sliced: every rank keeps
            # the same generators, and the job computes what one process with the same batch would.
            sigma = loss_fn.sample_sigmas(tc.batch, dev, noise_gen)[share]
            noise = torch.randn(shape, generator=noise_gen, device=dev)[share]
            cond = {}
            if conditional:
                drop = (torch.rand(tc.batch, generator=label_gen) < tc.label_dropout)[share]
                cond["class_labels"] = torch.where(drop, NULL_LABEL, labels).to(dev)
            if guide_channels:
                guide_noise = torch.randn((tc.batch, guide_channels, *shape[2:]), generator=noise_gen,
                                          device=dev)[share]
                cond["guide"] = _denoised_guides(denoiser, guides.to(dev), has_guide.to(dev), sigma, guide_noise,
                                                 use_bf16)
            for group in optimizer.param_groups:
                group["lr"] = tc.lr * group.get("lr_mult", 1.0) * lr_factor(step, tc)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model, images, sigma=sigma, noise=noise, **cond).mean()
            optimizer.zero_grad(set_to_none=True)
            finite = _all_ranks(bool(torch.isfinite(loss)), dist)
            if finite:
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), tc.grad_clip or math.inf)
                finite = bool(torch.isfinite(grad_norm))   # gradients are already averaged over ranks
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
                if dist.main:
                    bar.write(f"kuosan: warning: step {step}: non-finite loss or gradient, update skipped",
                              file=sys.stderr)
                if bad_in_a_row >= tc.max_bad_steps:
                    raise KuosanError(f"training stopped at step {step}: {bad_in_a_row} non-finite losses or "
                                      "gradients in a row (check the data for NaN/inf, or lower --lr)")

            elapsed = elapsed_before + time.perf_counter() - start
            over_budget = tc.max_minutes > 0 and elapsed >= tc.max_minutes * 60
            out_of_time = tc.max_minutes > 0 and not _all_ranks(not over_budget, dist)  # all ranks stop together
            last_step = step == tc.steps or out_of_time
            if finite:
                loss_sum += float(loss.detach())
                loss_count += 1
            images_since += images.shape[0] * dist.world
            bar.update(1)
            if step % tc.log_every == 0 or last_step:
                if len(undecodable) > reported_undecodable and dist.main:
                    names = [dataset.files[i].name for i in sorted(undecodable)[:3]]
                    bar.write(f"kuosan: warning: {len(undecodable)} image(s) failed to decode and were replaced "
                              f"by the next image ({', '.join(names)}{', …' if len(undecodable) > 3 else ''})",
                              file=sys.stderr)
                    reported_undecodable = len(undecodable)
                mean_loss = _mean_over_ranks(loss_sum, loss_count, dist)
                now = time.perf_counter()
                rate = images_since / max(now - last_time, 1e-9)
                record = {"step": step, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                          "grad_norm": float(grad_norm), "images_per_s": rate, "elapsed_s": elapsed,
                          "skipped_steps": skipped, "undecodable_images": len(undecodable)}
                if dist.main:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{record['loss'] or float('nan'):.4f}", img_s=f"{rate:.0f}")
                last_time, images_since, loss_sum, loss_count = now, 0, 0.0, 0
            paused_at = time.perf_counter()  # previews and checkpoints are left out of images/s
            if dist.main and tc.sample_every and (step % tc.sample_every == 0 or last_step):
                preview_grid(ema, config, out / "samples" / f"step-{step:07d}.png", dev)
            if step % tc.checkpoint_every == 0 or last_step:
                last_ckpt = out / CHECKPOINTS_DIR / f"step-{step:07d}"
                # Every rank checks and all agree, so under DDP all stop together instead of the others
                # waiting on rank 0 until the collective times out.
                _check_finite(ema, denoiser, step, last_ckpt, dist)
                if dist.main:
                    state = {"step": step, "model": denoiser.state_dict(), "optimizer": optimizer.state_dict(),
                             "noise_rng": noise_gen.get_state(), "label_rng": label_gen.get_state(),
                             "cpu_rng": torch.get_rng_state(), "elapsed_s": elapsed, "skipped_steps": skipped,
                             "bad_in_a_row": bad_in_a_row, "world_size": dist.world}
                    if dev.type == "cuda":
                        state["cuda_rng"] = torch.cuda.get_rng_state(dev)
                    save_checkpoint(last_ckpt, config, ema, state)
                    prune_checkpoints(out, tc.keep_checkpoints)
            last_time += time.perf_counter() - paused_at
            if out_of_time:
                break
    bar.close()
    return last_ckpt


def lr_factor(step: int, tc: TrainConfig) -> float:
    """LR ÷ ``tc.lr`` at optimiser step ``step`` (1-based): linear warm-up, constant, then a linear cool-down
    that reaches zero after step ``tc.steps``."""
    warm = min(1.0, step / max(1, tc.warmup_steps))
    if tc.cooldown_steps <= 0:
        return warm
    return min(warm, max(0.0, (tc.steps - step + 1) / tc.cooldown_steps))


def _param_groups(denoiser, guide_lr_mult: float) -> list[dict]:
    """One AdamW group, or two when the net has guide planes: their convolution at ``guide_lr_mult`` × LR."""
    guide_stem = getattr(denoiser.net, "guide_stem", None)
    guide = list(guide_stem.parameters()) if guide_stem is not None else []
    rest = [p for p in denoiser.parameters() if all(p is not g for g in guide)]
    groups = [{"params": rest, "lr_mult": 1.0}]
    if guide:
        groups.append({"params": guide, "lr_mult": float(guide_lr_mult)})
    return groups


@torch.no_grad()
def _denoised_guides(denoiser, guides: torch.Tensor, has_guide: torch.Tensor, sigma: torch.Tensor,
                     noise: torch.Tensor, use_bf16: bool) -> torch.Tensor:
    """The guide each example's plane is denoised beside at inference: its clean guide (the luminance of a
    chroma crop) denoised by the model being trained, as ``OpponentColorDenoiser`` does (``luminance_guide``);
    zeros, the unguided input, for examples without one."""
    out = torch.zeros_like(guides)
    index = has_guide.nonzero().flatten()
    if len(index):
        with torch.autocast(guides.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            denoised = luminance_guide(denoiser, guides[index], sigma[index], noise[index])
        out[index] = denoised.to(out.dtype)
    return out


def _all_ranks(flag: bool, dist: Distributed) -> bool:
    """True when ``flag`` holds on every rank (one tiny all-reduce), so all ranks take the same branch."""
    if dist.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item() > 0)


def _mean_over_ranks(total: float, count: int, dist: Distributed) -> float | None:
    if dist.world > 1:
        t = torch.tensor([total, float(count)], dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / count if count else None


def _collective_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_finite(ema, denoiser, step: int, folder: Path, dist: Distributed) -> None:
    tensors = [*ema.state_dict().values(), *denoiser.state_dict().values()]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
    if not _all_ranks(finite, dist):
        previous = checkpoint_folders(folder.parent.parent)
        raise KuosanError(f"step {step}: the weights hold NaN or inf; no checkpoint was written"
                          + (f" (the last good one is {previous[-1]})" if previous else ""))


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint: those steps are about to be taken again."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue        # a line cut short by a kill
    if kept != lines:
        atomic_write(path, lambda p: p.write_text("".join(kept)))
