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
from dataclasses import dataclass
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
            _discard(folder)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _discard(folder: Path) -> None:
    """Remove a folder so that a crash midway never leaves a half-deleted folder under its real name: it is
    renamed to a hidden temporary name first (``clean_partial`` removes leftovers)."""
    trash = folder.with_name(f".{folder.name}.{os.getpid()}.del")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_partial(run: Path) -> int:
    """Remove what a killed process left under ``run/checkpoints``: half-written (``.tmp``) and half-deleted
    (``.del``) hidden folders. Returns how many were removed."""
    root = Path(run) / CHECKPOINTS_DIR
    if not root.is_dir():
        return 0
    leftovers = [p for p in root.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".del"))]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return len(leftovers)


def prune_checkpoints(run: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints of a run, removing older ones crash-safely."""
    for old in checkpoint_folders(run)[:-keep] if keep > 0 else []:
        _discard(old)


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
    if path.is_file():
        if _is_pickle(path):
            raise KuosanError(_PICKLE_REFUSAL.format(path=path))
        raise KuosanError(f"{path}: a file, not a model; give the folder that holds {CONFIG_FILE} and "
                          f"{WEIGHTS_FILE} (or a run folder, or builtin:NAME)")
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    found = checkpoint_folders(path)
    if not found:
        pickles = sorted(p for p in path.iterdir() if p.is_file() and _is_pickle(p))
        if pickles and not (path / WEIGHTS_FILE).is_file():
            raise KuosanError(_PICKLE_REFUSAL.format(path=pickles[0]))
        raise KuosanError(f"{path}: not a kuosan model (no {CONFIG_FILE} + {WEIGHTS_FILE}, no checkpoints/)")
    return found[-1]


PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
_PICKLE_REFUSAL = ("{path}: a pickle file (PyTorch .pt/.ckpt/.bin); kuosan does not load model weights from "
                   "pickles, because unpickling a file can run any code it contains. Use a kuosan model folder "
                   "(config.json + model.safetensors); weights you trust can be converted with "
                   "safetensors.torch.save_file")


def _is_pickle(path: Path) -> bool:
    """A pickle stream (protocol 2+) or PyTorch's zip container, by name or by its first bytes."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def read_config(folder: Path) -> RunConfig:
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KuosanError(f"{path}: unreadable config ({e})") from None
    return RunConfig.from_dict(data, where=str(path))


PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device: str | torch.device) -> bool:
    """Whether bfloat16 convolutions are faster than float32 on ``device``: a CPU with AMX tiles (Intel Sapphire
    Rapids and later). AVX-512 BF16 alone is not enough: measured on such a CPU (no AMX), the photo prior took
    617 ms per 256² pass in bf16 vs 416 ms in fp32, and training ran at 9.1 vs 14.1 crops/s."""
    if torch.device(device).type != "cpu":
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                    and torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):     # a build without the queries
        return False


def load(ref: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32") -> EDMDenoiser:
    """Load a model reference as a ready denoiser (EMA weights, eval mode, no gradients).

    ``precision``: ``fp32``; ``bf16`` (the network under bfloat16 autocast, the EDM scalings and skip path in
    float32); ``auto`` (bf16 on a CPU with native bf16, see ``native_bf16``, else fp32). The returned module also
    carries ``.config`` (its ``RunConfig``) and ``.source`` (the folder).
    """
    if precision not in PRECISIONS:
        raise KuosanError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    folder = resolve_model(ref)
    config = read_config(folder)
    denoiser = build_denoiser(config)
    weights = folder / WEIGHTS_FILE
    state = _read_weights(weights)
    try:
        denoiser.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise KuosanError(f"{weights}: weights do not match {CONFIG_FILE} ({first[-1].strip() if first else e})") \
            from None
    denoiser.config = config
    denoiser.source = folder
    denoiser = denoiser.to(device).eval().requires_grad_(False)
    if torch.device(device).type == "cpu":
        # oneDNN's channels-last convolutions: the photo prior runs 1.24× (one 256² plane) to 1.4× (three)
        # faster on a 2-core CPU, the same results to float rounding. Saving copies weights contiguous.
        denoiser = denoiser.to(memory_format=torch.channels_last)
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        denoiser.autocast_dtype = torch.bfloat16
    return denoiser


@dataclass
class ResumePoint:
    """Everything a checkpoint holds for continuing its run, read and checked once."""

    folder: Path
    config: RunConfig
    state: dict                        # training state: raw weights, optimizer, step, RNG states …
    ema: dict[str, torch.Tensor]       # the EMA weights (model.safetensors)


def read_resume_point(folder: Path) -> ResumePoint:
    """Read a checkpoint's config, EMA weights and training state; KuosanError if any is damaged."""
    folder = Path(folder)
    config = read_config(folder)
    ema = _read_weights(folder / WEIGHTS_FILE)
    state = load_training_state(folder)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise KuosanError(f"{folder / STATE_FILE}: no step recorded")
    return ResumePoint(folder, config, state, ema)


def latest_resumable(run: Path, warn=None) -> ResumePoint | None:
    """The newest checkpoint of ``run`` whose config, weights and training state all load; damaged ones are
    skipped with a call to ``warn(message)``. None when the run has none."""
    for folder in reversed(checkpoint_folders(run)):
        try:
            return read_resume_point(folder)
        except KuosanError as e:
            if warn is not None:
                warn(f"skipping damaged checkpoint {folder.name}: {e}")
    return None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise KuosanError(f"{path}: unreadable weights ({e})") from None


def load_training_state(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a damaged file to the user
        raise KuosanError(f"{path}: unreadable training state ({e.__class__.__name__})") from None
