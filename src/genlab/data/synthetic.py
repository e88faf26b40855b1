"""A small synthetic image dataset for tests: learnable, seeded, and not symmetric under a flip.

Each class is a random smooth template plus a bright bar in its own row of the upper half, so
the classes are separable and a vertical flip moves the evidence (a flipped image looks like no
class seen in training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab import seeding
from genlab.data.dataset import ImageDataset, Splits


def make_synthetic(
    n_train: int = 256,
    n_test: int = 128,
    num_classes: int = 4,
    size: int = 32,
    seed: int = 0,
    noise: float = 0.25,
) -> Splits:
    g = seeding.dataset(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    for k in range(num_classes):  # (K, 3, H, W) in [0, 1]
        row = (k * (size // 2)) // num_classes
        templates[k, :, row : row + 2, :] = 1.0

    def draw(n: int) -> ImageDataset:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        x = templates[labels] + noise * torch.randn(n, 3, size, size, generator=g)
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return ImageDataset(
            images, labels.to(torch.int64), tuple(f"class{k}" for k in range(num_classes))
        )

    return Splits(draw(n_train), draw(n_test), "synthetic")
