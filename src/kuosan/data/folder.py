"""Datasets: a recursive image folder and the built-in digits, both giving [C, H, W] tensors in [-1, 1]."""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from kuosan.data.io import IMAGE_SUFFIXES, load_image, pil_to_tensor
from kuosan.errors import KuosanError


@dataclass
class Example:
    image: Tensor   # [C, H, W] in [-1, 1]
    label: int      # class index, or -1 when the dataset has no classes
    failed: int = -1  # the index asked for when it failed to decode and this is the next image instead
    guide: Tensor | None = None  # a clean guide plane [G, H, W] for a guided prior (see RandomCrops)


def resize_and_crop(im: Image.Image, size: int, offset: tuple[float, float] | None = None) -> Image.Image:
    """Resize so the shorter side is ``size`` (Lanczos), then crop size×size: centred, or at ``offset``
    given as fractions in [0, 1] of the free room along x and y (random crops)."""
    w, h = im.size
    scale = size / min(w, h)
    if scale != 1:
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
    w, h = im.size
    fx, fy = offset if offset is not None else (0.5, 0.5)
    left, top = round((w - size) * fx), round((h - size) * fy)
    return im.crop((left, top, left + size, top + size))


# Larger images are skipped rather than decoded: a small file can declare gigapixels (a decompression bomb).
MAX_PIXELS = 89_478_485   # Pillow's own warning threshold (Image.MAX_IMAGE_PIXELS)

_CONVERSIONS = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer",
                "F": "floating-point", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr", "1": "1-bit",
                "RGBA": "alpha", "LA": "alpha", "PA": "alpha"}


@dataclass
class ScanReport:
    """What a folder scan found: files skipped (by reason) and files that will be converted (by kind)."""

    root: Path
    usable: int = 0
    skipped: dict[str, list[Path]] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, path: Path) -> None:
        self.skipped.setdefault(reason, []).append(path)

    @property
    def skipped_count(self) -> int:
        return sum(map(len, self.skipped.values()))

    def summary(self) -> str | None:
        """One line for the user, or None when every file is a plain 8-bit gray/RGB image."""
        parts = self.details()
        return f"{self.root}: {self.usable} usable image(s); " + "; ".join(parts) if parts else None

    def details(self) -> list[str]:
        parts = []
        if self.skipped:
            first = min(p for paths in self.skipped.values() for p in paths)
            parts.append(f"skipped {self.skipped_count} (" + ", ".join(
                f"{len(v)} {k}" for k, v in sorted(self.skipped.items())) + f"; first: {first.name})")
        if self.converted:
            parts.append(f"converted {sum(self.converted.values())} (" + ", ".join(
                f"{v} {k}" for k, v in sorted(self.converted.items())) + ")")
        return parts


def scan_image(path: Path, report: ScanReport) -> bool:
    """Check one file cheaply (header and, for PNG, chunk checksums; no decoding) and record what it needs."""
    try:
        if path.stat().st_size == 0:
            report.skip("empty", path)
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    report.skip(f"over {MAX_PIXELS / 1e6:.0f} megapixels", path)
                    return False
                mode, transparent = im.mode, "transparency" in im.info
                im.verify()
    except Image.DecompressionBombError:
        report.skip(f"over {MAX_PIXELS / 1e6:.0f} megapixels", path)
        return False
    except UnidentifiedImageError:
        report.skip("not an image", path)
        return False
    except (OSError, ValueError, SyntaxError, struct.error, EOFError):
        report.skip("damaged", path)
        return False
    kind = _CONVERSIONS.get(mode) or ("alpha" if transparent else None)
    if kind:
        report.converted[kind] = report.converted.get(kind, 0) + 1
    return True


class ImageFolder:
    """All images under ``root`` (recursive). With ``class_labels=True`` the first-level subfolder names
    are the classes (sorted); images directly in ``root`` are then not allowed.

    Opening scans every file cheaply: empty, non-image, damaged and oversized files are skipped and counted
    (``report``, ``summary``), 16-bit/palette/CMYK/alpha images are counted and converted when loaded. A file
    that still fails to decode during training is replaced by the next image; ``failed`` lists such files.
    """

    def __init__(self, root: str | os.PathLike, size: int, channels: int = 3, class_labels: bool = False,
                 random_crop: bool = False, progress: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise KuosanError(f"{root}: not a folder")
        self.size, self.channels, self.random_crop = size, channels, random_crop
        candidates = sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        self.report = ScanReport(self.root)
        files = []
        from tqdm.auto import tqdm

        for p in tqdm(candidates, desc="checking images", unit="file", disable=not progress or len(candidates) < 2000,
                      leave=False):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                self.report.skip("not an image by name", p)
            elif scan_image(p, self.report):
                files.append(p)
        self.files = files
        self.report.usable = len(files)
        if not self.files:
            raise KuosanError(f"{root}: no usable images (looked for {', '.join(IMAGE_SUFFIXES)})"
                              + "".join(f"; {part}" for part in self.report.details()))
        if class_labels:
            top = [p.relative_to(self.root).parts for p in self.files]
            loose = [p for p, parts in zip(self.files, top, strict=True) if len(parts) < 2]
            if loose:
                raise KuosanError(f"{loose[0]}: with class labels every image must sit in a class subfolder")
            self.class_names = sorted({parts[0] for parts in top})
            index = {name: k for k, name in enumerate(self.class_names)}
            self.labels = [index[parts[0]] for parts in top]
        else:
            self.class_names = []
            self.labels = [-1] * len(self.files)
        self.failed: set[Path] = set()

    @property
    def summary(self) -> str | None:
        return self.report.summary()

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int, rng: np.random.Generator | None = None) -> Example:
        offset = tuple(rng.random(2)) if (self.random_crop and rng is not None) else None
        for k in range(len(self.files)):
            candidate = (index + k) % len(self.files)
            try:
                im = load_image(self.files[candidate], self.channels)
            except KuosanError:
                self.failed.add(self.files[candidate])
                continue
            example = Example(pil_to_tensor(resize_and_crop(im, self.size, offset)), self.labels[candidate])
            example.failed = index if k else -1
            return example
        raise KuosanError(f"{self.root}: none of the {len(self.files)} images decodes")


DIGIT_NAMES = [str(d) for d in range(10)]


class ArrayDataset:
    """Images already in memory: uint8 [N, H, W] or [N, H, W, C], resized to ``size`` if needed."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, class_names: list[str], size: int,
                 channels: int):
        x = torch.from_numpy(images).float() / 127.5 - 1
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False)
        self.images = x.contiguous()
        self.labels = [int(v) for v in labels] if labels is not None else [-1] * len(x)
        self.class_names = class_names
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int, rng: np.random.Generator | None = None) -> Example:
        return Example(self.images[index], self.labels[index])


def builtin_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled MNIST 10k subset (uint8 images 28×28, 0 = background; labels 0–9)."""
    with resources.files("kuosan.data.builtin").joinpath("mnist-10k.npz").open("rb") as f:
        data = np.load(f)
        return data["images"], data["labels"]


DIGITS_HELD_OUT = 2000


def digits_split(part: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the bundled digits: ``numpy.random.default_rng(0).permutation(10000)``; its first
    2,000 indices are the held-out ``test`` part (never trained on by ``builtin:digits``), the rest ``train``.
    ``all`` is the whole file."""
    images, labels = builtin_digits_arrays()
    if part == "all":
        return images, labels
    order = np.random.default_rng(0).permutation(len(images))
    index = np.sort(order[:DIGITS_HELD_OUT] if part == "test" else order[DIGITS_HELD_OUT:])
    return images[index], labels[index]


BUILTIN_DATASETS = {"digits": "all", "digits-train": "train", "digits-test": "test"}


def open_dataset(source: str, size: int | None = None, channels: int | None = None,
                 class_labels: bool = False, random_crop: bool = False):
    """A folder path, or ``builtin:digits`` (all 10k), ``builtin:digits-train`` (8k) or
    ``builtin:digits-test`` (the 2k held out). ``size``/``channels`` default to the data's own (28, 1) for
    the built-in sets and to 64 / 3 for folders."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise KuosanError(f"unknown built-in dataset {source!r}; available: "
                              + ", ".join(f"builtin:{n}" for n in BUILTIN_DATASETS))
        images, labels = digits_split(BUILTIN_DATASETS[name])
        return ArrayDataset(images, labels if class_labels else None, DIGIT_NAMES if class_labels else [],
                            size or 28, channels or 1)
    return ImageFolder(source, size or 64, channels or 3, class_labels, random_crop)
