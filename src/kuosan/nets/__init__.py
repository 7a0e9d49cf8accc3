"""Networks: the UNet, its typed config and presets."""

from kuosan.nets.unet import PRESETS, UNet, UNetConfig, count_parameters, preset

__all__ = ["PRESETS", "UNet", "UNetConfig", "count_parameters", "preset"]
