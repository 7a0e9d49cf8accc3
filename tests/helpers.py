"""Small models and image folders for fast tests."""

from pathlib import Path

import numpy as np
from PIL import Image

from kuosan.config import DataConfig, RunConfig, TrainConfig
from kuosan.nets import UNetConfig

TEST_NET = UNetConfig(channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                      attention_head_channels=16, groups=4)


def pattern_images(n: int, size: int = 8) -> list[np.ndarray]:
    """Distinct, easy-to-memorise gray patterns (stripes, checkers, blocks)."""
    yy, xx = np.mgrid[:size, :size]
    shapes = [(xx // 2) % 2, (yy // 2) % 2, (xx // 2 + yy // 2) % 2, (xx < size // 2), (yy < size // 2),
              (xx + yy) % 2, ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2), xx == yy]
    return [(shapes[k % len(shapes)] * 255).astype(np.uint8) for k in range(n)]


def write_folder(root: Path, n: int, size: int = 8, mode: str = "L") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, arr in enumerate(pattern_images(n, size)):
        Image.fromarray(arr).convert(mode).save(root / f"img{k:02d}.png")
    return root


def tiny_config(source: str, steps: int = 20, size: int = 8, **train) -> RunConfig:
    options = dict(steps=steps, batch=8, lr=2e-3, warmup_steps=10, ema_halflife_kimg=0.5, log_every=5,
                   sample_every=10_000, checkpoint_every=10_000)
    options.update(train)
    return RunConfig(net=TEST_NET, data=DataConfig(source=source, size=size, channels=1, hflip=False),
                     train=TrainConfig(**options), preset="test")
