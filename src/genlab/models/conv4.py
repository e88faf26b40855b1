"""Conv-4: the 5-layer CNN of Nakkiran et al., "Deep Double Descent" (2019), as in the report.

Four blocks, block i = Conv2d(k, padding k//2, bias) -> BatchNorm2d -> ReLU -> MaxPool(m_i) with
widths c, 2c, 4c, 8c and pool sizes 1, 2, 2, 8, then flatten and Linear(8c, K). A 32x32 input
goes 32 -> 32 -> 16 -> 8 -> 1. With k = 3 and K = 10: 6,666 parameters at c = 4 and 1,558,026 at
c = 64. The last pool takes the maximum over whatever spatial size is left (a global max pool),
which is MaxPool(8) exactly for 32x32 inputs and lets other sizes through.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.errors import GenlabError
from genlab.models.batchnorm import BatchNorm2d

POOLS = (1, 2, 2)  # then a global max pool


def check_architecture(width: int, kernel: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise GenlabError(f"--width {width}: must be an integer >= 1")
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise GenlabError(
            f"--kernel {kernel}: must be odd (padding k//2 keeps the size only for odd k)"
        )


class Conv4(nn.Module):
    def __init__(
        self, width: int = 64, kernel: int = 3, num_classes: int = 10, in_channels: int = 3
    ):
        super().__init__()
        check_architecture(width, kernel)
        widths = (width, 2 * width, 4 * width, 8 * width)
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(widths):
            # The report's block is conv -> BN -> ReLU -> pool. ReLU is monotone, so max-pooling
            # first gives the same outputs and the same gradients while ReLU touches 4x (or, at
            # the global pool, 64x) fewer values; a pool of size 1 is no layer at all. Both
            # matter at small widths, where these memory-bound passes cost as much as the convs.
            pool = nn.MaxPool2d(POOLS[i]) if i < len(POOLS) else nn.AdaptiveMaxPool2d(1)
            layers += [
                nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=True),
                BatchNorm2d(c_out),
                *([] if i < len(POOLS) and POOLS[i] == 1 else [pool]),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)
        self.width, self.kernel = width, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) float
        return self.classifier(self.features(x).flatten(1))


def report_layout(model: Conv4) -> nn.Sequential:
    """``model``'s own modules in the report's literal block order, conv -> BN -> ReLU ->
    MaxPool(1, 2, 2, 8): the network as it is usually written (benchmarks/ train it as the naive
    reference; tests check that Conv-4's reordering computes exactly the same function)."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    layers: list[nn.Module] = []
    for conv, norm, pool in zip(convs, norms, (*POOLS, 8), strict=True):
        layers += [conv, norm, nn.ReLU(), nn.MaxPool2d(pool)]
    return nn.Sequential(*layers, nn.Flatten(), model.classifier)


def conv4_param_count(
    width: int, kernel: int = 3, num_classes: int = 10, in_channels: int = 3
) -> int:
    """The closed form: sum over blocks of (c_in c_out k^2 + c_out) conv + 2 c_out BatchNorm,
    plus the classifier's 8c K + K."""
    widths = (width, 2 * width, 4 * width, 8 * width)
    total, c_in = 0, in_channels
    for c_out in widths:
        total += c_in * c_out * kernel**2 + c_out + 2 * c_out
        c_in = c_out
    return total + widths[-1] * num_classes + num_classes


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
