"""Image IO at the edges of kuosan: files ↔ PIL ↔ tensors in [-1, 1], atomic writes, grids."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from kuosan.errors import KuosanError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def load_image(path: str | os.PathLike, channels: int | None = None) -> Image.Image:
    """Open an image file, apply its EXIF orientation and convert it to L (1 channel) or RGB (3 channels).

    With ``channels=None`` gray-like modes become L and everything else RGB. 16-bit images are scaled to
    8 bits; transparent pixels are composited onto white.
    """
    return to_mode(open_image(path), channels)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as it is (mode, bit depth and alpha kept), EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise KuosanError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise KuosanError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None
    if im.mode == "CMYK" or im.mode == "YCbCr":
        im = im.convert("RGB")
    return im


def to_mode(im: Image.Image, channels: int | None) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr / 257.0 if arr.max() > 255 else arr, 0, 255).astype(np.uint8), "L")
    if channels is None:
        channels = 1 if im.mode in ("L", "1", "LA") or (im.mode == "P" and _palette_is_gray(im)) else 3
    if channels not in (1, 3):
        raise KuosanError(f"channels must be 1 or 3, got {channels}")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        # Transparent pixels hold arbitrary colours; show them as they are displayed, on white.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("L" if channels == 1 else "RGB")


def _palette_is_gray(im: Image.Image) -> bool:
    palette = np.asarray(im.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())


def pil_to_tensor(im: Image.Image) -> Tensor:
    """PIL L/RGB → float tensor [C, H, W] in [-1, 1]."""
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr)) / 127.5 - 1


def tensor_to_uint8(x: Tensor) -> np.ndarray:
    """[C, H, W] or [B, C, H, W] in [-1, 1] → uint8 array, channels last (H×W for one channel)."""
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    arr = np.moveaxis(arr, -3, -1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def tensor_to_pil(x: Tensor) -> Image.Image:
    return Image.fromarray(tensor_to_uint8(x))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``, so a crash never leaves a half-written file."""
    path = Path(path)
    if not path.parent.exists():
        raise KuosanError(f"{path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())     # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_image(image: Image.Image | Tensor, path: str | os.PathLike) -> Path:
    """Save atomically; the format follows the suffix (PNG recommended)."""
    if isinstance(image, Tensor):
        image = tensor_to_pil(image)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise KuosanError(f"{path}: unknown image format; use a .png file name")
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def side_by_side(images: list[Image.Image], gap: int = 8) -> Image.Image:
    """Images in a row on white, ``gap`` pixels apart, as 8-bit RGB (16-bit gray is scaled to 8 bits)."""
    images = [Image.eval(im, lambda v: v / 257).convert("RGB") if im.mode.startswith("I") else im.convert("RGB")
              for im in images]
    panel = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1),
                              max(im.height for im in images)), "white")
    left = 0
    for im in images:
        panel.paste(im, (left, 0))
        left += im.width + gap
    return panel


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile [B, C, H, W] into one [C, H', W'] image, ``nrow`` images per row (default: near square)."""
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = images.new_full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for k in range(b):
        r, col = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[k]
    return grid


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int = 1) -> Path:
    """Save a grid of [B, C, H, W] images in [-1, 1] as one PNG, optionally enlarged ``scale``× (nearest)."""
    im = tensor_to_pil(make_grid(images.detach().float().cpu(), nrow))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return save_image(im, path)
