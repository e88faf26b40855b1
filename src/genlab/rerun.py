"""``genlab rerun RUN``: a run's config again, with changes, into the folder the new config names.

With no change it is RUN itself (resumed if unfinished, "finished already" if not). With
changes it is a new run folder under RUN's ``--out`` folder (or ``out``), trained from the
start, exactly as ``genlab run`` with those settings would train it.

``from_checkpoint`` (``--continue``) starts the new run from RUN's last checkpoint instead:
``genlab rerun RUN --epochs 20 --continue`` trains epochs 11..20 of a 10-epoch run. The new
folder is built beside its final name and renamed into place (a kill leaves no half folder),
holding what a resume reads: a copy of checkpoint.pt, metrics.jsonl up to the checkpoint's
epoch k, the kept checkpoints (checkpoints/epoch-K.pt, K <= k) the new config keeps, and
RUN's tensorboard/ events if it has them; config.json is the new config's record plus
``"continued_from": {"run": RUN, "epoch": k}``. env.json, dataset.json and the results are the
new run's own. RUN itself is never written.

What a continued run computes: nothing in genlab's training depends on the number of epochs
(the learning rate is constant: there is no schedule to stretch; the data order of epoch e
comes from (seed, e); the optimizer state, momentum and Adam moments included, is in the
checkpoint), so a continued run is bit for bit the run trained straight to its epochs, on the
same machine in the same arithmetic. Only changes that leave epochs 1..k as they were can be
carried: ``epochs`` (not below k) and settings outside the run's identity (``data_dir``,
``views``, ``keep_checkpoints``: a kept epoch at or before k must be RUN's own or k itself).
Anything else (another width, dataset, learning rate, ...) is refused before anything is
created. A run trained in a cohort of a sweep (grouped, in lanes) continues alone: its epochs
after k sum in another order than its cohort-mates', so their last digits may differ
(``cohort`` and ``group_size`` in metrics.jsonl say how each epoch was computed).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.config import flag, from_dict, identity_dict, to_dict, with_overrides
from genlab.errors import GenlabError
from genlab.fileio import temp_prefix, write_error, write_json
from genlab.launch import run_dir_for, run_members
from genlab.locks import RunLock, lock_state
from genlab.runs import (
    CHECKPOINT,
    CONFIG,
    KEPT,
    METRICS,
    TENSORBOARD,
    Damaged,
    Run,
    is_sweep,
    kept_name,
    read_record,
    recorded_precision,
)
from genlab.studies import Study
from genlab.studies import study as find_study
from genlab.training.runtime import Runtime

# Studies whose whole training state is checkpoint.pt + metrics.jsonl (one ``fit``). Pruning
# trains rounds (each to --epochs) from the dense run, connectivity spawns children at epochs
# below --epochs: a longer run of either is more than a longer fit. Memorization-map and linreg
# keep no checkpoint.
CONTINUABLE = ("robustness", "random-labels")


@dataclass(frozen=True)
class Source:
    """A run folder to rerun: its study, its config.json record and its config."""

    path: Path
    study: Study
    record: dict[str, Any]
    config: Any

    @property
    def precision(self) -> str | None:
        """The arithmetic it was trained in, if recorded."""
        return recorded_precision(self.path, self.record)


@dataclass(frozen=True)
class Rerun:
    """What ``start`` trains: the new config in ``path``; ``epoch`` is the epoch of the
    source's checkpoint it continues after (None: trained from the start)."""

    source: Source
    config: Any
    path: Path
    precision: str
    epoch: int | None = None

    @property
    def changes(self) -> dict[str, Any]:
        """The settings whose values differ from the source's."""
        old, new = to_dict(self.source.config), to_dict(self.config)
        return {k: getattr(self.config, k) for k in new if new[k] != old[k]}


def source(run: Path) -> Source:
    """The run folder ``run``: a GenlabError naming it when it holds no usable run record."""
    run = Path(run)
    target = run / CONFIG
    if not run.is_dir():
        raise GenlabError(f"{run}: no such run folder")
    if not target.is_file():
        raise GenlabError(f"{run}: not a run folder (no {CONFIG})")
    record = read_record(target)
    try:
        entry = find_study(record["study"])
    except GenlabError as e:
        raise GenlabError(f"{target}: {e}") from None
    try:
        cfg = from_dict(entry.config, record["config"])
    except (GenlabError, TypeError) as e:  # a config of another genlab, or edited by hand
        raise GenlabError(f"{target}: {e}") from None
    return Source(run, entry, record, cfg)


def plan(
    run: Path | Source,
    changes: Mapping[str, Any],
    *,
    precision: str,
    out: Path | None = None,
    from_checkpoint: bool = False,
) -> Rerun:
    """The rerun of ``run`` with ``changes`` (setting -> value), computed in ``precision``
    ("fp32" or "bf16", resolved), checked through: nothing is created. The new folder is
    ``run`` itself when the identity and arithmetic are unchanged and no ``out`` is given,
    else the one the new config names under ``out`` (default: ``run``'s own --out folder, the
    one above ``runs/<study>/`` or above its sweep folder)."""
    src = run if isinstance(run, Source) else source(run)
    cfg = with_overrides(src.config, dict(changes))
    same = identity_dict(cfg) == identity_dict(src.config) and src.precision in (None, precision)
    if out is None and same:
        path = src.path
    else:
        path = run_dir_for(src.study, cfg, _out_of(src.path) if out is None else out)
    if Path(path).resolve() == Path(src.path).resolve() and not same:  # arithmetic alone
        raise GenlabError(
            f"{src.path}: was trained with --precision {src.precision}, and a rerun in "
            f"{precision} would be named as it is; give --out for the {precision} run"
        )
    if not from_checkpoint:
        return Rerun(src, cfg, path, precision)
    epoch = _check_continue(src, cfg, path, precision)
    return Rerun(src, cfg, path, precision, epoch)


def start(rerun: Rerun, rt: Runtime, *, force: bool = False) -> Path:
    """Train the planned rerun (``rt`` computes in its ``precision``) and return its folder.
    With ``force`` an existing folder of the new config is replaced (never the source); without
    it an existing one is that run already, resumed or found finished."""
    if rt.precision != rerun.precision:
        raise GenlabError(
            f"the rerun was planned in {rerun.precision} and the runtime computes in {rt.precision}"
        )
    if rerun.epoch is not None:
        _build(rerun, force=force)
        force = False  # what --force replaces is replaced by the copy
    run_members(rerun.source.study, [(rerun.config, rerun.path)], rt, force=force)
    return rerun.path


def rerun(
    run: Path,
    changes: Mapping[str, Any],
    rt: Runtime,
    *,
    out: Path | None = None,
    from_checkpoint: bool = False,
    force: bool = False,
) -> Path:
    """``plan`` and ``start`` in one: ``genlab rerun RUN`` from Python."""
    planned = plan(run, changes, precision=rt.precision, out=out, from_checkpoint=from_checkpoint)
    return start(planned, rt, force=force)


def _out_of(run: Path) -> Path:
    """The --out folder a run folder was made under: OUT/<study>/<run> or
    OUT/<study>/sweep-<hash>/<run>."""
    parent = run.absolute().parent
    return parent.parent.parent if is_sweep(parent) else parent.parent


def _check_continue(src: Source, cfg: Any, path: Path, precision: str) -> int:
    """The epoch of ``src``'s checkpoint that ``cfg`` continues after; a GenlabError for what
    the checkpoint cannot carry (see the module docstring)."""
    where = f"--continue from {src.path}"
    if src.study.name not in CONTINUABLE:
        raise GenlabError(
            f"{where}: {src.study.name} runs cannot be continued (only "
            f"{', '.join(CONTINUABLE)}); rerun it without --continue"
        )
    if path.resolve() == src.path.resolve():
        raise GenlabError(
            f"{where}: the new config is the run's own (no change to its identity, e.g. "
            "--epochs N, and no --out), and the run is never changed; without --continue "
            "the same command resumes or finishes it"
        )
    carried = {"epochs"} | {
        f.name for f in dataclasses.fields(cfg) if not f.metadata.get("identity", True)
    }
    old, new = to_dict(src.config), to_dict(cfg)
    for key in new:
        if key not in carried and new[key] != old[key]:
            raise GenlabError(
                f"{where}: {flag(key)} {_typed(getattr(cfg, key))} (the run's: "
                f"{_typed(getattr(src.config, key))}) changes the epochs already trained, "
                "which the checkpoint cannot carry; rerun without --continue to train it "
                "from the start"
            )
    if src.precision is not None and src.precision != precision:
        raise GenlabError(
            f"{where}: the run was trained with --precision {src.precision}, and this command "
            f"computes in {precision}; give --precision {src.precision}"
        )
    holder = lock_state(src.path)
    if holder is not None:
        raise GenlabError(
            f"{where}: process {holder.get('pid')} on {holder.get('host')} trains it now; "
            "continue it when that stops"
        )
    state = Run(src.path, "resume").load_checkpoint()
    if state is None:
        raise GenlabError(f"{where}: it holds no {CHECKPOINT} to continue from")
    epoch = int(state["epoch"])
    if cfg.epochs < epoch:
        raise GenlabError(
            f"{where}: --epochs {cfg.epochs} is fewer than the {epoch} it has trained"
        )
    found = [r.get("epoch") for r in Run(src.path, "resume").metrics()][:epoch]
    if found != list(range(1, epoch + 1)):
        raise Damaged(
            src.path / METRICS, f"holds {len(found)} records for the checkpoint's {epoch} epochs"
        )
    kept = Run(src.path, "resume").kept_epochs()
    for k in sorted(set(cfg.keep_checkpoints)):
        if k < epoch and k not in kept:
            raise GenlabError(
                f"{where}: --keep-checkpoints {k}: the run kept no checkpoint of epoch {k} "
                f"(kept: {' '.join(map(str, kept)) or 'none'}), and the continued run starts "
                f"after epoch {epoch}"
            )
    return epoch


def _typed(value: Any) -> str:
    # the one spelling of a value as it is typed (imported here: cli imports this module)
    from genlab.cli import _show

    return _show(value)


def _build(rerun: Rerun, *, force: bool) -> None:
    """The continued run's folder, built beside ``rerun.path`` and renamed into place (see the
    module docstring). An existing folder holding a run is that run: kept unless ``force``."""
    path = rerun.path
    if (path / CONFIG).exists() and not force:
        return
    if path.exists() and not force and (not path.is_dir() or any(path.iterdir())):
        raise GenlabError(f"{path}: exists and holds no run; use --force")
    with RunLock(path):
        building = path.with_name(f"{temp_prefix(path)}continue.tmp")
        try:
            _fill(rerun, building)
            if path.exists():  # --force: the old folder goes only once the new one is whole
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(building, path)
        except OSError as e:
            raise write_error(path, e) from None
        finally:
            shutil.rmtree(building, ignore_errors=True)


def _fill(rerun: Rerun, folder: Path) -> None:
    src = rerun.source.path
    shutil.rmtree(folder, ignore_errors=True)
    (folder / KEPT).mkdir(parents=True)
    shutil.copyfile(src / CHECKPOINT, folder / CHECKPOINT)  # first: the records then reach it
    new = Run(folder, "resume")
    state = new.load_checkpoint()
    assert state is not None
    if state["epoch"] != rerun.epoch:
        raise GenlabError(
            f"{src}: trained on while it was read (epoch {state['epoch']}, planned from "
            f"{rerun.epoch}); run the command again"
        )
    if (src / METRICS).exists():
        shutil.copyfile(src / METRICS, folder / METRICS)
    new.keep_metrics(rerun.epoch)  # RUN's records up to the checkpoint (checked by plan)
    for k in sorted(set(rerun.config.keep_checkpoints)):
        if k == rerun.epoch:
            new.keep_checkpoint(k)  # the copied checkpoint.pt is the checkpoint of epoch k
        elif k < rerun.epoch:
            shutil.copyfile(src / KEPT / kept_name(k), folder / KEPT / kept_name(k))
    if (src / TENSORBOARD).is_dir():
        shutil.copytree(src / TENSORBOARD, folder / TENSORBOARD)
    cfg = rerun.config
    write_json(
        folder / CONFIG,
        {
            "study": rerun.source.study.name,
            "config": to_dict(cfg),
            "identity": identity_dict(cfg),
            "precision": rerun.precision,
            "continued_from": {"run": str(src.absolute()), "epoch": rerun.epoch},
        },
    )
