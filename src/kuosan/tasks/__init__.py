"""Tasks that wrap a denoiser: generation (restoration tasks come later)."""

from kuosan.tasks.generate import generate

__all__ = ["generate"]
