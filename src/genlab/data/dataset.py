"""One value for an image dataset: tensors, so a subset, a flip or a label change is one op."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from genlab.errors import GenlabError
from genlab.seeding import fixed


@dataclass(frozen=True)
class ImageDataset:
    images: torch.Tensor  # (N, H, W, C) uint8
    labels: torch.Tensor  # (N,) int64
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise GenlabError(
                f"images must be (N, H, W, C) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise GenlabError(
                f"labels must be ({len(self.images)},) int64, got {tuple(self.labels.shape)} {self.labels.dtype}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise GenlabError(f"labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor) -> ImageDataset:
        return replace(self, images=self.images[index], labels=self.labels[index])

    def with_labels(self, labels: torch.Tensor) -> ImageDataset:
        return replace(self, labels=labels)

    def with_images(self, images: torch.Tensor) -> ImageDataset:
        return replace(self, images=images)


@dataclass(frozen=True)
class Splits:
    """A train split and a test split with the same classes."""

    train: ImageDataset
    test: ImageDataset
    name: str  # what was loaded: "digits", "cifar10", or the image folder's path

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise GenlabError(f"{self.name}: train and test have different classes")
        if self.train.shape != self.test.shape:
            raise GenlabError(
                f"{self.name}: train images are {self.train.shape}, test images {self.test.shape}"
            )


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, H, W, C) uint8 images scaled to [0, 1], in float64."""
    x = images.reshape(-1, images.shape[-1]).to(torch.float64) / 255.0
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-8)
    return mean.tolist(), std.tolist()


def take_subset(dataset: ImageDataset, n: int | None) -> ImageDataset:
    """``n`` images drawn without replacement by a generator shared by every run
    (``seeding.fixed``), so runs with different training seeds share the same subset; ``None``
    keeps everything."""
    if n is None:
        return dataset
    if not 1 <= n <= len(dataset):
        raise GenlabError(f"--train-subset {n}: must be between 1 and {len(dataset)}")
    index = torch.randperm(len(dataset), generator=fixed("train_subset"))[:n]
    return dataset.subset(index.sort().values)
