"""Run folders: the one module that knows their file names.

A run folder holds::

    config.json     the fully resolved config (written once, when the run starts)
    env.json        genlab version, git commit, library versions, device, threads, seed;
                    each resumption adds an entry under "resumed"
    dataset.json    what the run trained on: sizes, class names, normalization statistics
    metrics.jsonl   one JSON object per epoch, appended and flushed
    checkpoint.pt   model, optimizer, epoch, RNG states (atomic; torch.load(weights_only=True))
    summary.json    written last: its presence marks the run finished
    tensorboard/    with --tensorboard: the per-epoch scalars of metrics.jsonl as TensorBoard events
    views.json      accuracy on named views of the test split (flips, rotations), added to by
                    ``genlab eval RUN --views ...``
    invariance.json per-layer equivariance and invariance (cosine, linear CKA) under a view

Every whole-file write is atomic (genlab.fileio).
"""

from __future__ import annotations

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
from genlab.fileio import atomic_write, read_json, write_json

CONFIG = "config.json"
ENV = "env.json"
DATASET = "dataset.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
VIEW_RESULTS = "views.json"
INVARIANCE = "invariance.json"
LABEL_NOISE = "label_noise.json"  # random labels: which training labels changed, to what
ARRAYS = "arrays.npz"  # linreg: beta_min_norm, beta_gd, beta_sgd, beta_star, eigenvalues
RIDGE = "ridge.json"  # linreg: the ridge path
DOUBLE_DESCENT = "double_descent.json"  # linreg --sweep-p: test MSE against gamma = p / n
# A sweep folder (runs/<study>/sweep-<hash>/) holds its member run folders and:
SWEEP = "sweep.json"  # the members in order: index, run id, config
AGGREGATE = "aggregate.json"  # members that differ only in seed: mean, std, 95% interval
AGGREGATE_CSV = "aggregate.csv"  # the same as a table
FIGURES = "figures"
TENSORBOARD = "tensorboard"


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
        if (path / CONFIG).exists():
            old = read_json(path / CONFIG)
            if old.get("identity") != config.get("identity"):
                raise GenlabError(
                    f"{path}: holds a run with a different config; use --force to replace it"
                )
            return cls(path, "finished" if (path / SUMMARY).exists() else "resume")
        if path.exists() and any(path.iterdir()):
            raise GenlabError(f"{path}: folder is not empty and holds no run; use --force")
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / CONFIG, config)
        return cls(path, "new")

    def file(self, name: str) -> Path:
        return self.path / name

    def discard_if_untrained(self) -> None:
        """Remove a run folder this process started that holds no trained epoch (it failed
        before its first checkpoint): a failed start leaves nothing for the report to list."""
        if self.state == "new" and not (self.path / CHECKPOINT).exists():
            shutil.rmtree(self.path, ignore_errors=True)

    # -- environment --------------------------------------------------------------------------
    def record_env(self, env: dict[str, Any]) -> None:
        """Write env.json on the first start; on a resumption add ``env`` under "resumed"."""
        target = self.path / ENV
        if target.exists():
            first = read_json(target)
            first.setdefault("resumed", []).append(env)
            write_json(target, first)
        else:
            write_json(target, env)

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        target = self.path / METRICS
        if not target.exists():
            return []
        records = []
        for line in target.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: it and anything after it are dropped on resume
        return records

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def keep_metrics(self, last_epoch: int | None = None) -> list[dict[str, Any]]:
        """Rewrite metrics.jsonl with its readable records (a line cut by a kill goes), only up
        to ``last_epoch`` if given (records written after the last checkpoint go too)."""
        kept = [r for r in self.metrics() if last_epoch is None or r["epoch"] <= last_epoch]
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write(self.path / METRICS, lambda f: f.write(lines), mode="w")
        return kept

    # -- checkpoint ---------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        import torch

        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict[str, Any] | None:
        import torch

        target = self.path / CHECKPOINT
        if not target.exists():
            return None
        try:
            return torch.load(target, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same error
            raise GenlabError(
                f"{target}: unreadable checkpoint ({type(e).__name__}: {e})"
            ) from None

    # -- results ------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)


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
