"""An evaluation set with no rows, and classes with no rows in a set: None, never a made-up 0."""

from __future__ import annotations

import torch
from torch import nn

from genlab.training.engine import Normalizer, evaluate_targets
from genlab.training.loop import epoch_line


class _Constant(nn.Module):
    """Predicts class 0 for every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 0] = 1.0
        return logits


def test_empty_mask_gives_none_and_classes_without_rows_give_none():
    images = torch.zeros(6, 2, 2, 3, dtype=torch.uint8)  # (N, H, W, C)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    none = torch.zeros(6, dtype=torch.bool)
    ones = labels == 1
    normalize = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    every, empty, only_ones = evaluate_targets(
        _Constant(), images, [(labels, None), (labels, none), (labels, ones)], normalize, 3
    )
    assert every["acc"] == 0.5 and every["per_class_acc"] == [1.0, 0.0, None]  # no class-2 rows
    assert empty == {"loss": None, "acc": None, "per_class_acc": [None, None, None]}
    assert only_ones["acc"] == 0.0 and only_ones["per_class_acc"] == [None, 0.0, None]
    assert only_ones["loss"] > 0


def test_epoch_line_prints_n_a_for_an_empty_view():
    record = {"epoch": 1, "train_loss": 2.0, "train_acc": 0.25, "seconds": 0.5}
    record |= {"test_acc": 0.125, "train_noisy_acc": None}
    line = epoch_line(record, 3, {"test": None, "train_noisy": None})
    assert "test acc 0.1250" in line and "train_noisy acc n/a" in line
