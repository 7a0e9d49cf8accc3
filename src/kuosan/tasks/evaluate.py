"""Offline evaluation of digit models: Fréchet distance and KID on the features of kuosan's own digit
classifier (shipped in the package, nothing downloaded), and the classifier's accuracy on class-conditional
samples ("does a 7 come out as a 7?").

- Fréchet distance (Heusel et al. 2017): ‖μ₁ − μ₂‖² + tr(C₁ + C₂ − 2 (C₁^½ C₂ C₁^½)^½), in float64 with
  symmetric square roots (eigh), so it is exact for the sample moments.
- KID (Bińkowski et al. 2018): the unbiased MMD² estimator with the kernel k(x, y) = (xᵀy / d + 1)³. The
  kernel is scale-sensitive, so ``score_digits`` first divides all features by the RMS of the real ones
  (Inception features, for which the kernel was designed, have xᵀy/d of order 1; ours would not).

Both are biased or noisy for small sets; compare numbers from sets of the same sizes. ``evaluate_digits``
reports the model against the 2,000 held-out digits and, as the yardstick, two disjoint halves of those
digits against each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from kuosan.errors import KuosanError

CLASSIFIER = "digit-classifier"


def _sqrtm_psd(c: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, D] and b [M, D]."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    c_a, c_b = torch.cov(a.T), torch.cov(b.T)
    s = _sqrtm_psd(c_a)
    cross = torch.linalg.eigvalsh(s @ c_b @ s).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(c_a) + torch.trace(c_b) - 2 * cross)


def kernel_inception_distance(a: Tensor, b: Tensor) -> float:
    """Unbiased MMD² between feature sets a [N, D] and b [M, D] with the cubic polynomial kernel."""
    a, b = a.double(), b.double()
    d = a.shape[1]

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        raise ValueError("KID needs at least two samples in each set")
    return float((kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
                 + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1)) - 2 * kab.mean())


def classifier_dir() -> Path:
    return Path(str(resources.files("kuosan").joinpath("models", CLASSIFIER)))


def load_classifier(folder: str | Path | None = None):
    """The shipped digit classifier (eval mode), with ``.card`` (its JSON card)."""
    from safetensors.torch import load_file

    from kuosan.nets.classifier import DigitClassifier

    folder = Path(folder) if folder is not None else classifier_dir()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise KuosanError(f"{folder}: no digit classifier here (model.safetensors missing)")
    net = DigitClassifier()
    net.load_state_dict(load_file(weights))
    net.card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").is_file() else {}
    return net.eval().requires_grad_(False)


@torch.no_grad()
def features_and_predictions(classifier, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Features [N, 128] and predicted classes [N] of images [N, 1, H, W] in [-1, 1]."""
    feats, preds = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.float())
        feats.append(f)
        preds.append(classifier.head(f).argmax(1))
    return torch.cat(feats), torch.cat(preds)


@dataclass
class DigitScores:
    n: int
    fd: float               # generated (n) vs all 2,000 held-out digits
    kid: float
    fd_half: float          # first min(n, 1000) generated vs held-out half B (1,000)
    fd_reference: float     # held-out half A vs half B (1,000 each): the yardstick for fd_half
    kid_reference: float
    accuracy: float | None  # classifier accuracy on conditional samples (None if unconditional)


def real_digit_features(classifier) -> tuple[Tensor, Tensor]:
    from kuosan.data.folder import digits_split

    images, labels = digits_split("test")
    x = torch.from_numpy(images).float()[:, None] / 127.5 - 1
    return features_and_predictions(classifier, x)[0], torch.from_numpy(labels)


def score_digits(samples: Tensor, labels: Tensor | None, classifier=None) -> DigitScores:
    """Score generated digits [N, 1, 28, 28] in [-1, 1] (with the labels they were asked for, if any)."""
    classifier = classifier or load_classifier()
    real, _ = real_digit_features(classifier)
    fake, pred = features_and_predictions(classifier, samples)
    half_a, half_b = real[0::2], real[1::2]
    k = min(len(fake), len(half_b))
    acc = float((pred == labels.to(pred.device)).float().mean()) if labels is not None else None
    rms = real.double().pow(2).mean().sqrt()
    return DigitScores(n=len(fake), fd=frechet_distance(fake, real),
                       kid=kernel_inception_distance(fake / rms, real / rms),
                       fd_half=frechet_distance(fake[:k], half_b), fd_reference=frechet_distance(half_a, half_b),
                       kid_reference=kernel_inception_distance(half_a / rms, half_b / rms), accuracy=acc)
