"""Start, resume or skip one study run in its folder, then draw its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.config import identity_dict, run_id, to_dict
from genlab.reporting.figures import plot_run
from genlab.runs import FIGURES, Run, environment
from genlab.studies import STUDIES
from genlab.training import resolve_device
from genlab.training.engine import LogFn


def run_dir_for(study: str, cfg: Any, out: Path) -> Path:
    return Path(out) / study / run_id(cfg, STUDIES[study].RUN_ID_KEYS)


def run_study(
    study: str,
    cfg: Any,
    *,
    out: Path,
    force: bool = False,
    quiet: bool = False,
    log: LogFn = print,
    path: Path | None = None,
) -> Path:
    """Run ``study`` with ``cfg`` under ``out/<study>/<run id>`` (or at ``path``): re-running the
    same command resumes an interrupted run and skips a finished one; ``force`` starts it again."""
    path = Path(path) if path is not None else run_dir_for(study, cfg, out)
    record = {"study": study, "config": to_dict(cfg), "identity": identity_dict(cfg)}
    run = Run.open(path, record, force=force)
    if run.state == "finished":
        log(f"{path}: finished already (use --force to run it again)")
    else:
        device = str(resolve_device(cfg.device)) if hasattr(cfg, "device") else "cpu"
        run.record_env(environment(device, getattr(cfg, "seed", None)))
        STUDIES[study].run(cfg, run, log=log, quiet=quiet)
    if run.state != "finished" or not (path / FIGURES).exists():
        plot_run(path)
    return path
