"""The embedded default: scikit-learn's bundled handwritten digits, works offline.

1,797 8x8 images with 17 grey levels, 10 classes, upscaled bilinearly to 32x32 and repeated to 3
channels so every model sees CIFAR-10's shape. The train/test split is stratified and fixed
(random_state=0, 25% test: 1,347 train, 450 test), independent of the run's seed, so every run
sees the same test set.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genlab.data.dataset import ImageDataset, Splits

DIGIT_CLASSES = tuple(str(d) for d in range(10))
SPLIT_SEED = 0
TEST_FRACTION = 0.25


def load_digits(size: int = 32) -> Splits:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).repeat(1, 1, 1, 3)
    images = images.contiguous()  # (N, 32, 32, 3) uint8
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        stratify=bunch.target,
        random_state=SPLIT_SEED,
    )
    full = ImageDataset(images, labels, DIGIT_CLASSES)
    return Splits(
        full.subset(torch.from_numpy(train_idx)), full.subset(torch.from_numpy(test_idx)), "digits"
    )
