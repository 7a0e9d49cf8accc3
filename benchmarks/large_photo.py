"""Memory and time for a 4000×3000 photo (issue 4: "must work in < 4 GB RAM").

The test photo is the astronaut crop that ships with kuosan (kuosan/data/builtin/astronaut.png), mirrored
out to 4000×3000 (reflected copies keep the photo's own pixel statistics, where enlarging would smooth it) and
given white Gaussian noise (σ = 25 in 0–255 units, seed 0), gray and RGB. Each case runs the command line
(``kuosan denoise IN OUT``, the noise level estimated) in a fresh process, which reports its own peak resident
memory (``getrusage``: everything, Python and torch included) and wall time. PSNR is against the mirrored clean
photo. ``--bm3d`` adds BM3D on the same gray
photo (given the true σ; slow: minutes per megapixel on 2 cores). ``--tiles 256,512`` runs kuosan once per tile
size (``kuosan denoise --tile``; the default is the command's own). ``--adapt N`` fits the prior to the photo
first (``kuosan denoise --adapt N``), so the fit's memory is in the peak too.

    python benchmarks/large_photo.py [--size 4000x3000] [--kinds gray,rgb] [--tiles T,...] [--threads N] [--bm3d]
                                     [--adapt N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

SIGMA = 25.0


def make_photo(folder: Path, size: tuple[int, int], kind: str) -> tuple[Path, Path]:
    with resources.files("kuosan.data.builtin").joinpath("astronaut.png").open("rb") as f:
        small = Image.open(f).convert("L" if kind == "gray" else "RGB")
    photo = np.asarray(small, dtype=np.float64)
    width, height = size
    tile = np.concatenate([photo, photo[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)       # 2×2 mirrored block: seamless when repeated
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1])) + (1,) * (photo.ndim - 2)
    clean = np.tile(tile, reps)[:height, :width]
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    clean_path, noisy_path = folder / f"clean-{kind}.png", folder / f"noisy-{kind}.png"
    Image.fromarray(clean.astype(np.uint8)).save(clean_path)
    Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8)).save(noisy_path)
    return clean_path, noisy_path


def child(args: list[str]) -> None:
    """Run one case in this process and print its peak memory and time as JSON."""
    what, threads, tile, adapt = args[0], int(args[1]), args[4], args[5]
    import torch

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    if what == "kuosan":
        from kuosan.cli import main

        code = main(["denoise", args[2], args[3]] + (["--tile", tile] if tile != "default" else [])
                    + (["--adapt", adapt] if adapt != "0" else []))
        if code:
            raise SystemExit(code)
    else:
        import bm3d

        noisy = np.asarray(Image.open(args[2]), dtype=np.float64) / 255
        out = bm3d.bm3d(noisy, SIGMA / 255)
        Image.fromarray(np.clip(np.round(out * 255), 0, 255).astype(np.uint8)).save(args[3])
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_gib": peak_kib / 2**20}))


def run_case(what: str, noisy: Path, out: Path, threads: int, tile: str = "default", adapt: int = 0) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", what, str(threads), str(noisy), str(out), tile,
                             str(adapt)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{what} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4000x3000", help="W×H of the test photo")
    parser.add_argument("--kinds", default="gray,rgb")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--tiles", default="default", help="kuosan tile sizes to compare, e.g. 256,512")
    parser.add_argument("--bm3d", action="store_true", help="also BM3D on the gray photo (slow)")
    parser.add_argument("--adapt", type=int, default=0, metavar="N", help="kuosan denoise --adapt N (0: off)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    from kuosan.tasks.restore import psnr

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in args.kinds.split(","):
            clean, noisy = make_photo(folder, size, kind)
            extra = "".join(f", {name} {value}" for name, value in (("adapt", args.adapt),) if value)
            cases = [(f"kuosan denoise (σ auto{'' if t == 'default' else ', tile ' + t}{extra})", "kuosan", t)
                     for t in args.tiles.split(",")]
            if args.bm3d and kind == "gray":
                cases.append(("BM3D (true σ)", "bm3d", "default"))
            for label, what, tile in cases:
                out = folder / f"out-{kind}-{what}-{tile}.png"
                r = run_case(what, noisy, out, args.threads, tile, args.adapt if what == "kuosan" else 0)
                r["psnr"] = psnr(Image.open(out), Image.open(clean))
                rows.append((kind, label, r))
                print(f"{kind} {label}: {r['seconds']:.0f} s, peak {r['peak_gib']:.2f} GiB, {r['psnr']:.2f} dB",
                      file=sys.stderr)
    import torch

    print(f"\n{size[0]}×{size[1]} photo, noise σ = {SIGMA:g}; torch {torch.__version__}, "
          f"{torch.get_num_threads() if not args.threads else args.threads} threads")
    print("| kind | method | seconds | peak memory (GiB) | PSNR (dB) |")
    print("|---|---|---|---|---|")
    for kind, label, r in rows:
        print(f"| {kind} | {label} | {r['seconds']:.0f} | {r['peak_gib']:.2f} | {r['psnr']:.2f} |")


if __name__ == "__main__":
    main()
