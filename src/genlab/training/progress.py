"""Progress: a tqdm bar on a terminal that moves inside each epoch, one plain line per epoch
otherwise.

The bar (epoch n/N, the bar, time left, batch i/n of this epoch, then the last epoch's loss, its
accuracy on each view and on the training set, and the run's name) is drawn only when the log goes to ``print`` and both stdout and stderr are
terminals; a redirected or captured output (CI logs, ``> file``, tests) gets the plain lines
instead, and a silenced log (``--quiet``) gets nothing. Within an epoch the bar is told of each
step (``batch``) on the host, where the training loop already is: nothing is read back from the
device for it, so the metrics it shows are those of the last finished epoch, and it is drawn at
most a few times a second. Its pieces are cut to the terminal's width, the most useful first
(at 80 columns: epoch, bar, time left, batch, loss, test and flipped-test accuracy).

With ``tensorboard`` (the run folder; ``--tensorboard``, needs the optional tensorboard package)
each record is also written as TensorBoard events under the tags of ``genlab.export``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

LogFn = Callable[[str], None]
REDRAW_S = 0.25  # the bar is drawn at most this often inside an epoch (the last step always)


class EpochProgress:
    """Call ``batch(done, total)`` after each training step, ``update(record, line)`` once per
    epoch and ``close()`` (or use ``with``) at the end."""

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
        columns: int | None = None,
    ) -> None:
        self.log = log
        self.name = name
        self.bar: Any = None
        self.board: Any = None
        self.epochs, self.done = epochs, done
        self.metrics: list[str] = []  # the last epoch's, e.g. "loss 0.312", "acc 0.901"
        self.drawn = 0.0
        if tensorboard is not None:
            from genlab.export import Board

            self.board = Board(tensorboard)
        if bar is None:
            bar = log is print and sys.stdout.isatty() and sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            size = shutil.get_terminal_size((80, 24))  # $COLUMNS first, then the terminal
            self.columns = columns or size.columns
            if self.columns < 40:  # a terminal that reports no size: draw for 80 columns
                self.columns = 80
            self.bar = tqdm(
                total=epochs,
                initial=done,
                file=file,
                ncols=self.columns,
                # a terminal of 0 rows (a pseudo-terminal never sized: `script`, `docker run -t`)
                # makes tqdm hide its only bar; give it rows when it reports none
                nrows=size.lines if size.lines > 1 else 24,
                bar_format="{desc} |{bar:5}| ETA {remaining}{postfix}",
            )
            self._draw(0, None)

    def _draw(self, batch: int, batches: int | None) -> None:
        """The bar at ``done`` epochs and ``batch`` of ``batches`` steps into the next one."""
        if batches:
            self.bar.n = self.done + batch / batches  # the time left moves inside an epoch too
        else:
            self.bar.n = self.done
        self.bar.set_description_str(
            f"epoch {min(self.done + 1, self.epochs)}/{self.epochs}", refresh=False
        )  # before the room is measured: it takes the description's length
        pieces = [*([f"batch {batch}/{batches}"] if batches else []), *self.metrics, self.name]
        # "epoch 12/80 |#####| ETA 1:23:45, ": what precedes the pieces, time left in hours
        room = self.columns - (len(self.bar.desc) + 22)
        shown: list[str] = []
        for piece in pieces:
            if sum(len(p) + 1 for p in shown) + len(piece) > room:
                break
            shown.append(piece)
        # the pieces are one postfix: tqdm puts ", " before it (counted in the 22 above)
        self.bar.set_postfix_str(" ".join(shown), refresh=False)
        self.bar.refresh()

    def batch(self, done: int, total: int) -> None:
        """``done`` of ``total`` training steps of the current epoch have run."""
        if self.bar is None:
            return
        now = time.monotonic()
        if done < total and now - self.drawn < REDRAW_S:
            return
        self.drawn = now
        self._draw(done, total)

    def update(self, record: dict[str, Any], line: str) -> None:
        if self.board is not None:
            self.board.add(record)
            self.board.flush()
        if self.bar is None:
            self.log(line)
            return
        self.done = record["epoch"]
        # the loss, then each view's accuracy (test_vflip as "vflip"), then the train accuracy
        views = [
            f"{k.removesuffix('_acc').removeprefix('test_')} {v:.3f}"
            for k, v in record.items()
            if k.endswith("_acc") and k != "train_acc" and isinstance(v, float)
        ]
        self.metrics = [f"loss {record['train_loss']:.3g}", *views]
        self.metrics.append(f"train {record['train_acc']:.3f}")
        self._draw(0, None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.board is not None:
            self.board.close()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
