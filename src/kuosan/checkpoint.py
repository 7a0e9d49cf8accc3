"""Model folders on disk: save and load checkpoints, resolve model references.

A checkpoint folder holds ``config.json`` (a ``RunConfig``), ``model.safetensors`` (EMA weights, what
inference uses) and ``training_state.pt`` (raw weights, optimizer, step, RNG states: tensors and plain
containers only, loaded with ``weights_only=True``). A run folder keeps checkpoints under
``checkpoints/step-NNNNNNN``. Folders are written under a temporary name, fsynced, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kuosan.config import RunConfig
from kuosan.data.io import _umask
from kuosan.diffusion.precond import EDMDenoiser
from kuosan.errors import KuosanError
from kuosan.nets.unet import UNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
CHECKPOINTS_DIR = "checkpoints"


def build_denoiser(config: RunConfig) -> EDMDenoiser:
    """A freshly initialised denoiser for ``config``."""
    if config.denoiser.kind != "edm":
        raise KuosanError(f"config.denoiser.kind: unknown kind {config.denoiser.kind!r} (known: edm)")
    d = config.denoiser
    return EDMDenoiser(UNet(config.net), d.sigma_data, d.sigma_min, d.sigma_max)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(folder: Path, config: RunConfig, ema: nn.Module, training_state: dict | None = None,
                    dtype: torch.dtype = torch.float32, card: dict | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary sibling folder, fsync, rename). Weights are stored in
    ``dtype`` (float16 halves a shipped model; ``load`` casts back); ``card`` is written as card.json."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in ema.state_dict().items()}
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "kuosan", "config": CONFIG_FILE})
        if card is not None:
            (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        mask = _umask()
        for f in tmp.iterdir():
            _fsync_file(f)
            os.chmod(f, 0o666 & ~mask)          # mkdtemp/safetensors leave 0600/0700; use the usual modes
        os.chmod(tmp, 0o777 & ~mask)
        _fsync_dir(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def export_model(ref: str | os.PathLike, dest: Path, dtype: torch.dtype = torch.float16,
                 card: dict | None = None) -> Path:
    """Write a model folder for shipping: ``config.json`` and EMA weights in ``dtype``, plus ``card.json``
    when given; no training state."""
    model = load(ref)
    return save_checkpoint(Path(dest), model.config, model, dtype=dtype, card=card)


def checkpoint_folders(run: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith("step-") and (p / CONFIG_FILE).is_file()
             and (p / WEIGHTS_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def builtin_model_dir(name: str) -> Path:
    folder = Path(str(resources.files("kuosan").joinpath("models", name)))
    if not (folder / CONFIG_FILE).is_file():
        models = resources.files("kuosan").joinpath("models")
        names = sorted(p.name for p in Path(str(models)).iterdir() if (p / CONFIG_FILE).is_file()) \
            if models.is_dir() else []
        raise KuosanError(f"unknown built-in model builtin:{name}; available: "
                          + (", ".join(f"builtin:{n}" for n in names) or "none in this install"))
    return folder


def resolve_model(ref: str | os.PathLike) -> Path:
    """A run folder (its newest checkpoint), a checkpoint folder, or ``builtin:NAME``."""
    ref_text = str(ref)
    if ref_text.startswith("builtin:"):
        return builtin_model_dir(ref_text.split(":", 1)[1])
    path = Path(ref)
    if not path.exists():
        raise KuosanError(f"{path}: no such model (give a run folder, a checkpoint folder or builtin:NAME)")
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    found = checkpoint_folders(path)
    if not found:
        raise KuosanError(f"{path}: not a kuosan model (no {CONFIG_FILE} + {WEIGHTS_FILE}, no checkpoints/)")
    return found[-1]


def read_config(folder: Path) -> RunConfig:
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KuosanError(f"{path}: unreadable config ({e})") from None
    return RunConfig.from_dict(data, where=str(path))


def load(ref: str | os.PathLike, device: str | torch.device = "cpu") -> EDMDenoiser:
    """Load a model reference as a ready denoiser (EMA weights, eval mode, no gradients).

    The returned module also carries ``.config`` (its ``RunConfig``) and ``.source`` (the folder).
    """
    folder = resolve_model(ref)
    config = read_config(folder)
    denoiser = build_denoiser(config)
    weights = folder / WEIGHTS_FILE
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise KuosanError(f"{weights}: unreadable weights ({e})") from None
    try:
        denoiser.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise KuosanError(f"{weights}: weights do not match {CONFIG_FILE} ({first[-1].strip() if first else e})") \
            from None
    denoiser.config = config
    denoiser.source = folder
    return denoiser.to(device).eval().requires_grad_(False)


def load_training_state(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a damaged file to the user
        raise KuosanError(f"{path}: unreadable training state ({e.__class__.__name__})") from None
