"""Label noise: each training label, with probability p, replaced by a random class.

``uniform`` (the report's definition, y_i ~ U{0..K-1} with probability p) may draw the true class
again, so the expected fraction of changed labels is p (1 - 1/K); ``incorrect`` draws only from
the other K - 1 classes, so exactly the resampled labels change (expected fraction p).

Every random number is drawn for every image whatever p is, so with one generator seed the
images resampled at p are a subset of those resampled at any p' > p (noise levels are nested).
"""

from __future__ import annotations

import torch

from genlab.errors import GenlabError

NOISE_MODES = ("uniform", "incorrect")


def check_noise(p: float, mode: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise GenlabError(f"--label-noise {p}: must lie in [0, 1]")
    if mode not in NOISE_MODES:
        raise GenlabError(f"--label-noise-mode {mode!r}: not one of {', '.join(NOISE_MODES)}")


def corrupt_labels(
    labels: torch.Tensor,  # (N,) int64
    p: float,
    num_classes: int,
    mode: str = "uniform",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(new_labels, changed)``: the corrupted labels and the (N,) bool mask of those that differ."""
    check_noise(p, mode)
    if mode == "incorrect" and num_classes < 2:
        raise GenlabError("--label-noise-mode incorrect needs at least 2 classes")
    n = len(labels)
    resample = torch.rand(n, generator=generator) < p  # rand < 1 always, < 0 never: p=1, p=0 exact
    if mode == "uniform":
        draw = torch.randint(num_classes, (n,), generator=generator)
    else:  # a shift by 1..K-1 lands on every other class with equal probability, never on y
        draw = (
            labels.cpu() + torch.randint(1, max(num_classes, 2), (n,), generator=generator)
        ) % num_classes
    new = torch.where(resample, draw, labels.cpu()).to(labels.device)
    return new, new != labels
