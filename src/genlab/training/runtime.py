"""The runtime: where and how a command computes, resolved once where the command starts.

Device, ``torch.compile``, threads, logging and TensorBoard change how a run is computed or
shown, not what it is: they are not config fields, they are not in a run's identity hash, and a
run started on one device resumes on another. ``env.json`` records them. The arithmetic
(``precision``) changes the numbers, so config.json records it too and a run folder is finished
or resumed only in the arithmetic it was trained in (``runs.Run.open``); it is checked rather
than named because a folder is named before its device is known (a launcher's node resolves
``auto``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from genlab.errors import GenlabError
from genlab.training.device import configure_threads, resolve_device
from genlab.training.engine import cuda_graphs_enabled, resolve_precision

LogFn = Callable[[str], None]


def _silent(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # resolved: "fp32" or "bf16" (autocast)
    compile: bool = False  # torch.compile each model in place
    threads: int = 1  # PyTorch intra-op threads of the process
    log: LogFn = print  # progress and messages (silent with quiet)
    quiet: bool = False
    tensorboard: bool = False  # also write per-epoch scalars as TensorBoard events

    @classmethod
    def resolve(
        cls,
        *,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        threads: int | None = None,
        quiet: bool = False,
        tensorboard: bool = False,
        log: LogFn = print,
    ) -> Runtime:
        """Check and resolve the settings: ``device`` auto/cpu/cuda[:N], ``precision``
        auto/fp32/bf16, ``threads`` None = GENLAB_THREADS or one per physical core."""
        if threads is not None and threads < 1:
            raise GenlabError(f"--threads {threads}: must be >= 1")
        dev = resolve_device(device)
        return cls(
            dev,
            resolve_precision(precision, dev),
            compile,
            configure_threads(threads),
            _silent if quiet else log,
            quiet,
            tensorboard,
        )

    def environment(self) -> dict[str, object]:
        """The runtime's part of env.json."""
        return {
            "device": str(self.device),
            "precision": self.precision,
            "compile": self.compile,
            "cuda_graphs": cuda_graphs_enabled(self.device),  # where the step allows (engine)
        }
