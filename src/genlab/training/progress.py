"""Per-epoch progress: a tqdm bar on a terminal, one plain line per epoch otherwise.

The bar (run, epoch n/N, loss, accuracies, time left) is drawn only when the log goes to
``print`` and both stdout and stderr are terminals; a redirected or captured output (CI logs,
``> file``, tests) gets the plain lines instead, and a silenced log (``--quiet``) gets nothing.
With a ``tensorboard`` folder (``--tensorboard``; needs the optional ``tensorboard`` package) the
record's scalars, under the keys of metrics.jsonl, are also written as TensorBoard events.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from genlab.errors import GenlabError

LogFn = Callable[[str], None]


class EpochProgress:
    """Call ``update(record, line)`` once per epoch and ``close()`` (or use ``with``) at the end."""

    def __init__(
        self,
        name: str,
        epochs: int,
        done: int,
        log: LogFn,
        *,
        bar: bool | None = None,
        file: IO[str] | None = None,
        tensorboard: Path | None = None,
    ) -> None:
        self.log = log
        self.bar = None
        self.writer = None
        if tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise GenlabError(
                    "--tensorboard needs the tensorboard package: pip install 'genlab[tensorboard]'"
                ) from None
            self.writer = SummaryWriter(str(tensorboard))
        if bar is None:
            bar = log is print and sys.stdout.isatty() and sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(
                total=epochs,
                initial=done,
                desc=name,
                unit="epoch",
                file=file,
                dynamic_ncols=True,
                bar_format="{desc}: epoch {n_fmt}/{total_fmt} |{bar:12}| "
                "[{elapsed}<{remaining}{postfix}]",
            )

    def update(self, record: dict[str, Any], line: str) -> None:
        if self.writer is not None:
            for key, value in record.items():
                if (
                    key != "epoch"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()
        if self.bar is None:
            self.log(line)
            return
        accs = [
            f"{k.removesuffix('_acc')} {v:.3f}"
            for k, v in record.items()
            if k.endswith("_acc") and k != "train_acc" and isinstance(v, float)
        ]
        self.bar.set_postfix_str(
            f"loss {record['train_loss']:.4f} acc {record['train_acc']:.3f} " + " ".join(accs),
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
