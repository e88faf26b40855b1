"""Datasets as tensors (digits, CIFAR-10, image folders, synthetic) and whole-batch transforms."""

from __future__ import annotations

from pathlib import Path

from genlab.data.cifar10 import load_cifar10, load_image_folder
from genlab.data.dataset import ImageDataset, Splits, channel_stats, take_subset
from genlab.data.digits import load_digits
from genlab.data.labels import NOISE_MODES, corrupt_labels
from genlab.data.randomize import RANDOMIZATIONS, randomize_images
from genlab.data.synthetic import make_synthetic
from genlab.errors import GenlabError

DATASETS = ("digits", "cifar10", "synthetic")

__all__ = [
    "DATASETS",
    "NOISE_MODES",
    "RANDOMIZATIONS",
    "ImageDataset",
    "Splits",
    "channel_stats",
    "corrupt_labels",
    "load_dataset",
    "load_cifar10",
    "load_digits",
    "load_image_folder",
    "make_synthetic",
    "randomize_images",
    "take_subset",
]


def load_dataset(name: str, data_dir: str | Path | None = None, *, quiet: bool = False) -> Splits:
    """``name`` is one of DATASETS or the path of an image folder (with train/ and test/)."""
    if name == "digits":
        return load_digits()
    if name == "synthetic":
        return make_synthetic()
    if name == "cifar10":
        return load_cifar10(Path(data_dir) if data_dir else None, quiet=quiet)
    if "/" in name or "\\" in name or Path(name).is_dir():
        return load_image_folder(Path(name), quiet=quiet)
    raise GenlabError(
        f"--dataset {name!r}: no such dataset (valid: {', '.join(DATASETS)}, or the path of an image folder)"
    )
