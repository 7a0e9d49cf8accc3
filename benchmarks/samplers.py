"""Samplers against the exact answer: Gaussian mixtures with an analytic denoiser, kuosan vs diffusers.

Every sampler — kuosan's and diffusers' schedulers — is driven by the same exact denoiser of a Gaussian
mixture, so the only error left is the sampler's own discretisation error, measured against the true
distribution. diffusers' schedulers work in the VP parametrisation with ε-prediction: they are given
ε = (x_σ − D(x_σ; σ))/σ at x_σ = x_vp·√(1 + σ²), σ² = (1 − ᾱ_t)/ᾱ_t, with clip_sample off.

Metrics (lower is better): sliced Wasserstein-2 to exact samples (the "floor" row is exact vs. exact),
total-variation error of the mode weights (each sample assigned to its most likely component), and the
worst relative error of the spread within a mode (RMS distance to μ_k over s_k√d, minus 1).

"kuosan unipc tuned ladder" samples on a ladder fitted to each mixture and budget by
``kuosan.samplers.tune_sigmas`` from the denoiser alone (never from the exact samples); that one-off cost is
not counted in the NFE and is printed at the end. "+ mean start" entries start from
``kuosan.samplers.mean_start`` (x = D(0; σ_max) + σ_max·noise) instead of σ_max·noise: one more denoiser call, on
a single sample, for the whole batch (not counted in the NFE).

    python benchmarks/samplers.py [--n 20000] [--n-low-dim 200000] [--nfe 5,10,20,50] [--plot docs/samplers.png]

Needs the `bench` extra (diffusers; matplotlib for the plot).
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kuosan import samplers
from kuosan.diffusion.ladders import knee_sigmas
from kuosan.diffusion.mixture import GaussianMixture, sliced_w2
from kuosan.samplers.tuning import tune_sigmas


def mixtures() -> dict[str, GaussianMixture]:
    g = torch.Generator().manual_seed(0)
    angles = torch.arange(4) * (math.pi / 2)
    ring = torch.stack([angles.cos(), angles.sin()], 1) * 1.5
    angles8 = torch.arange(8) * (math.pi / 4)
    ring8 = torch.stack([angles8.cos(), angles8.sin()], 1) * 2.0
    return {
        "2d, 4 narrow modes": GaussianMixture(ring, [0.05] * 4, [0.4, 0.3, 0.2, 0.1]),
        "2d, 8 wide modes": GaussianMixture(ring8, [0.3] * 8, [1, 2, 3, 4, 1, 2, 3, 4]),
        "16d, 3 mixed widths": GaussianMixture(torch.randn(3, 16, generator=g) * 0.6, [0.02, 0.2, 0.5],
                                               [0.6, 0.3, 0.1]),
        "64d, 10 modes": GaussianMixture(torch.randn(10, 64, generator=g) * 0.5, [0.1] * 10,
                                         torch.linspace(1, 3, 10)),
    }


class Counted:
    """Counts denoiser calls (NFE) and evaluations of individual images."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0
        self.sigma_min, self.sigma_max, self.channels = denoiser.sigma_min, denoiser.sigma_max, denoiser.channels

    def __call__(self, x, sigma, **cond):
        self.calls += 1
        return self.denoiser(x, sigma, **cond)


@dataclass
class Metrics:
    sw2: float
    weight_tv: float
    spread_error: float
    nfe: int


def measure(mixture: GaussianMixture, x: torch.Tensor, reference: torch.Tensor, directions: torch.Tensor,
            nfe: int) -> Metrics:
    x = x.reshape(x.shape[0], -1).double()
    if not torch.isfinite(x).all():
        return Metrics(math.inf, 1.0, math.inf, nfe)
    weights, spreads = mixture.mode_statistics(x, min_members=20)
    tv = 0.5 * float((weights - mixture.weights).abs().sum())
    spread = float((spreads - 1).abs().nan_to_num(0.0).max())
    return Metrics(sliced_w2(x, reference, directions), tv, spread, nfe)


def kuosan_runner(name: str, ladder: Callable | None = None, mean_start: bool = False, **options) -> Callable:
    """``name`` on its recommended σ ladder within the NFE budget, or on ``ladder(nfe, σ_min, σ_max)``; with
    ``mean_start``, from ``samplers.mean_start`` — its one call, on a single zero sample, is not counted in the NFE."""
    def run(denoiser, noise: torch.Tensor, nfe: int, generator: torch.Generator) -> torch.Tensor:
        if ladder is None:
            sigmas = samplers.recommended_sigmas(name, nfe, denoiser.sigma_min, denoiser.sigma_max)
        else:
            sigmas = ladder(nfe, denoiser.sigma_min, denoiser.sigma_max)
        x = samplers.mean_start(denoiser.denoiser, noise, sigmas[0]) if mean_start else noise * sigmas[0]
        return samplers.get(name)(denoiser, x, sigmas, generator=generator, **options)

    return run


def continuous_data_ladder(nfe: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The knee ladder with the knee at σ = 3 and the lowest level at 0.01 instead of 0.005: with unipc's
    averaged last step (second order in σ²) the lowest level may sit higher, and the levels saved go to the
    σ range where modes separate. One setting for all mixtures and budgets; not the default because it
    helps smooth densities, not 8-bit images (see ``unipc``'s ``last_step``)."""
    return knee_sigmas(nfe, sigma_min, sigma_max, knee=3.0, floor=0.01)


def tuned_runner(name: str, tuning_draws: int = 4096, **options) -> Callable:
    """``name`` on a ladder tuned to the mixture by ``tune_sigmas`` — from the denoiser alone, on noise drawn
    apart from the benchmark's (its own seed), and not counted in the NFE: a one-off cost per model and
    budget, printed at the end."""
    def run(denoiser, noise: torch.Tensor, nfe: int, generator: torch.Generator) -> torch.Tensor:
        model = denoiser.denoiser
        tuning_noise = torch.randn(tuning_draws, *noise.shape[1:], generator=torch.Generator().manual_seed(10))
        start, counted = time.perf_counter(), Counted(model)
        sigmas = tune_sigmas(counted, name, tuning_noise, nfe, options=options)
        TUNING_COST.append((nfe, counted.calls, time.perf_counter() - start))
        return samplers.get(name)(denoiser, noise * sigmas[0], sigmas, generator=generator, **options)

    return run


TUNING_COST: list[tuple[int, int, float]] = []  # (NFE budget, denoiser calls on the tuning batch, seconds)


def diffusers_runner(make_scheduler: Callable, steps_for: Callable[[int], int]) -> Callable:
    def run(denoiser, noise: torch.Tensor, nfe: int, generator: torch.Generator) -> torch.Tensor:
        scheduler = make_scheduler()
        scheduler.set_timesteps(steps_for(nfe))
        alphas_cumprod = scheduler.alphas_cumprod.double()
        table = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()

        def sigma_at(t) -> torch.Tensor:  # linear in t between integer timesteps, as diffusers' Euler does
            t = float(t)
            lo = min(int(math.floor(t)), len(table) - 2)
            w = t - lo
            return (1 - w) * table[lo] + w * table[lo + 1]

        x = noise * scheduler.init_noise_sigma
        stochastic = "generator" in inspect.signature(scheduler.step).parameters
        extra = {"generator": generator} if stochastic else {}
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            sigma = sigma_at(t)
            x_sigma = model_input.double() * (1 + sigma**2).sqrt()
            x0 = denoiser(x_sigma, sigma.float().expand(x.shape[0]))
            eps = ((x_sigma - x0.double()) / sigma).to(x.dtype)
            x = scheduler.step(eps, t, x, **extra).prev_sample
        return x

    return run


def contenders() -> dict[str, tuple[str, Callable]]:
    """name → (library, runner)."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DEISMultistepScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    same = lambda n: n  # noqa: E731 - one network call per step
    heun_steps = lambda n: max(1, (n + 1) // 2)  # noqa: E731 - 2 calls per step but the last
    out = {f"kuosan {name}": ("kuosan", kuosan_runner(name)) for name in samplers.available()}
    out["kuosan unipc avg (knee 3)"] = ("kuosan", kuosan_runner("unipc", continuous_data_ladder,
                                                               last_step="average"))
    out["kuosan unipc tuned ladder"] = ("kuosan", tuned_runner("unipc"))
    out["kuosan unipc + mean start"] = ("kuosan", kuosan_runner("unipc", mean_start=True))
    out["kuosan unipc avg (knee 3) + mean start"] = ("kuosan", kuosan_runner(
        "unipc", continuous_data_ladder, mean_start=True, last_step="average"))
    out.update({
        "diffusers DDIM": ("diffusers", diffusers_runner(lambda: DDIMScheduler(clip_sample=False,
                                                                                 timestep_spacing="trailing"), same)),
        "diffusers DDPM": ("diffusers", diffusers_runner(lambda: DDPMScheduler(clip_sample=False,
                                                                                 timestep_spacing="trailing"), same)),
        "diffusers DPM++2M": ("diffusers", diffusers_runner(DPMSolverMultistepScheduler, same)),
        "diffusers DPM++2M Karras": ("diffusers", diffusers_runner(
            lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True), same)),
        "diffusers UniPC": ("diffusers", diffusers_runner(UniPCMultistepScheduler, same)),
        "diffusers DEIS": ("diffusers", diffusers_runner(DEISMultistepScheduler, same)),
        "diffusers Euler": ("diffusers", diffusers_runner(EulerDiscreteScheduler, same)),
        "diffusers Heun": ("diffusers", diffusers_runner(HeunDiscreteScheduler, heun_steps)),
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="samples per run")
    parser.add_argument("--n-low-dim", type=int, default=200000,
                        help="samples per run for 2-D mixtures, whose SW2 noise floor is dominated by mode-weight "
                             "sampling noise (cheap there)")
    parser.add_argument("--nfe", default="5,10,20,50", help="comma-separated NFE budgets")
    parser.add_argument("--plot", default="", help="write a log-log plot of sliced W2 excess vs NFE here")
    args = parser.parse_args()
    budgets = [int(v) for v in args.nfe.split(",")]
    runners = contenders()
    results: dict[tuple[str, str, int], Metrics] = {}
    floors: dict[str, float] = {}
    floor_spreads: dict[str, float] = {}
    for mix_name, mixture in mixtures().items():
        n = args.n_low_dim if mixture.dim <= 2 else args.n
        g = torch.Generator().manual_seed(1)
        reference, _ = mixture.sample(n, g)
        directions = torch.randn(mixture.dim, 64, generator=g, dtype=torch.float64)
        directions /= directions.norm(dim=0, keepdim=True)
        # The floor is itself random: average several exact-vs-reference draws (and show their range).
        draws = [measure(mixture, mixture.sample(n, g)[0], reference, directions, 0) for _ in range(4)]
        floor = Metrics(*(sum(getattr(m, f) for m in draws) / len(draws) for f in ("sw2", "weight_tv",
                                                                                  "spread_error")), 0)
        floors[mix_name] = floor.sw2
        floor_spreads[mix_name] = float(torch.tensor([m.sw2 for m in draws]).std())
        print(f"\n## {mix_name} ({n} samples): noise floor (exact vs exact, mean of {len(draws)} draws) "
              f"sliced W2 {floor.sw2:.4f} "
              f"(range {min(m.sw2 for m in draws):.4f}–{max(m.sw2 for m in draws):.4f}), "
              f"mode-weight TV {floor.weight_tv:.4f}, spread error {floor.spread_error:.4f}")
        print(f"{'sampler':40s} " + " ".join(f"{'NFE ' + str(b):>24s}" for b in budgets))
        print(f"{'':40s} " + " ".join(f"{'SW2  TV  spread':>24s}" for _ in budgets))
        for name, (_, run) in runners.items():
            cells = []
            for nfe in budgets:
                counted = Counted(mixture)
                noise = torch.randn(n, mixture.dim, 1, 1, generator=torch.Generator().manual_seed(2))
                out = run(counted, noise, nfe, torch.Generator().manual_seed(3))
                m = measure(mixture, out, reference, directions, counted.calls)
                results[(mix_name, name, nfe)] = m
                flag = "" if m.nfe <= nfe else f"(!{m.nfe})"
                cells.append(f"{m.sw2:8.4f} {m.weight_tv:6.3f} {m.spread_error:6.3f}{flag}")
            print(f"{name:40s} " + " ".join(f"{c:>24s}" for c in cells))
    summarize(results, floors, floor_spreads, budgets, runners)
    if TUNING_COST:
        print("\n'kuosan unipc tuned ladder': one-off tuning cost per mixture and budget, on 4096 draws "
              "(denoiser calls on the batch, seconds):")
        for budget in budgets:
            costs = [(calls, secs) for nfe, calls, secs in TUNING_COST if nfe == budget]
            print(f"  NFE {budget:3d}: " + ", ".join(f"{c} calls {t:.1f} s" for c, t in costs))
    if args.plot:
        plot(results, floors, budgets, runners, args.plot)


def summarize(results, floors, floor_spreads, budgets, runners) -> None:
    print("\n## Best of each library: sliced-W2 excess over the noise floor (and max spread error); '≈' marks a "
          "difference smaller than the floor's own standard deviation over its draws (a tie)")
    print(f"{'mixture':24s} {'NFE':>4s} {'kuosan best':>48s} {'diffusers best':>34s} {'ratio':>6s}")
    for mix_name, floor in floors.items():
        for nfe in budgets:
            best = {}
            for lib in ("kuosan", "diffusers"):
                names = [n for n, (library, _) in runners.items() if library == lib]
                name = min(names, key=lambda n: results[(mix_name, n, nfe)].sw2)
                best[lib] = (name, results[(mix_name, name, nfe)])
            (kn, km), (dn, dm) = best["kuosan"], best["diffusers"]
            k_ex, d_ex = max(km.sw2 - floor, 0.0), max(dm.sw2 - floor, 0.0)
            ratio = f"{k_ex / d_ex:6.2f}" if d_ex > 0 else "  both 0" if k_ex == 0 else "     inf"
            ratio += " ≈" if k_ex != d_ex and abs(k_ex - d_ex) < floor_spreads[mix_name] else ""
            print(f"{mix_name:24s} {nfe:4d} {kn[7:]:>32s} {k_ex:8.4f} ({km.spread_error:.3f}) "
                  f"{dn[10:]:>18s} {d_ex:8.4f} ({dm.spread_error:.3f}) {ratio}")


def plot(results, floors, budgets, runners, path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(floors), figsize=(5 * len(floors), 4.2), sharey=False)
    colors = plt.get_cmap("tab20").colors  # one colour per contender (the default cycle repeats after 10)
    for ax, (mix_name, floor) in zip(axes, floors.items(), strict=True):
        for k, (name, (lib, _)) in enumerate(runners.items()):
            ys = [max(results[(mix_name, name, b)].sw2 - floor, 1e-5) for b in budgets]
            ax.loglog(budgets, ys, "-o" if lib == "kuosan" else "--x", label=name, lw=1.2, ms=4,
                      color=colors[k % len(colors)])
        ax.set_title(mix_name)
        ax.set_xlabel("NFE")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("sliced W2 − noise floor")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
