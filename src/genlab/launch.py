"""Members reach the machine here: each run folder is claimed (locked), opened (started, resumed
or found finished), trained with the others of its study in one ``Study.run`` call, and drawn.

A run folder is an idempotent task: its identity hash names it, a lock guards it, its checkpoint
resumes it, its summary ends it. A member another process holds is skipped with one line (a
sweep moves on) or refused (``genlab run`` exits non-zero).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from genlab.config import identity_dict, run_id, to_dict
from genlab.locks import Locked, RunLock
from genlab.runs import FIGURES, Run, environment
from genlab.studies import Study
from genlab.training.runtime import Runtime


def run_dir_for(study: Study, cfg: Any, out: Path) -> Path:
    return Path(out) / study.name / run_id(cfg, study.run_id_keys)


def run_members(
    study: Study,
    members: list[tuple[Any, Path]],
    rt: Runtime,
    *,
    force: bool = False,
    skip_locked: bool = False,
) -> list[Path]:
    """Train the members (config, run folder) of ``study`` that are not finished, together, and
    draw their figures; returns the folders of the members this process trained or found
    finished. ``force`` starts members again. A member locked by another process raises
    ``Locked``, or with ``skip_locked`` is logged and left to its holder."""
    from genlab.reporting import plot_run

    done, todo = [], []
    with ExitStack() as locks:
        for cfg, path in members:
            try:
                locks.enter_context(RunLock(path))
            except Locked as e:
                if not skip_locked:
                    raise
                rt.log(str(e))
                continue
            record = {"study": study.name, "config": to_dict(cfg), "identity": identity_dict(cfg)}
            run = Run.open(path, record, force=force)
            if run.state == "finished":
                rt.log(f"{path}: finished already (use --force to run it again)")
                if not (path / FIGURES).exists():
                    plot_run(path)
                done.append(Path(path))
                continue
            run.record_env(environment(getattr(cfg, "seed", None), rt.environment()))
            todo.append((cfg, run))
        if todo:
            study.run(todo, rt)
        for _, run in todo:
            plot_run(run.path)
            done.append(run.path)
    return done
