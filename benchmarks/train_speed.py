"""Training throughput: kuosan's `tiny` preset vs diffusers' UNet2DModel of a similar size, same run.

Both train on the same MNIST batches (28×28, 1 channel) with AdamW on this machine's CPU threads;
kuosan with its EDM preconditioning and loss, diffusers with its DDPMScheduler ε-prediction loss (the
recipe of diffusers' unconditional training example). Timed steps alternate between the two models so
that machine noise hits both alike. Needs the `bench` extra: pip install -e ".[bench]".

    python benchmarks/train_speed.py [--batch 64] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def kuosan_step_fn(batch: torch.Tensor, name: str = "tiny"):
    from kuosan.diffusion import EDMDenoiser, EDMLoss
    from kuosan.nets import UNet, count_parameters, preset

    denoiser = EDMDenoiser(UNet(preset(name, channels=1)))
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-3)
    loss_fn = EDMLoss()

    def step():
        loss = loss_fn(denoiser, batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, count_parameters(denoiser)


def diffusers_step_fn(batch: torch.Tensor, layers_per_block: int, widths: tuple[int, ...]):
    from diffusers import DDPMScheduler, UNet2DModel

    net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=layers_per_block,
                      block_out_channels=widths, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        noise = torch.randn_like(batch)
        t = torch.randint(0, 1000, (batch.shape[0],))
        pred = net(scheduler.add_noise(batch, noise, t), t).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--presets", default="tiny", help="kuosan presets to time, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from kuosan.data import builtin_digits_arrays

    images, _ = builtin_digits_arrays()
    batch = torch.from_numpy(images[: args.batch]).float()[:, None] / 127.5 - 1

    presets = [p.strip() for p in args.presets.split(",")]
    contenders = {f"kuosan {p} (EDM)": kuosan_step_fn(batch, p) for p in presets}
    for layers, widths in ((2, (32, 64, 64)), (1, (32, 64, 64))):
        step, n = diffusers_step_fn(batch, layers, widths)
        contenders[f"diffusers UNet2DModel {list(widths)}×{layers}"] = (step, n)

    times: dict[str, list[float]] = {name: [] for name in contenders}
    for step, _ in contenders.values():  # warm-up
        step()
        step()
    for _ in range(args.steps):
        for name, (step, _) in contenders.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)

    base = args.batch / statistics.median(times[f"kuosan {presets[0]} (EDM)"])
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, 28×28×1, "
          f"{args.steps} timed steps each (median)")
    print(f"{'model':40s} {'params':>9s} {'images/s':>9s} {'kuosan ×':>9s}")
    for name, (_, n) in contenders.items():
        rate = args.batch / statistics.median(times[name])
        print(f"{name:40s} {n / 1e6:8.2f}M {rate:9.1f} {base / rate:9.2f}")


if __name__ == "__main__":
    main()
