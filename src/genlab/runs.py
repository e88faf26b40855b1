"""Run folders: the one module that knows their file names.

A run folder holds::

    config.json     the fully resolved config (written once, when the run starts)
    env.json        genlab version, git commit, library versions, device, threads, seed;
                    each resumption adds an entry under "resumed"
    dataset.json    what the run trained on: sizes, class names, normalization statistics
    metrics.jsonl   one JSON object per epoch, appended and flushed
    checkpoint.pt   model, optimizer, epoch, RNG states (atomic; torch.load(weights_only=True));
                    epoch 0 (the initial weights) is saved when the run starts
    previous.pt     the checkpoint before it (a hard link): a member of a cohort that saved an
                    epoch its cohort-mates did not is rolled back to it on resume; removed
                    when summary.json is written
    checkpoints/    epoch-K.pt: the checkpoints of the epochs given to --keep-checkpoints (by
                    default 0, the initial weights), hard links where the file system has them
    summary.json    written last: its presence marks the run finished
    figures/        the figures; figures/figures.json, written last, lists them (a folder
                    without it was cut while drawing and is drawn again)
    tensorboard/    with --tensorboard (or ``genlab export tensorboard``): the scalars of
                    metrics.jsonl as TensorBoard events, tagged as ``genlab.export`` says
    views.json      accuracy on named views of the test split (flips, rotations), added to by
                    ``genlab eval RUN --views ...``
    invariance.json per-layer equivariance and invariance (cosine, linear CKA) under a view

Every whole-file write is atomic (genlab.fileio). A file that is damaged (does not parse, is not
what it should hold) raises ``Damaged``, one line naming the file and how to recover.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.fileio import (
    atomic_write,
    read_object,
    remove_stale,
    temp_prefix,
    write_error,
    write_json,
)

CONFIG = "config.json"
ENV = "env.json"
DATASET = "dataset.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "previous.pt"
SUMMARY = "summary.json"
VIEW_RESULTS = "views.json"
INVARIANCE = "invariance.json"
LABEL_NOISE = "label_noise.json"  # random labels: which training labels changed, to what
ARRAYS = "arrays.npz"  # linreg: beta_min_norm, beta_gd, beta_sgd, beta_star, eigenvalues
RIDGE = "ridge.json"  # linreg: the ridge path
DOUBLE_DESCENT = "double_descent.json"  # linreg --sweep-p: test MSE against gamma = p / n
ROUNDS = "rounds"  # pruning: rounds/lottery-<r>/, rounds/random-<r>/, run-folder-like rounds
MASK = "mask.pt"  # pruning: in each round's folder, its bool masks by parameter name
INTERPOLATION = "interpolation.json"  # connectivity: error along each pair's path, barriers
CHILDREN = "children"  # connectivity: children/k<k>-c<i>/, run folders spawned from the run
# A sweep folder (runs/<study>/sweep-<hash>/) holds its member run folders and:
SWEEP = "sweep.json"  # the members in order: index, run id, config
AGGREGATE = "aggregate.json"  # members that differ only in seed: mean, std, 95% interval
AGGREGATE_CSV = "aggregate.csv"  # the same as a table
# An analysis folder (runs/analysis/<kind>-<hash>/, genlab analyze) holds:
ANALYSES = "analysis"  # the folder under --out that holds analysis folders
ANALYSIS = "analysis.json"  # what was analysed: the kind, its settings, the runs
SIMILARITY = "similarity.json"  # genlab analyze similarity: the results, written last
CRITICALITY = "criticality.json"  # genlab analyze criticality: the results, written last
FIGURES = "figures"
KEPT = "checkpoints"  # the kept checkpoints: checkpoints/epoch-K.pt
FIGURE_LIST = "figures.json"  # in figures/, written when every figure is drawn
TENSORBOARD = "tensorboard"


# How to recover from a damaged file, by file: what holds a result of training needs the run
# started again; a measurement or a record can go by itself.
RECOVER = "delete the run folder (or use --force) to start the run again"
RECOVER_BY_FILE = {
    SUMMARY: "delete it: the same command then finishes the run again",
    VIEW_RESULTS: "delete it: genlab eval RUN measures the views again",
    INVARIANCE: "delete it: genlab eval RUN measures it again",
    ENV: "delete it to go on (its record of the earlier environments is lost)",
    INTERPOLATION: "delete it and summary.json: the same command then computes the paths again",
}
_OBJECTS = (
    ENV,
    DATASET,
    SUMMARY,
    VIEW_RESULTS,
    INVARIANCE,
    LABEL_NOISE,
    RIDGE,
    DOUBLE_DESCENT,
    INTERPOLATION,
)


class Damaged(GenlabError):
    """A file of a run folder that cannot be used: the message names it and says how to
    recover."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {what}; {RECOVER_BY_FILE.get(self.path.name, RECOVER)}")


def _damaged(e: GenlabError, path: Path) -> Damaged:
    """A read error of ``read_json``/``read_object`` of ``path`` as ``Damaged``."""
    return Damaged(path, str(e).removeprefix(f"{path}: "))


def read_record(path: Path) -> dict[str, Any]:
    """A run's config.json: {"study", "config", "identity"}; ``Damaged`` otherwise."""
    try:
        record = read_object(path)
    except GenlabError as e:
        raise _damaged(e, path) from None
    for key, kind in (("study", str), ("config", dict), ("identity", dict)):
        if not isinstance(record.get(key), kind):
            raise Damaged(path, f"not a run record (no {kind.__name__} {key!r})")
    return record


def read_dataset(
    path: Path, keys: tuple[str, ...] = ("classes", "image_shape", "normalization")
) -> dict[str, Any]:
    """An image run's dataset.json with usable ``keys`` (by default what a trained model is
    rebuilt from: class names, image shape, normalization); ``Damaged`` otherwise."""
    target = Path(path) / DATASET
    try:
        data = read_object(target)
    except GenlabError as e:
        raise _damaged(e, target) from None
    norm = data.get("normalization")
    shape = data.get("image_shape")
    checks = (
        ("classes", isinstance(data.get("classes"), list) and len(data["classes"]) >= 1),
        ("image_shape", isinstance(shape, list) and len(shape) == 3),
        (
            "normalization",
            isinstance(norm, dict)
            and all(isinstance(norm.get(k), list) and len(norm[k]) >= 1 for k in ("mean", "std")),
        ),
    )
    for key, ok in checks:
        if key in keys and not ok:
            raise Damaged(target, f"no usable {key!r}")
    return data


def check_files(path: Path) -> None:
    """Every file of run folder ``path`` that genlab reads holds what it should (the
    checkpoint is checked when it is loaded); the first that does not raises ``Damaged``."""
    path = Path(path)
    record = read_record(path / CONFIG)
    if "model" in record["config"] and (path / DATASET).exists():  # an image-model run
        read_dataset(path, keys=("classes",))  # what its figures and the report need
    for name in _OBJECTS:
        if (path / name).exists() or (path / name).is_symlink():
            try:
                read_object(path / name)
            except GenlabError as e:
                raise _damaged(e, path / name) from None
    Run(path, "resume").metrics()
    if (path / ARRAYS).exists():
        import numpy as np

        try:
            with np.load(path / ARRAYS, allow_pickle=False) as arrays:
                for key in arrays.files:
                    arrays[key]
        except Exception as e:  # noqa: BLE001 - a cut or garbled archive raises many kinds
            raise Damaged(path / ARRAYS, f"unreadable arrays ({type(e).__name__}: {e})") from None


@dataclass
class Run:
    """An open run folder. ``state`` is "new", "resume" or "finished"."""

    path: Path
    state: str

    @classmethod
    def open(cls, path: Path, config: dict[str, Any], *, force: bool = False) -> Run:
        """Open ``path`` for ``config``: start it, resume it, or report it finished.

        An existing folder with a different identity config is refused (``config`` carries the
        identity fields under "identity"); ``force`` deletes the folder and starts again.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise GenlabError(f"{path}: exists and is not a folder")
        if force and path.exists():
            shutil.rmtree(path)
        if (path / CONFIG).exists() or (path / CONFIG).is_symlink():
            old = read_record(path / CONFIG)
            if (old["study"], old["identity"]) != (config.get("study"), config.get("identity")):
                raise GenlabError(
                    f"{path / CONFIG}: holds a run with a different config; "
                    "use --force to replace it"
                )
            check_files(path)
            check_precision(path, old, config.get("precision"))
            remove_stale(path)
            remove_stale(path / FIGURES)
            remove_stale(path / KEPT)
            return cls(path, "finished" if (path / SUMMARY).exists() else "resume")
        remove_stale(path.parent)  # a folder a killed discard left half-removed
        remove_stale(path)  # a config.json a kill cut while it was written
        if path.exists() and any(path.iterdir()):
            raise GenlabError(f"{path}: folder is not empty and holds no run; use --force")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(path, e) from None
        write_json(path / CONFIG, config)
        return cls(path, "new")

    def file(self, name: str) -> Path:
        return self.path / name

    def discard_if_untrained(self) -> None:
        """Remove a run folder this process started that holds no trained epoch (no record: it
        failed before its first): a failed start leaves nothing for the report to list."""
        if self.state != "new" or self.metrics():
            return
        doomed = self.path.with_name(f"{temp_prefix(self.path)}discard.tmp")
        try:  # renamed first: a kill while it is removed leaves a stale name, not a half run
            os.replace(self.path, doomed)
        except OSError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    # -- environment --------------------------------------------------------------------------
    def record_env(self, env: dict[str, Any]) -> None:
        """Write env.json on the first start; on a resumption add ``env`` under "resumed"."""
        target = self.path / ENV
        if target.exists():
            try:
                first = read_object(target)
            except GenlabError as e:
                raise _damaged(e, target) from None
            first.setdefault("resumed", []).append(env)
            write_json(target, first)
        else:
            write_json(target, env)

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl. Only its last line may be cut (by a kill while it was
        appended; it is dropped): any other line that is not a JSON object, or epochs out of
        order, is ``Damaged``."""
        target = self.path / METRICS
        if not (target.exists() or target.is_symlink()):
            return []
        try:
            lines = target.read_bytes().split(b"\n")
        except OSError as e:
            raise Damaged(target, f"unreadable ({e.strerror or type(e).__name__})") from None
        if lines and lines[-1] == b"":
            lines.pop()
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if number == len(lines):
                    break  # cut by a kill: dropped, and the epoch computed again
                raise Damaged(target, f"line {number} is not a JSON record") from None
            if not isinstance(record, dict):
                raise Damaged(target, f"line {number} is not a JSON object")
            records.append(record)
        epochs = [r.get("epoch") for r in records]
        if epochs and epochs[0] is not None:
            first = epochs[0]
            if not isinstance(first, int) or epochs != list(range(first, first + len(epochs))):
                raise Damaged(target, "its epochs are not 1, 2, 3, ... in order")
        return records

    def append_metrics(self, record: dict[str, Any]) -> None:
        target = self.path / METRICS
        try:
            with open(target, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(target, e) from None

    def keep_metrics(self, last_epoch: int | None = None) -> list[dict[str, Any]]:
        """Rewrite metrics.jsonl with its readable records (a line cut by a kill goes), only up
        to ``last_epoch`` if given (records written after the last checkpoint go too)."""
        kept = [r for r in self.metrics() if last_epoch is None or r["epoch"] <= last_epoch]
        self._write_metrics(kept)
        return kept

    def extend_metrics(self, records: list[dict[str, Any]]) -> None:
        """Append several records as one write: the file is replaced atomically, so a kill
        leaves all of them or none (the cells of one row of the memorization map)."""
        self._write_metrics([*self.metrics(), *records])

    def _write_metrics(self, records: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write(self.path / METRICS, lambda f: f.write(lines), mode="w")

    # -- checkpoint ---------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """checkpoint.pt, atomically; the one it replaces stays as previous.pt (a hard link,
        made before the replacement: a kill leaves both files whole)."""
        import torch

        current = self.path / CHECKPOINT
        if current.exists():
            link = self.path / f"{temp_prefix(self.path / PREVIOUS)}link.tmp"
            try:
                link.unlink(missing_ok=True)
                os.link(current, link)
                os.replace(link, self.path / PREVIOUS)
            except OSError:  # a file system without hard links: no previous.pt, no rollback
                for stale in (link, self.path / PREVIOUS):
                    try:
                        stale.unlink(missing_ok=True)
                    except OSError as e:
                        raise write_error(stale, e) from None
        buffer = io.BytesIO()  # torch.save hides a write's OSError (ENOSPC) in a RuntimeError
        torch.save(state, buffer)
        atomic_write(current, lambda f: f.write(buffer.getbuffer()))

    def keep_checkpoint(self, epoch: int) -> None:
        """Keep the current checkpoint (saved after ``epoch``) as checkpoints/epoch-K.pt: a
        hard link (no copy; checkpoint.pt is replaced, never written in place), else a copy."""
        folder = self.path / KEPT
        target = folder / kept_name(epoch)
        try:
            folder.mkdir(exist_ok=True)
            link = folder / f"{temp_prefix(target)}link.tmp"
            link.unlink(missing_ok=True)
            try:
                os.link(self.path / CHECKPOINT, link)
            except OSError:  # no hard links here: a copy, written atomically
                data = (self.path / CHECKPOINT).read_bytes()
                atomic_write(target, lambda f: f.write(data))
                return
            os.replace(link, target)
        except OSError as e:
            raise write_error(target, e) from None

    def kept_epochs(self) -> list[int]:
        """The epochs whose checkpoints were kept (checkpoints/epoch-K.pt), sorted."""
        folder = self.path / KEPT
        found = []
        for f in folder.glob("epoch-*.pt") if folder.is_dir() else []:
            number = f.name.removeprefix("epoch-").removesuffix(".pt")
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def load_kept(self, epoch: int) -> dict[str, Any]:
        """The kept checkpoint of ``epoch``; ``Damaged`` if it is not the checkpoint of that
        epoch, a GenlabError naming the flag if that epoch was not kept."""
        name = f"{KEPT}/{kept_name(epoch)}"
        state = self.load_checkpoint(name)
        if state is None:
            raise GenlabError(
                f"{self.path}: no checkpoint of epoch {epoch} was kept (train with "
                f"--keep-checkpoints {epoch}; kept: {' '.join(map(str, self.kept_epochs())) or 'none'})"
            )
        if state["epoch"] != epoch:
            raise Damaged(self.path / name, f"holds the checkpoint of epoch {state['epoch']}")
        return state

    def restore_previous(self) -> None:
        """Make previous.pt the checkpoint again (a rollback: see genlab.training.loop)."""
        try:
            os.replace(self.path / PREVIOUS, self.path / CHECKPOINT)
        except OSError as e:
            raise write_error(self.path / CHECKPOINT, e) from None

    def load_checkpoint(self, name: str = CHECKPOINT) -> dict[str, Any] | None:
        """The checkpoint (or previous.pt), loaded safely (tensors and plain containers only),
        or None if there is none; ``Damaged`` if it does not load or is not a checkpoint."""
        import torch

        target = self.path / name
        if not (target.exists() or target.is_symlink()):
            return None
        try:
            state = torch.load(target, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same error
            # the first line only: PyTorch goes on to advise weights_only=False, which would run
            # whatever code the file holds
            text = str(e).strip()
            if "Weights only load failed" in text:
                why = "it holds Python objects that the safe loader refuses to run"
            else:
                why = f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"
            raise Damaged(target, f"unreadable checkpoint ({why})") from None
        if not isinstance(state, dict):
            raise Damaged(target, f"not a checkpoint (holds a {type(state).__name__})")
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise Damaged(target, "not a checkpoint (no epoch >= 0)")
        for key in ("model", "optimizer"):
            if not isinstance(state.get(key), dict):
                raise Damaged(target, f"not a checkpoint (no {key} state)")
        return state

    # -- results ------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, which marks the run finished; previous.pt goes (a finished run is never
        rolled back)."""
        write_json(self.path / SUMMARY, summary)
        (self.path / PREVIOUS).unlink(missing_ok=True)


def recorded_precision(path: Path, record: dict[str, Any]) -> str | None:
    """The arithmetic a run folder was trained in: config.json's "precision", else (a run made
    before it was recorded there) the first session's in env.json, else None."""
    if isinstance(record.get("precision"), str):
        return record["precision"]
    try:
        env = read_object(path / ENV) if (path / ENV).is_file() else {}
    except GenlabError:
        return None
    value = env.get("precision")
    return value if isinstance(value, str) else None


def check_precision(path: Path, record: dict[str, Any], precision: str | None) -> None:
    """A run folder holds one arithmetic: a bf16 run is not finished (or resumed) by an fp32
    command, nor the other way round (the folder name cannot say which: see README, "How a run
    computes"). ``record``: the folder's config.json."""
    recorded = recorded_precision(path, record)
    if precision is None or recorded is None or recorded == precision:
        return
    raise GenlabError(
        f"{path}: trained with --precision {recorded}, and this command computes in {precision}; "
        f"give --precision {recorded} to finish or reuse it, another --out to train it in "
        f"{precision}, or --force to replace it"
    )


def kept_name(epoch: int) -> str:
    return f"epoch-{epoch}.pt"


def environment(seed: int | None, runtime: dict[str, Any]) -> dict[str, Any]:
    """What a number depends on besides its config: versions, commit, the runtime (device,
    arithmetic, compile, CUDA graphs), threads, seed."""
    import numpy
    import torch

    import genlab

    env: dict[str, Any] = {
        "genlab": genlab.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        **runtime,
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "argv": sys.argv,
        # who trained it: a run resumed by another process or node adds an entry of its own
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if "SLURM_JOB_ID" in os.environ:  # the array task, as squeue and sacct name it
        array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        env["slurm_job"] = "_".join(array) if all(array) else os.environ["SLURM_JOB_ID"]
    device = str(runtime.get("device", "cpu"))
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def git_commit() -> str | None:
    """The commit of the genlab source tree, with "-dirty" when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run folders (those holding config.json) at or below each path, sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if (p / CONFIG).exists():
            found.add(p)
        elif p.is_dir():
            found.update(c.parent for c in p.rglob(CONFIG))
    return sorted(found)


def find_analyses(paths: Iterable[Path]) -> list[Path]:
    """Analysis folders (those holding analysis.json) at or below each path, sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if (p / ANALYSIS).is_file():
            found.add(p)
        elif p.is_dir():
            found.update(c.parent for c in p.rglob(ANALYSIS) if c.is_file())
    return sorted(found)


def is_sweep(folder: Path) -> bool:
    """A sweep folder holds sweep.json and is not itself a run folder (a linreg run folder
    written before double_descent.json had its own sweep.json)."""
    folder = Path(folder)
    return (folder / SWEEP).is_file() and not (folder / CONFIG).exists()


def find_sweeps(paths: Iterable[Path]) -> list[Path]:
    """Sweep folders at or below each path, sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        candidates = [p, *(f.parent for f in p.rglob(SWEEP))] if p.is_dir() else []
        found.update(c.resolve() for c in candidates if is_sweep(c))
    return sorted(found)


def check_out(out: Path) -> Path:
    """``out`` can hold run folders: it, or what of it exists, is a folder (not a file)."""
    out = Path(out)
    for folder in [out, *out.parents]:
        if folder.exists():
            if not folder.is_dir():
                raise GenlabError(f"--out {out}: {folder} is a file, not a folder")
            break
    return out
