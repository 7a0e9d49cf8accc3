"""Training efficiency on this machine: kuosan's default recipe vs a standard diffusers recipe, same data,
same wall-clock budgets, scored by the same evaluator (kuosan's digit classifier features: Fréchet distance
and KID against the 2,000 held-out digits).

- kuosan: `tiny` preset, EDM preconditioning and loss, AdamW lr 1e-3, EMA (kuosan defaults), unconditional,
  sampled with Heun 18 steps (35 network calls).
- diffusers: `UNet2DModel` (block_out_channels (32, 64, 64), one layer per block: a similar parameter count),
  `DDPMScheduler` (1000 steps, linear β) ε-prediction MSE, AdamW lr 1e-4 with 500 warm-up steps, `EMAModel`
  (decay 0.9999, warm-up power 3/4) as in diffusers' unconditional training example, sampled with
  `DDIMScheduler` 50 steps.

Both train on `builtin:digits-train` (8,000 images, 28×28, [-1, 1]) with batch 64.

    pip install -e .[bench]
    python benchmarks/train_vs_diffusers.py --kuosan-minutes 15 --diffusers-minutes 15,60 --out runs/tvd
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kuosan.data.folder import digits_split
from kuosan.data.io import save_grid
from kuosan.tasks.evaluate import score_digits


def digits_train() -> torch.Tensor:
    images, _ = digits_split("train")
    return torch.from_numpy(images).float()[:, None] / 127.5 - 1


def run_kuosan(minutes: float, out: Path, n: int, seed: int) -> tuple[torch.Tensor, int]:
    from dataclasses import replace

    from kuosan.checkpoint import load
    from kuosan.config import DataConfig, RunConfig, TrainConfig
    from kuosan.nets.unet import preset
    from kuosan.tasks.generate import generate
    from kuosan.train.trainer import train

    config = RunConfig(net=preset("tiny", channels=1), data=DataConfig(source="builtin:digits-train"),
                       train=replace(TrainConfig(), steps=10**7, max_minutes=minutes, seed=seed,
                                     sample_every=10**7, checkpoint_every=10**7), preset="tiny")
    last = train(config, out, device="cpu", progress=False)
    steps = int(last.name.split("-")[1])
    model = load(out)
    return generate(model, n, sampler="heun", steps=18, seed=seed, batch_size=250), steps


def _ddim_samples(model, n: int, g: torch.Generator) -> torch.Tensor:
    from diffusers import DDIMScheduler, DDPMScheduler

    ddim = DDIMScheduler.from_config(
        DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False).config)
    ddim.set_timesteps(50)
    samples = []
    with torch.no_grad():
        for chunk in range(0, n, 250):
            x = torch.randn(min(250, n - chunk), 1, 28, 28, generator=g)
            for t in ddim.timesteps:
                x = ddim.step(model(x, t).sample, t, x, eta=0.0).prev_sample
            samples.append(x.clamp(-1, 1))
    return torch.cat(samples)


def run_diffusers(budgets: list[float], n: int, seed: int) -> list[tuple[float, torch.Tensor, int]]:
    """One training run; at each wall-clock budget (minutes, ascending) the EMA weights are sampled, exactly
    what a run stopped there would give (the learning rate is constant after warm-up). Sampling time is not
    counted against the budget."""
    import copy

    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    data = digits_train()
    model = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                        block_out_channels=(32, 64, 64),
                        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    g = torch.Generator().manual_seed(seed)
    results, step, trained = [], 0, 0.0
    for minutes in sorted(budgets):
        start = time.perf_counter()
        while trained + time.perf_counter() - start < minutes * 60:
            batch = data[torch.randint(0, len(data), (64,), generator=g)]
            noise = torch.randn(batch.shape, generator=g)
            t = torch.randint(0, 1000, (64,), generator=g)
            for group in optimizer.param_groups:
                group["lr"] = 1e-4 * min(1.0, (step + 1) / 500)
            loss = torch.nn.functional.mse_loss(model(scheduler.add_noise(batch, noise, t), t).sample, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            ema.step(model.parameters())
            step += 1
        trained += time.perf_counter() - start
        snapshot = copy.deepcopy(model)
        ema.copy_to(snapshot.parameters())
        snapshot.eval()
        sample_generator = torch.Generator().manual_seed(seed + 1)
        results.append((minutes, _ddim_samples(snapshot, n, sample_generator), step))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kuosan-minutes", type=float, default=15)
    parser.add_argument("--diffusers-minutes", default="15,60", help="comma-separated budgets")
    parser.add_argument("--n", type=int, default=1000, help="samples scored per model")
    parser.add_argument("--out", default="runs/train-vs-diffusers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    samples, steps = run_kuosan(args.kuosan_minutes, out / "kuosan", args.n, args.seed)
    save_grid(samples[:100], out / "kuosan-grid.png", nrow=10, scale=2)
    rows.append((f"kuosan tiny, {args.kuosan_minutes:g} min", steps, score_digits(samples, None)))
    budgets = [float(m) for m in args.diffusers_minutes.split(",")]
    for minutes, samples, steps in run_diffusers(budgets, args.n, args.seed):
        save_grid(samples[:100], out / f"diffusers-{minutes:g}min-grid.png", nrow=10, scale=2)
        rows.append((f"diffusers UNet2DModel DDPM, {minutes:g} min", steps, score_digits(samples, None)))

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print(f"{args.n} samples each, scored against the 2,000 held-out digits; grids in {out}/")
    print("| recipe | steps (batch 64) | FD (n vs 2000) | FD (≤1000 vs 1000) | FD real half vs half | KID |")
    print("|---|---|---|---|---|---|")
    for name, steps, s in rows:
        print(f"| {name} | {steps} | {s.fd:.2f} | {s.fd_half:.2f} | {s.fd_reference:.2f} | {s.kid:.4f} |")


if __name__ == "__main__":
    main()
