"""Resizing whole (N, H, W, C) uint8 batches (kept out of transforms.py: a change of the data,
not an augmentation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, size, size, C) uint8, by area averaging (bilinear to upscale)."""
    if images.shape[1] == images.shape[2] == size:
        return images
    x = images.permute(0, 3, 1, 2).float()
    mode = "area" if size <= images.shape[1] else "bilinear"
    x = F.interpolate(x, size=(size, size), mode=mode)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
