"""Networks: the UNet, its typed config and presets."""

from kuosan.nets.unet import PRESETS, UNet, UNetConfig, count_parameters, preset, set_gradient_checkpointing

__all__ = ["PRESETS", "UNet", "UNetConfig", "count_parameters", "preset", "set_gradient_checkpointing"]
