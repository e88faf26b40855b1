"""Helpers that build small files in the official formats for tests."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np


def cifar_batch(n: int, seed: int) -> dict:
    """A batch in the official format: what pickle.load(f, encoding='bytes') returns."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar_archive(
    path: Path, n_per_batch: int = 6, extra: dict[str, bytes] | None = None
) -> Path:
    """A miniature cifar-10-python.tar.gz: same layout and format, a few images per batch."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with tarfile.open(path, "w:gz") as tar:
        members = {
            f"cifar-10-batches-py/{name}": pickle.dumps(cifar_batch(n_per_batch, i), protocol=2)
            for i, name in enumerate(names)
        }
        members.update(extra or {})
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path
