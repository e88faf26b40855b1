"""Transforms of whole batches of images, each one tensor operation.

Images are (N, H, W, C) uint8 here (height is axis 1) and (N, C, H, W) float inside a model
(height is axis 2): ``vflip`` takes the axis so both layouts share one definition.
"""

from __future__ import annotations

import torch


def vflip(images: torch.Tensor, height_dim: int = 1) -> torch.Tensor:
    """Upside down: row i becomes row H-1-i."""
    return images.flip(height_dim)


def double_with_vflip(
    images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The report's augmentation: every image plus its flipped copy (2N images)."""
    return torch.cat([images, vflip(images)]), torch.cat([labels, labels])


def random_vflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each (N, H, W, C) image with probability 1/2, drawn from ``generator``."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], vflip(images), images)
