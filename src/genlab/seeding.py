"""Seeds derived from a run's seed: one independent stream per purpose, nothing global.

``generator(seed, epoch)`` orders the data of one epoch; ``stream(seed, "train_labels")`` draws a
run's label noise; ``init(seed)`` initializes a model; ``fixed(name)`` is a draw shared by every
run (a subset, a probe); ``seed_from(...)`` gives an integer seed. Each is a hash
(numpy's SeedSequence) of its keys, so streams never overlap and resuming needs no saved state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

STREAMS = {"train_labels": 1, "test_labels": 2, "images": 3}
_STREAM_SALT = 7919  # keeps (seed, stream) apart from (seed, epoch) keys


def seed_from(*keys: int) -> int:
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))  # 63 bits: what torch.manual_seed accepts


def generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_from(*keys))


def stream(seed: int, name: str) -> torch.Generator:
    """The generator of one named random draw of a run (see STREAMS)."""
    return generator(seed, _STREAM_SALT, STREAMS[name])


# Draws that are the same for every run whatever its seed, so runs compare on the same images:
# the training subset (--train-subset), the test subset (--test-subset), the invariance probe,
# the similarity probe.
FIXED = {"train_subset": 0, "test_subset": 1, "invariance_probe": 0, "similarity_probe": 2}


def fixed(name: str) -> torch.Generator:
    """The generator of a draw shared by every run (see FIXED)."""
    return torch.Generator().manual_seed(FIXED[name])


def dataset(seed: int) -> torch.Generator:
    """The generator of a made-up dataset (``synthetic``): started from its own seed, not a
    run's, so every run of one dataset sees the same images."""
    return torch.Generator().manual_seed(seed)


@contextmanager
def init(seed: int) -> Iterator[None]:
    """A model's initialization: inside, PyTorch's global generator (which ``nn.Module``
    initializers draw from) starts from ``seed``; outside, it is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def spawn(seed: int, count: int) -> list[np.random.SeedSequence]:
    """``count`` independent numpy seed sequences spawned from ``seed`` (linear regression)."""
    return np.random.SeedSequence(seed).spawn(count)


def numpy_generator(*keys: int) -> np.random.Generator:
    """A numpy generator keyed by integers, e.g. (seed, purpose, p, k)."""
    return np.random.default_rng([int(k) for k in keys])
