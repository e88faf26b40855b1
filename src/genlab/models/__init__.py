"""Models: Conv-4 of width c and kernel k, and its group-equivariant variants."""

from __future__ import annotations

from torch import nn

from genlab.errors import GenlabError
from genlab.models.conv4 import Conv4, conv4_param_count, count_params
from genlab.models.equivariant import (
    GROUPS,
    EquivariantConv4,
    GroupAverage,
    equivariant_param_count,
    matched_width,
)

MODELS = ("conv4", *GROUPS)

__all__ = [
    "INVARIANCES",
    "apply_invariance",
    "GROUPS",
    "MODELS",
    "Conv4",
    "EquivariantConv4",
    "GroupAverage",
    "conv4_param_count",
    "count_params",
    "equivariant_param_count",
    "make_model",
    "matched_width",
    "param_count",
]


def make_model(
    name: str, width: int, kernel: int, num_classes: int, in_channels: int = 3
) -> nn.Module:
    if name == "conv4":
        return Conv4(width, kernel, num_classes, in_channels)
    if name in GROUPS:
        return EquivariantConv4(GROUPS[name], width, kernel, num_classes, in_channels, name)
    raise GenlabError(f"--model {name!r}: no such model (valid: {', '.join(MODELS)})")


def param_count(
    name: str, width: int, kernel: int = 3, num_classes: int = 10, in_channels: int = 3
) -> int:
    """The closed-form parameter count of ``make_model(name, ...)``."""
    if name in GROUPS:
        return equivariant_param_count(len(GROUPS[name]), width, kernel, num_classes, in_channels)
    if name == "conv4":
        return conv4_param_count(width, kernel, num_classes, in_channels)
    raise GenlabError(f"--model {name!r}: no such model (valid: {', '.join(MODELS)})")


INVARIANCES = ("none", "average")


def apply_invariance(model: nn.Module, invariance: str) -> nn.Module:
    """``average``: wrap ``model`` to average its logits over {identity, vflip} (2x the cost)."""
    if invariance == "none":
        return model
    if invariance == "average":
        return GroupAverage(model, GROUPS["conv4-vflip"])
    raise GenlabError(f"--invariance {invariance!r}: not one of {', '.join(INVARIANCES)}")
