"""Starting a network from another one's weights across a change of channels (gray prior → colour prior, or a
prior → the same prior with guide planes)."""

from __future__ import annotations

import torch
from torch import Tensor

from kuosan.errors import KuosanError

GUIDE_KEY = "net.guide_stem.weight"      # the guide planes' first convolution (UNetConfig.guide_channels)


def inflate_to_colour(gray: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """``gray``'s weights reshaped for ``target`` (the colour network's state dict): the first convolution
    sees the mean of R, G, B (its weights split in three), the last one writes the gray output to every
    channel, the rest is copied. Under EDM preconditioning the colour net then starts as exactly the gray
    prior run on the channel mean, with the skip path c_skip·x carrying the colour; training has only the
    chroma left to learn. Weights that already fit (gray → gray) come back unchanged. A gray prior's guide
    convolution (``add_guide_inputs``) is left out when the colour net has none: it sees the chroma itself."""
    if GUIDE_KEY in gray and GUIDE_KEY not in target:
        gray = {k: v for k, v in gray.items() if k != GUIDE_KEY}
    if gray.keys() != target.keys():
        missing = sorted(set(target) ^ set(gray))[:3]
        raise KuosanError(f"the starting weights are for another network (keys differ: {', '.join(missing)})")
    out = {}
    for key, t in gray.items():
        want = target[key].shape
        if t.shape == want:
            out[key] = t
        elif t.ndim >= 2 and t.shape[1] == 1 and want[1] == 3 and t.shape[0] == want[0] and t.shape[2:] == want[2:]:
            out[key] = t.repeat(1, 3, *([1] * (t.ndim - 2))) / 3     # input convolution
        elif t.shape[0] == 1 and want[0] == 3 and t.shape[1:] == want[1:]:
            out[key] = t.repeat(3, *([1] * (t.ndim - 1)))            # output convolution and its bias
        else:
            raise KuosanError(f"{key}: the starting weights have shape {tuple(t.shape)}, this network wants "
                              f"{tuple(want)}")
    return out


def add_guide_inputs(weights: dict[str, Tensor], target: dict[str, Tensor], key: str = GUIDE_KEY) \
        -> dict[str, Tensor]:
    """``weights`` for ``target``, the same network with guide planes (``UNetConfig.guide_channels``): the
    guide's first convolution starts at zero, so the net starts computing exactly what it computed before,
    whatever the guide. Weights that already have it come back unchanged."""
    if key not in target:
        raise KuosanError(f"the network has no guide planes ({key}); nothing to add")
    if key in weights:
        return dict(weights)
    missing = sorted(set(target) - set(weights) - {key})[:3] + sorted(set(weights) - set(target))[:3]
    if missing:
        raise KuosanError(f"the starting weights are for another network (keys differ: {', '.join(missing)})")
    return {**weights, key: torch.zeros_like(target[key])}
