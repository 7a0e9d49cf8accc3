"""kuosan (扩散): diffusion models for images in σ-space.

Python API: ``kuosan.train.train`` a model, ``kuosan.load`` it as a denoiser, ``kuosan.generate`` images;
restore photos with ``kuosan.denoise``, ``kuosan.upscale``, ``kuosan.deblur``, ``kuosan.inpaint``
(``kuosan.estimate_noise``, ``kuosan.estimate_noise_curve`` for a camera's signal-dependent noise).
Heavy modules are imported on first use so that ``import kuosan`` and ``kuosan --help`` stay fast.
"""

from __future__ import annotations

from kuosan.errors import KuosanError

__version__ = "0.1.0"

_LAZY = {
    "load": ("kuosan.checkpoint", "load"),
    "generate": ("kuosan.tasks.generate", "generate"),
    "RunConfig": ("kuosan.config", "RunConfig"),
    "denoise": ("kuosan.tasks.restore", "denoise"),
    "upscale": ("kuosan.tasks.restore", "upscale"),
    "deblur": ("kuosan.tasks.restore", "deblur"),
    "inpaint": ("kuosan.tasks.restore", "inpaint"),
    "estimate_noise": ("kuosan.tasks.restore", "estimate_noise"),
    "estimate_noise_curve": ("kuosan.tasks.restore", "estimate_noise_curve"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'kuosan' has no attribute {name!r}")


__all__ = ["KuosanError", "__version__", *_LAZY]
