"""Members reach the machine here: run folders are claimed (locked) a batch at a time, opened
(started, resumed or found finished), trained together in one ``Study.run`` call, and drawn.

A run folder is an idempotent task: its identity hash names it, a lock guards it, its checkpoint
resumes it, its summary ends it. A member another process holds is skipped with one line (a
sweep moves on) or refused (``genlab run`` exits non-zero). Claiming ``claim_size`` members at a
time (as many as train side by side with any gain) leaves the rest of a sweep to other processes
started on it, and bounds what a kill can leave half-done to one batch.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from genlab.config import identity_dict, run_id, to_dict
from genlab.errors import GenlabError, MembersFailed
from genlab.locks import Locked, RunLock
from genlab.runs import Run, check_out, environment
from genlab.studies import Study
from genlab.training.grouped import claim_size
from genlab.training.runtime import Runtime


def run_dir_for(study: Study, cfg: Any, out: Path) -> Path:
    return check_out(out) / study.name / run_id(cfg, study.run_id_keys)


def run_members(
    study: Study,
    members: list[tuple[Any, Path]],
    rt: Runtime,
    *,
    force: bool = False,
    skip_locked: bool = False,
) -> list[Path]:
    """Train the members (config, run folder) of ``study`` that are not finished and draw their
    figures; returns the folders this process trained or found finished. ``force`` starts
    members again. A member locked by another process raises ``Locked``, or with
    ``skip_locked`` is logged and left to its holder. Members that fail do not stop the others:
    their errors are raised together at the end (``MembersFailed``), and a failed member that
    never finished an epoch leaves no run folder behind."""
    from genlab.reporting import figures_drawn, plot_run

    done: list[Path] = []
    failures: list[tuple[Path, GenlabError]] = []
    pending = list(members)
    while pending:
        with ExitStack() as locks:
            claimed: list[tuple[Any, Run]] = []
            try:
                while pending and len(claimed) < claim_size(rt.device):
                    cfg, path = pending.pop(0)
                    try:
                        locks.enter_context(RunLock(path))
                    except Locked as e:
                        if not skip_locked:
                            raise
                        rt.log(str(e))
                        continue
                    try:
                        run = _open(study, cfg, path, force, rt.precision)
                    except GenlabError as e:  # a damaged folder: the others go on
                        failures.append((path, e))
                        continue
                    if run.state == "finished":
                        rt.log(f"{path}: finished already (use --force to run it again)")
                        if not figures_drawn(path):  # a kill or a full disk cut its drawing
                            plot_run(path)
                        done.append(Path(path))
                        continue
                    claimed.append((cfg, run))
                    run.record_env(environment(getattr(cfg, "seed", None), rt.environment()))
                failed = _train(study, claimed, rt)
            except BaseException:  # Ctrl-C, SIGTERM, a full disk: no untrained folder stays
                for _, run in claimed:
                    run.discard_if_untrained()
                raise
            for _, run in claimed:
                if run.path in failed:
                    run.discard_if_untrained()
                else:
                    plot_run(run.path)
                    done.append(run.path)
            failures += failed.items()
    if failures:
        raise MembersFailed(failures, len(members))
    return done


def _open(study: Study, cfg: Any, path: Path, force: bool, precision: str) -> Run:
    record = {
        "study": study.name,
        "config": to_dict(cfg),
        "identity": identity_dict(cfg),
        "precision": precision,  # checked, not named: see runs.recorded_precision
    }
    return Run.open(path, record, force=force)


def _train(study: Study, claimed: list[tuple[Any, Run]], rt: Runtime) -> dict[Path, GenlabError]:
    """Train the claimed members; returns the failed ones with their errors."""
    if not claimed:
        return {}
    try:
        study.run(claimed, rt)
    except MembersFailed as e:
        return {Path(p): error for p, error in e.failures}  # type: ignore[arg-type]
    return {}
