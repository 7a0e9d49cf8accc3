"""Training: the loop, EMA and the run folder it writes."""

from kuosan.train.trainer import train

__all__ = ["train"]
