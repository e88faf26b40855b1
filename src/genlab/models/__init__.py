"""Models: Conv-4 of width c and kernel k."""

from __future__ import annotations

from torch import nn

from genlab.errors import GenlabError
from genlab.models.conv4 import Conv4, conv4_param_count, count_params

MODELS = ("conv4",)

__all__ = ["MODELS", "Conv4", "conv4_param_count", "count_params", "make_model"]


def make_model(
    name: str, width: int, kernel: int, num_classes: int, in_channels: int = 3
) -> nn.Module:
    if name == "conv4":
        return Conv4(width, kernel, num_classes, in_channels)
    raise GenlabError(f"--model {name!r}: no such model (valid: {', '.join(MODELS)})")
