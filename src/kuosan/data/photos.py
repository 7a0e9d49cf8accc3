"""The photographs behind ``builtin:photo``: those that ship with scikit-image and scikit-learn.

scikit-image and scikit-learn are needed only to rebuild the prior or run the restoration benchmark
(``pip install kuosan[bench]``); nothing here downloads anything. The split is fixed: the held-out photos
are never seen in training and are what ``benchmarks/restore.py`` reports on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kuosan.data.folder import Example
from kuosan.diffusion.color import OPPONENT
from kuosan.errors import KuosanError

# Natural and near-natural photographs that scikit-image bundles (no download needed), and the two
# scikit-learn sample photos. Synthetic or binary images (phantom, checkerboard, blobs) are left out.
TRAIN_RGB = ("chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina",
             "sklearn:china", "sklearn:flower")
TRAIN_GRAY = ("brick", "grass", "gravel", "moon", "coins", "page", "text", "cell", "clock")
HELD_OUT_RGB = ("astronaut", "coffee")
HELD_OUT_GRAY = ("camera",)


def load_photo(name: str) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] by name: ``skimage.data.NAME`` or ``sklearn:NAME`` (china, flower)."""
    try:
        if name.startswith("sklearn:"):
            from sklearn.datasets import load_sample_image

            return load_sample_image(name.split(":", 1)[1] + ".jpg")
        import skimage.data

        image = getattr(skimage.data, name)()
    except ImportError as e:
        raise KuosanError(f"the photo set needs scikit-image and scikit-learn (pip install kuosan[bench]): {e}") \
            from None
    if isinstance(image, tuple):      # stereo pairs: take the left view
        image = image[0]
    if image.ndim == 3:
        image = image[..., :3]        # drop alpha
    return np.ascontiguousarray(image)


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's convert("L")."""
    if image.ndim == 2:
        return image
    luma = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)


def training_photos(channels: int, keep_colour: bool = False) -> list[np.ndarray]:
    """The training photos for a gray (1) or colour (3) prior. The gray prior also sees the colour photos
    in gray (ITU-R 601 luma), or kept in colour with ``keep_colour``, for ``RandomCrops(gray_mix=True)``."""
    photos = [load_photo(n) for n in TRAIN_RGB]
    if channels == 3:
        return photos
    return [p if keep_colour else to_gray(p) for p in photos] + [load_photo(n) for n in TRAIN_GRAY]


def held_out_photos(channels: int) -> dict[str, np.ndarray]:
    """Evaluation photos by name: colour ones, or for gray the gray photo plus the colour ones in gray."""
    if channels == 3:
        return {n: load_photo(n) for n in HELD_OUT_RGB}
    gray = {n: load_photo(n) for n in HELD_OUT_GRAY}
    gray.update({f"{n} (gray)": to_gray(load_photo(n)) for n in HELD_OUT_RGB})
    return gray


_CHROMA = OPPONENT[1:].float()     # the opponent transform's two chroma rows, orthonormal and ⟂ gray


def _scale_contrast(image: torch.Tensor, gain: float) -> torch.Tensor:
    """``image`` with its deviations from its mean scaled by ``gain``."""
    mean = image.mean()
    return mean + gain * (image - mean)


class RandomCrops:
    """Random size×size crops of in-memory photos, for training a fully convolutional prior.

    Each example picks a photo with probability ∝ its area, counting at most ``area_cap`` pixels (so that one
    large photo does not fill most batches: retina alone is 45 % of the colour set's pixels), a scale in
    [min_scale, 1] (downscaling with antialiasing shows the net more structure per pixel and averages away the
    source's own noise and JPEG blocks), a position, and one of the 8 flips/rotations. ``length`` is the
    nominal epoch length.

    Two augmentations widen a set of a few photos (off by default): ``gray_mix`` makes 1-channel crops, each
    colour photo rendered to gray with random channel weights (uniform on the simplex: the red plane of one
    crop, a luma-like mix of the next), so each colour photo gives many gray ones; ``min_contrast`` < 1 scales
    each crop's deviation from its mean by a gain drawn uniformly in [min_contrast, 1] (faint textures at a
    given noise level, which a few high-contrast photos rarely show). ``chroma_mix`` (with ``gray_mix``) renders
    that fraction of the colour crops as a chroma plane instead: a unit-norm channel mix with zero sum, in a
    random direction of the plane orthogonal to gray, the planes ``OpponentColorDenoiser`` hands the gray prior
    beside the luminance one (centred, faint, smooth: nothing like a gray photo). With ``chroma_guide`` each
    chroma crop also carries its clean luminance (the channel mean, with the same contrast gain) as
    ``Example.guide``, which the trainer turns into the denoised guide a guided prior sees (see
    ``kuosan.diffusion.color``).
    """

    def __init__(self, photos: list[np.ndarray], size: int, min_scale: float = 0.5, length: int = 8192,
                 area_cap: int | None = None, gray_mix: bool = False, min_contrast: float = 1.0,
                 chroma_mix: float = 0.0, chroma_guide: bool = False):
        if not photos:
            raise KuosanError("no photos to crop from")
        if not 0 < min_contrast <= 1:
            raise KuosanError(f"min_contrast must be in (0, 1], got {min_contrast}")
        if not 0 <= chroma_mix <= 1:
            raise KuosanError(f"chroma_mix must be in [0, 1], got {chroma_mix}")
        if chroma_mix and not gray_mix:
            raise KuosanError("chroma_mix renders colour photos as gray crops: use it with gray_mix=True")
        if chroma_guide and not chroma_mix:
            raise KuosanError("chroma_guide gives chroma crops their luminance: use it with chroma_mix > 0")
        self.images = []
        for p in photos:
            t = torch.from_numpy(np.array(p, dtype=np.uint8)).float() / 127.5 - 1
            self.images.append(t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous())
        channels = {t.shape[0] for t in self.images}
        if gray_mix:
            channels = {1}
        elif len(channels) != 1:
            raise KuosanError("photos must be all gray or all colour (or gray_mix=True for gray crops of both)")
        self.channels = channels.pop()
        self.gray_mix, self.min_contrast, self.chroma_mix = gray_mix, min_contrast, chroma_mix
        self.chroma_guide = chroma_guide
        self.size, self.min_scale, self.length = size, min_scale, length
        areas = np.array([t.shape[1] * t.shape[2] for t in self.images], dtype=np.float64)
        if area_cap is not None:
            areas = np.minimum(areas, area_cap)
        self.weights = areas / areas.sum()
        self.class_names: list[str] = []

    def __len__(self) -> int:
        return self.length

    def get(self, index: int, rng: np.random.Generator | None = None) -> Example:
        rng = rng if rng is not None else np.random.default_rng(index)
        image = self.images[rng.choice(len(self.images), p=self.weights)]
        _, h, w = image.shape
        largest = min(h, w) / self.size
        scale = rng.uniform(self.min_scale, 1.0) if largest >= 1 / self.min_scale else 1.0
        side = min(math.ceil(self.size / scale), h, w)
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = image[:, top:top + side, left:left + side]
        if side != self.size:
            crop = F.interpolate(crop[None], size=(self.size, self.size), mode="bicubic", antialias=True,
                                 align_corners=False)[0].clamp(-1, 1)
        k = int(rng.integers(0, 8))
        crop = torch.rot90(crop, k % 4, dims=(1, 2))
        if k >= 4:
            crop = crop.flip(-1)
        guide = None
        if self.gray_mix and crop.shape[0] == 3:
            if self.chroma_mix and rng.random() < self.chroma_mix:
                angle = rng.uniform(0, 2 * math.pi)
                weights = math.cos(angle) * _CHROMA[0] + math.sin(angle) * _CHROMA[1]
                if self.chroma_guide:
                    guide = crop.mean(0, keepdim=True)
            else:
                weights = torch.from_numpy(rng.dirichlet(np.ones(3))).float()
            crop = torch.einsum("c,chw->hw", weights, crop)[None]
        if self.min_contrast < 1:
            gain = rng.uniform(self.min_contrast, 1.0)
            crop = _scale_contrast(crop, gain)
            if guide is not None:
                guide = _scale_contrast(guide, gain)
        return Example(crop.contiguous(), -1, guide=guide.contiguous() if guide is not None else None)
