"""Zhang et al.'s (2017) randomizations of the images, on whole (N, H, W, C) uint8 batches.

``shuffled-pixels``: one permutation of the H*W pixel positions, the same for every image (train
and test); ``random-pixels``: a different permutation for every image; ``gaussian``: images
replaced by noise with the given per-channel mean and std (in [0, 1] units), rounded and clipped
to uint8 like every other image. A pixel keeps its C channel values together when it moves.
"""

from __future__ import annotations

import torch

from genlab.errors import GenlabError

RANDOMIZATIONS = ("labels", "shuffled-pixels", "random-pixels", "gaussian")  # "labels": images kept


def pixel_permutation(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One permutation of the H*W positions of ``images`` (N, H, W, C)."""
    return torch.randperm(images.shape[1] * images.shape[2], generator=generator)


def permute_pixels(images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Move pixel ``perm[j]`` of every image to position j: (N, H, W, C) -> (N, H, W, C)."""
    n, h, w, c = images.shape
    return images.reshape(n, h * w, c)[:, perm.to(images.device)].reshape(n, h, w, c)


def random_pixels(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A different permutation of the pixel positions for every image."""
    n, h, w, c = images.shape
    perms = torch.rand(n, h * w, generator=generator).argsort(1).to(images.device)  # (N, H*W)
    flat = images.reshape(n, h * w, c)
    return flat.gather(1, perms[:, :, None].expand(n, h * w, c)).reshape(n, h, w, c)


def gaussian_images(
    n: int,
    shape: tuple[int, int, int],
    mean: list[float],
    std: list[float],
    generator: torch.Generator,
) -> torch.Tensor:
    """``n`` images of ``shape`` (H, W, C) drawn from N(mean_c, std_c^2) per channel, as uint8."""
    h, w, c = shape
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    x = torch.randn(n, h, w, c, generator=generator) * s + m  # (N, H, W, C) in [0, 1] units
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def randomize_images(
    train: torch.Tensor,  # (N, H, W, C) uint8
    test: torch.Tensor,  # (M, H, W, C) uint8
    kind: str,
    generator: torch.Generator,
    mean: list[float],
    std: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply randomization ``kind`` to the train and the test images alike."""
    if kind == "labels":
        return train, test
    if kind == "shuffled-pixels":
        perm = pixel_permutation(train, generator)
        return permute_pixels(train, perm), permute_pixels(test, perm)
    if kind == "random-pixels":
        return random_pixels(train, generator), random_pixels(test, generator)
    if kind == "gaussian":
        shape = tuple(train.shape[1:])
        return (
            gaussian_images(len(train), shape, mean, std, generator),
            gaussian_images(len(test), shape, mean, std, generator),
        )
    raise GenlabError(f"--randomize {kind!r}: not one of {', '.join(RANDOMIZATIONS)}")
