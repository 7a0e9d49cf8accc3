"""Typed configuration of a run, stored as ``config.json`` in every checkpoint.

Loading validates keys and types, so a damaged or hand-edited config fails with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field

from kuosan.errors import KuosanError
from kuosan.nets.unet import UNetConfig

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    source: str = "builtin:digits"   # a folder, or builtin:NAME
    size: int = 28                   # square training resolution, pixels
    channels: int = 1                # 1 = gray, 3 = RGB
    class_names: tuple[str, ...] = ()  # empty = unconditional
    hflip: bool = False              # random horizontal flips
    random_crop: bool = False        # random instead of centre crops


@dataclass(frozen=True)
class DenoiserConfig:
    kind: str = "edm"                # EDM preconditioning (Karras et al. 2022)
    sigma_data: float = 0.5
    sigma_min: float = 0.002         # range the model is trained and sampled for, model units
    sigma_max: float = 80.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000                # optimiser steps
    batch: int = 64                  # images per step (the global batch)
    lr: float = 1e-3                 # AdamW learning rate after warm-up
    warmup_steps: int = 200          # linear LR warm-up
    cooldown_steps: int = 0          # linear LR fall to zero over the last this many of ``steps`` (0 = constant
                                     # LR): the cool-down that ends a warm-up-stable-decay schedule
    weight_decay: float = 0.0
    grad_clip: float = 1.0           # max global gradient norm (0 = off)
    ema_halflife_kimg: float = 25.0  # EMA half-life in thousands of images (EDM's convention)
    ema_rampup: float = 0.1          # half-life ≤ this × images seen so far, so early EMA tracks fast
    p_mean: float = -1.2             # ln σ ~ N(p_mean, p_std²) during training (EDM)
    p_std: float = 1.2
    label_dropout: float = 0.1       # probability of dropping the class label (for guidance)
    seed: int = 0
    log_every: int = 50
    sample_every: int = 500          # steps between preview grids; 0 = none
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    workers: int = 0                 # data-loading processes
    max_minutes: float = 0.0         # stop (with a final checkpoint) after this much wall time; 0 = no limit
    max_bad_steps: int = 10          # stop after this many non-finite losses/gradients in a row
    deterministic: bool = False      # torch.use_deterministic_algorithms: bitwise-repeatable runs
    guide_lr_mult: float = 1.0       # LR × this for the guide planes' convolution (UNetConfig.guide_channels):
                                     # weights started at zero beside trained ones learn faster
    gradient_checkpointing: bool = False  # recompute each UNet block in the backward pass: the same steps in
                                          # less memory (larger batches or crops), for more time per step


@dataclass(frozen=True)
class RunConfig:
    net: UNetConfig = field(default_factory=UNetConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""
    kuosan_version: str = ""
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> RunConfig:
        try:
            return _build(cls, d, "")
        except KuosanError as e:
            raise KuosanError(f"{where}: {e}") from None


def _join(prefix: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name


def _check_value(value, annotation, key: str):
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise KuosanError(f"{key}: expected a list, got {type(value).__name__}")
        inner = typing.get_args(annotation)[0]
        return tuple(_check_value(v, inner, _join(key, k)) for k, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
    ok = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        bool: lambda v: isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[annotation](value)
    if not ok:
        raise KuosanError(f"{key}: expected {annotation.__name__}, got {value!r}")
    return float(value) if annotation is float else value


def _build(cls, d, key: str):
    if not isinstance(d, dict):
        raise KuosanError(f"{key or 'the file'}: expected an object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise KuosanError(f"unknown key {_join(key, unknown[0])} (known: {', '.join(names)})")
    values = {k: _check_value(v, hints[k], _join(key, k)) for k, v in d.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise KuosanError(f"{key or 'the file'}: {e}") from None
