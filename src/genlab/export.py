"""A run's per-epoch records (metrics.jsonl) for other tools: TensorBoard events and CSV tables.

One mapping from a record to named scalars, ``scalars``, serves both the events written while
a run trains (``--tensorboard``, through ``Board``) and those written afterwards (``genlab
export tensorboard``), so the tags of a run are the same however its events were written:

    train_loss, train_acc              train/loss, train/acc
    test_acc, test_vflip_loss, ...     test/acc, test_vflip/loss (one folder per view)
    test_per_class_acc = [..]          per_class/test/<class name> (one folder for them all)
    seconds, eval_seconds              time/seconds, time/eval_seconds
    gd_test_mse, sgd_norm (linreg)     gd/test_mse, sgd/norm
    remaining (pruning, per round)     lottery/remaining, random/remaining (by the record's kind)

The step is the record's epoch (a pruning round's records: its round). Bookkeeping (cohort,
group_size, lanes, stopped) is not a curve and is left out. The run's settings (config.json's
config, lists written as text) are its hparams, with its accuracies and losses as their metrics.
Linreg has curves that are not per epoch, written beside its records with their own step:

    ridge.json (the ridge path)        ridge/test_mse, ridge/norm, ...  step: index along lambda
    double_descent.json (--sweep-p)    double_descent/test_mse_mean, ...  step: p (gamma = p / n)

``genlab export csv RUNS... --out FILE``: one row per run per record, columns ``run`` (the
folder's name), ``path``, ``study``, the settings that differ between the runs, ``epoch``, then
the record's scalars (per-class accuracies one column each, ``test_per_class_acc_<class>``; a
pruning run's round lines have no epoch but a ``round`` and a ``kind``). The ridge path and the
p sweep are not per epoch and stay in their JSON files.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genlab.aggregate import varying_keys
from genlab.errors import GenlabError
from genlab.fileio import atomic_write, read_json, temp_prefix, write_error
from genlab.runs import (
    CONFIG,
    DATASET,
    DOUBLE_DESCENT,
    RIDGE,
    TENSORBOARD,
    Run,
    find_runs,
    read_record,
)

BOOKKEEPING = frozenset({"epoch", "round", "kind", "cohort", "group_size", "lanes", "stopped"})
PER_CLASS = "_per_class_acc"
# linreg's curves that are not per epoch: file, tag folder, the key giving the step (None: the
# index), the keys that are curves
CURVES = (
    (RIDGE, "ridge", None, ("train_mse", "test_mse", "norm", "dist_to_min_norm")),
    (DOUBLE_DESCENT, "double_descent", "p", ("test_mse_mean", "test_mse_std", "test_mse_theory")),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _classes(run_dir: Path) -> list[str] | None:
    try:
        classes = read_json(Path(run_dir) / DATASET).get("classes")
    except (GenlabError, AttributeError):
        return None
    return [str(c) for c in classes] if isinstance(classes, list) else None


def tag(key: str, kind: str | None = None) -> str:
    """The TensorBoard tag of a scalar of metrics.jsonl (module docstring)."""
    if kind is not None:
        return f"{kind}/{key}"
    if key in ("seconds", "eval_seconds"):
        return f"time/{key}"
    for metric in ("acc", "loss"):
        if key.endswith(f"_{metric}"):
            return f"{key.removesuffix(f'_{metric}')}/{metric}"
    head, _, rest = key.partition("_")
    return f"{head}/{rest}" if rest else key


def step_of(record: dict[str, Any]) -> int:
    """A record's step: its epoch, or a pruning round's number."""
    step = record.get("epoch", record.get("round"))
    if not isinstance(step, int) or isinstance(step, bool):
        raise ValueError(f"a record with neither an epoch nor a round: {sorted(record)[:6]}")
    return step


def scalars(record: dict[str, Any], classes: list[str] | None = None) -> dict[str, float]:
    """The record's curves by tag: every number but the bookkeeping, per-class lists one per
    class (named by ``classes``, else by index); a missing value (None, an empty view) is left
    out."""
    kind = record.get("kind") if isinstance(record.get("kind"), str) else None
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in BOOKKEEPING:
            continue
        if key.endswith(PER_CLASS) and isinstance(value, list):
            view = key.removesuffix(PER_CLASS)
            for k, v in enumerate(value):
                if _is_number(v):
                    name = classes[k] if classes and k < len(classes) else str(k)
                    out[f"per_class/{view}/{name}"] = float(v)
        elif _is_number(value):
            out[tag(key, kind)] = float(value)
    return out


def curves(run_dir: Path) -> list[tuple[str, float, int]]:
    """(tag, value, step) of the run's curves that are not per epoch (``CURVES``; linreg's
    ridge path and p sweep), from the files it has; a missing value (infinite theory) is left
    out."""
    out: list[tuple[str, float, int]] = []
    for name, folder, by, keys in CURVES:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        record = read_json(path)
        try:
            steps = list(range(len(record[keys[0]]))) if by is None else record[by]
            for key in keys:
                for step, value in zip(steps, record.get(key) or [], strict=False):
                    if _is_number(value) and math.isfinite(value):
                        out.append((f"{folder}/{key}", float(value), int(step)))
        except (KeyError, TypeError, ValueError) as e:
            raise GenlabError(
                f"{path}: not a curve genlab wrote ({type(e).__name__}: {e})"
            ) from None
    return out


def hparams_of(run_dir: Path) -> dict[str, Any]:
    """The run's settings as TensorBoard hparams (numbers, text and booleans; a list or a
    missing value as text), with the study's name."""
    record = read_record(Path(run_dir) / CONFIG)
    out: dict[str, Any] = {"study": str(record.get("study"))}
    for key, value in sorted((record.get("config") or {}).items()):
        out[key] = value if isinstance(value, int | float | str | bool) else json.dumps(value)
    return out


def require_tensorboard() -> Any:
    """torch's SummaryWriter, or the one-line error naming the optional package (asked before
    training by what writes its events only at the end: linreg)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GenlabError(
            "--tensorboard needs the tensorboard package: pip install 'genlab[tensorboard]'"
        ) from None
    return SummaryWriter


class Board:
    """TensorBoard events of one run folder, written into ``folder`` (default: the run's
    tensorboard/). Its hparams go in with the first record, whose accuracy and loss tags are
    their metrics. Needs the optional tensorboard package."""

    def __init__(self, run_dir: Path, folder: Path | None = None) -> None:
        writer = require_tensorboard()
        self.run_dir = Path(run_dir)
        self.classes = _classes(self.run_dir)
        self.writer = writer(str(folder or self.run_dir / TENSORBOARD))
        self.hparams_written = False

    def add(self, record: dict[str, Any]) -> None:
        values = scalars(record, self.classes)
        if not self.hparams_written:
            self._hparams([t for t in values if t.endswith(("/acc", "/loss", "_mse"))])
        step = step_of(record)
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def _hparams(self, metrics: list[str]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # SummaryWriter.add_hparams would write them into a sub-folder of its own, apart from
        # the run's curves; these three summaries in the run's own file keep them together
        for summary in hparams(hparams_of(self.run_dir), dict.fromkeys(metrics, 0.0)):
            self.writer.file_writer.add_summary(summary)
        self.hparams_written = True

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_events(
    run_dir: Path, records: Iterable[dict[str, Any]], folder: Path | None = None
) -> None:
    """The events of ``records`` (a run's metrics.jsonl) and of its other curves (``curves``)
    into ``folder`` (default: the run's tensorboard/)."""
    with Board(run_dir, folder) as board:
        for record in records:
            board.add(record)
        for name, value, step in curves(run_dir):
            board.writer.add_scalar(name, value, step)


def replace_events(run_dir: Path) -> Path:
    """The run's events, from its files, as its tensorboard/ folder (an existing one replaced):
    ``genlab export tensorboard``, and linreg, which writes its records once at the end rather
    than epoch by epoch. Written beside the folder and renamed into place, so a cut write leaves
    the earlier folder or none, never half of one; returns the folder."""
    run_dir = Path(run_dir)
    records = _records(run_dir)
    target = run_dir / TENSORBOARD
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=run_dir))
    except OSError as e:
        raise write_error(target, e) from None
    try:
        write_events(run_dir, records, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except OSError as e:
        raise write_error(target, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _runs(paths: Iterable[Path]) -> list[Path]:
    """The run folders at or below ``paths`` (each must exist and hold one)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise GenlabError(f"{p}: no such file or folder")
    runs = find_runs(paths)
    if not runs:
        raise GenlabError(f"{' '.join(map(str, paths))}: no run folders found")
    return runs


def _records(run_dir: Path) -> list[dict[str, Any]]:
    records = Run(run_dir, "resume").metrics()
    for r in records:
        try:
            step_of(r)
        except ValueError as e:
            raise GenlabError(f"{run_dir}/metrics.jsonl: {e}") from None
    return records


def write_tensorboard(paths: Iterable[Path], *, force: bool) -> list[Path]:
    """TensorBoard events of every run folder at or below ``paths``, each into its
    tensorboard/ folder (an existing one is replaced only with ``force``); returns the folders.
    Each is written beside it first and renamed into place, so a cut export leaves none."""
    runs = _runs(paths)
    if not force:
        there = [r / TENSORBOARD for r in runs if (r / TENSORBOARD).exists()]
        if there:
            more = f" and {len(there) - 1} more" if len(there) > 1 else ""
            raise GenlabError(
                f"{there[0]}{more}: exists already (events written while it trained, or an "
                "earlier export); use --force to write them again"
            )
    for run_dir in runs:  # every record, setting and curve readable before any folder is written
        _records(run_dir)
        hparams_of(run_dir)
        curves(run_dir)
    return [replace_events(run_dir) for run_dir in runs]


def csv_rows(paths: Iterable[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """The CSV table's columns and rows (module docstring)."""
    runs = _runs(paths)
    configs = [read_record(r / CONFIG) for r in runs]
    settings = varying_keys([c.get("config") or {} for c in configs]) if len(runs) > 1 else []
    fixed = ["run", "path", "study", *settings, "epoch"]
    rows: list[dict[str, Any]] = []
    metric_columns: dict[str, None] = {}
    for run_dir, record in zip(runs, configs, strict=True):
        classes = _classes(run_dir)
        for r in _records(run_dir):
            row: dict[str, Any] = {
                "run": run_dir.name,
                "path": str(run_dir),
                "study": record.get("study"),
                "epoch": r.get("epoch"),
            }
            for key in settings:
                value = (record.get("config") or {}).get(key)
                row[key] = (
                    value if isinstance(value, int | float | str | None) else json.dumps(value)
                )
            for key, value in r.items():
                if key in ("cohort", "epoch"):  # a cohort is a list of run names: no cell
                    continue
                if key.endswith(PER_CLASS) and isinstance(value, list):
                    for k, v in enumerate(value):
                        name = classes[k] if classes and k < len(classes) else str(k)
                        row[f"{key}_{name}"] = v
                elif isinstance(value, int | float | str | bool) or value is None:
                    row[key] = value
            metric_columns.update(dict.fromkeys(c for c in row if c not in fixed))
            rows.append(row)
    return [*fixed, *metric_columns], rows


def write_csv(paths: Iterable[Path], out: Path, *, force: bool) -> int:
    """One CSV table of every record of every run folder at or below ``paths`` into ``out``
    (replaced only with ``force``; written atomically); returns the number of rows. An empty
    cell is a value the run did not record (None, or a column of another run)."""
    out = Path(out)
    if out.is_dir():
        raise GenlabError(f"--out {out}: is a folder; give the CSV file's path")
    if out.exists() and not out.is_file():
        raise GenlabError(f"--out {out}: not a regular file (a device, a pipe?); give a file")
    if out.exists() and not force:
        raise GenlabError(f"--out {out}: exists already; use --force to replace it")
    columns, rows = csv_rows(paths)

    def write(f: Any) -> None:
        table = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        table.writeheader()
        for row in rows:
            table.writerow({k: "" if v is None else _cell(v) for k, v in row.items()})

    atomic_write(out, write, mode="w")
    return len(rows)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # every digit: the table reads back to the same floats
    return value


__all__ = [
    "Board",
    "csv_rows",
    "curves",
    "hparams_of",
    "replace_events",
    "require_tensorboard",
    "scalars",
    "step_of",
    "tag",
    "write_csv",
    "write_tensorboard",
]
