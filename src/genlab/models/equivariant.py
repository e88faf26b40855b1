"""Conv-4 made equivariant to a group of square symmetries (Cohen & Welling, "Group Equivariant
Convolutional Networks", 2016), in plain PyTorch, and a wrapper that averages any model's logits
over the group.

``conv4-vflip`` uses the group {identity, vflip}; ``conv4-d4`` the 8 symmetries of the square.
Every feature map carries a group axis: (N, C, G, H, W) float, channel c at group element g. The
group acts on it by moving pixels *and* permuting the group axis:

    (h . F)[:, c, g] = h(F[:, c, h^-1 g])                                   (regular representation)

- The lifting convolution (first block) correlates the image with the |G| transformed copies
  g(W) of one filter W: output g is conv(x, g(W)), so conv(h x, g W) = h conv(x, h^-1 g W).
- A group convolution correlates with, for output element g, the filter whose group slices are
  permuted and whose pixels are moved: W_g[:, :, u] = g(W[:, :, g^-1 u]). One weight tensor
  (C_out, C_in, G, k, k) is trained (stored as (C_out, C_in G, k, k)); the |G| copies are made from it in every forward pass.
- BatchNorm3d over (N, C, G, H, W) shares each channel's statistics across its |G| copies (and
  its affine parameters), so the normalization commutes with the group action.
- 2x2 max pools commute with the action only when the height and width are even (a window maps
  onto a window); the kernel must be odd with padding k//2 and stride 1 (the padded border is then
  symmetric). Anything else is refused with the reason.
- After the last block: a global max pool over pixels, then a max over the group: the features
  fed to the classifier are invariant, so the logits are invariant to every element of G.

Cost: at the same width c a group layer has |G| times Conv-4's weights and |G|^2 times its
multiply-adds (|G| for the lifting layer). ``matched_width`` gives the width whose parameter
count is closest to Conv-4's.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.data.transforms import D4_GROUP, VFLIP_GROUP, check_group, compose, inverse, view
from genlab.errors import GenlabError
from genlab.models.conv4 import POOLS, check_architecture, conv4_param_count

GROUPS = {"conv4-vflip": VFLIP_GROUP, "conv4-d4": D4_GROUP}
_SPATIAL = (-2, -1)


def transform_features(name: str, features: torch.Tensor, group: tuple[str, ...]) -> torch.Tensor:
    """The action of the view ``name`` on (N, C, G, H, W) features: move pixels, permute G."""
    if name not in group:
        raise GenlabError(f"view {name!r} is not in the model's group ({', '.join(group)})")
    h_inv = inverse(name)
    perm = [group.index(compose(h_inv, g)) for g in group]  # new slot g holds old h^-1 g
    return view(name, features[:, :, perm], _SPATIAL)


class LiftingConv(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, G, H, W): one filter bank, correlated in |G| poses."""

    def __init__(self, c_in: int, c_out: int, kernel: int, group: tuple[str, ...]):
        super().__init__()
        self.group, self.padding = group, kernel // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(c_out))
        _init(self.weight, self.bias, c_in * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_out = self.weight.shape[0]
        w = torch.stack([view(g, self.weight, _SPATIAL) for g in self.group], 1)  # (C_out, G, ...)
        y = nn.functional.conv2d(x, w.flatten(0, 1), padding=self.padding)
        return y.unflatten(1, (c_out, len(self.group))) + self.bias[:, None, None, None]


class GroupConv(nn.Module):
    """(N, C_in, G, H, W) -> (N, C_out, G, H, W), equivariant to the group's regular action."""

    def __init__(self, c_in: int, c_out: int, kernel: int, group: tuple[str, ...]):
        super().__init__()
        self.group, self.padding = group, kernel // 2
        g = len(group)
        # (C_out, C_in G, k, k): stored 4-D so the model moves to channels_last like Conv-4
        self.weight = nn.Parameter(torch.empty(c_out, c_in * g, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(c_out))
        _init(self.weight, self.bias, c_in * g * kernel * kernel)
        # perms[g][u] = index of g^-1 u: the group slice that output pose g reads at input pose u
        perms = [[group.index(compose(inverse(a), u)) for u in group] for a in group]
        self.register_buffer("perms", torch.tensor(perms), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = len(self.group)
        weight = self.weight.unflatten(1, (-1, g))  # (C_out, C_in, G, k, k)
        c_out = weight.shape[0]
        w = torch.stack(
            [view(a, weight[:, :, self.perms[i]], _SPATIAL) for i, a in enumerate(self.group)], 1
        )  # (C_out, G_out, C_in, G_in, k, k)
        y = nn.functional.conv2d(
            x.flatten(1, 2), w.flatten(0, 1).flatten(1, 2), padding=self.padding
        )
        return y.unflatten(1, (c_out, g)) + self.bias[:, None, None, None]


def _init(weight: torch.Tensor, bias: torch.Tensor, fan_in: int) -> None:
    """nn.Conv2d's default initialization for the same fan-in."""
    bound = 1.0 / fan_in**0.5
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


class SpatialPool(nn.Module):
    """Max pool over pixels of (N, C, G, H, W); size 0 is the global pool. Refuses odd sizes."""

    def __init__(self, size: int, name: str):
        super().__init__()
        self.size, self.name = size, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return x
        n, c, g = x.shape[:3]
        if self.size == 0:  # adaptive_max_pool2d's backward keeps indices, not its output, so the
            # in-place ReLU after it is safe (amax's backward would need its unmodified output)
            return nn.functional.adaptive_max_pool2d(x.flatten(1, 2), 1).unflatten(1, (c, g))
        h, w = x.shape[-2:]
        if h % self.size or w % self.size:
            raise GenlabError(
                f"--model {self.name}: a {h}x{w} feature map reaches a {self.size}x{self.size} max "
                "pool; an odd size breaks the symmetry (flipped, the pool windows straddle other "
                "pixels), so the image height and width must be divisible by 4"
            )
        y = nn.functional.max_pool2d(x.flatten(1, 2), self.size)
        return y.unflatten(1, (c, g))


class EquivariantConv4(nn.Module):
    """Conv-4 with group convolutions: widths c, 2c, 4c, 8c channels, each with |G| poses."""

    def __init__(
        self,
        group: tuple[str, ...],
        width: int = 16,
        kernel: int = 3,
        num_classes: int = 10,
        in_channels: int = 3,
        name: str = "conv4-equivariant",
    ):
        super().__init__()
        check_architecture(width, kernel)
        check_group(group)
        self.group, self.width, self.kernel = group, width, kernel
        widths = (width, 2 * width, 4 * width, 8 * width)
        blocks, c_in = [], in_channels
        for i, c_out in enumerate(widths):
            conv = (LiftingConv if i == 0 else GroupConv)(c_in, c_out, kernel, group)
            pool = SpatialPool(POOLS[i] if i < len(POOLS) else 0, name)
            # pool before ReLU, as Conv-4 does: ReLU is monotone, so the outputs are the same
            blocks.append(nn.Sequential(conv, nn.BatchNorm3d(c_out), pool, nn.ReLU(inplace=True)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def block_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output, (N, C, G, H, W); the group acts as in ``transform_features``."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) float
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.amax(dim=(2, 3, 4)))  # max over the group and the 1x1 pixels


def equivariant_param_count(
    group_size: int, width: int, kernel: int = 3, num_classes: int = 10, in_channels: int = 3
) -> int:
    """Lifting layer c_in c k^2 + c, group layers c_in |G| c_out k^2 + c_out, BatchNorm 2 c_out,
    classifier 8c K + K: Conv-4's count with every input width after the first times |G|."""
    widths = (width, 2 * width, 4 * width, 8 * width)
    total, c_in = 0, in_channels
    for i, c_out in enumerate(widths):
        total += c_in * (group_size if i else 1) * c_out * kernel**2 + 3 * c_out
        c_in = c_out
    return total + widths[-1] * num_classes + num_classes


def matched_width(
    model: str, width: int, kernel: int = 3, num_classes: int = 10, in_channels: int = 3
) -> int:
    """The width at which ``model`` has the parameter count closest to Conv-4's at ``width``."""
    if model not in GROUPS:
        raise GenlabError(f"--model {model!r}: no group to match (valid: {', '.join(GROUPS)})")
    target = conv4_param_count(width, kernel, num_classes, in_channels)
    g = len(GROUPS[model])
    return min(
        range(1, width + 1),
        key=lambda c: (
            abs(equivariant_param_count(g, c, kernel, num_classes, in_channels) - target),
            c,
        ),
    )


class GroupAverage(nn.Module):
    """Averages ``model``'s logits over the views of ``group``: invariant by construction, at
    |G| times the cost. The |G| logits of one image are sorted before they are summed, so the sum
    is taken in the same order whichever view of the image came in: exactly invariant (views
    only move pixels, so view(a, view(b, x)) and view(compose(a, b), x) are the same tensor)."""

    def __init__(self, model: nn.Module, group: tuple[str, ...]):
        super().__init__()
        check_group(group)
        self.model, self.group = model, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) float
        n = len(x)
        views = torch.cat([view(g, x, _SPATIAL) for g in self.group])  # (G N, C, H, W), contiguous
        logits = self.model(views).unflatten(0, (len(self.group), n))  # (G, N, K)
        return logits.sort(0).values.mean(0)
