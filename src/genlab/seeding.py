"""Seeds derived from a run's seed: one independent stream per purpose, nothing global.

``generator(seed, epoch)`` orders the data of one epoch; ``stream(seed, "train_labels")`` draws a
run's label noise; ``seed_from(...)`` gives an integer for ``torch.manual_seed``. Each is a hash
(numpy's SeedSequence) of its keys, so streams never overlap and resuming needs no saved state.
"""

from __future__ import annotations

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
