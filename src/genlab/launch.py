"""Start, resume or skip one study run in its folder, then draw its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab.config import identity_dict, run_id, to_dict
from genlab.reporting.figures import plot_run
from genlab.runs import FIGURES, Run, environment
from genlab.studies import STUDIES
from genlab.training import resolve_device
from genlab.training.engine import LogFn, cuda_graphs_enabled, resolve_precision


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
    tensorboard: bool = False,
) -> Path:
    """Run ``study`` with ``cfg`` under ``out/<study>/<run id>`` (or at ``path``): re-running the
    same command resumes an interrupted run and skips a finished one; ``force`` starts it again.
    ``tensorboard``: also write the per-epoch scalars as TensorBoard events in the run folder."""
    path = Path(path) if path is not None else run_dir_for(study, cfg, out)
    return run_together(
        study, [cfg], [path], force=force, quiet=quiet, log=log, tensorboard=tensorboard
    )[0]


def run_together(
    study: str,
    cfgs: list[Any],
    paths: list[Path],
    *,
    force: bool = False,
    quiet: bool = False,
    log: LogFn = print,
    tensorboard: bool = False,
) -> list[Path]:
    """Several runs of ``study``, each in its own folder; those not finished yet train in one
    grouped pass when the study offers ``run_group`` (all ``cfgs`` must share its
    ``group_key``), otherwise one after another."""
    module = STUDIES[study]
    todo = []
    for cfg, path in zip(cfgs, paths, strict=True):
        record = {"study": study, "config": to_dict(cfg), "identity": identity_dict(cfg)}
        run = Run.open(path, record, force=force)
        run.tensorboard = tensorboard
        if run.state == "finished":
            log(f"{path}: finished already (use --force to run it again)")
            if not (path / FIGURES).exists():
                plot_run(path)
            continue
        device = resolve_device(cfg.device) if hasattr(cfg, "device") else torch.device("cpu")
        precision = resolve_precision(getattr(cfg, "precision", "auto"), device)
        env = environment(str(device), getattr(cfg, "seed", None), precision)
        env["cuda_graphs"] = cuda_graphs_enabled(device)  # where the step allows (engine.py)
        run.record_env(env)
        todo.append((cfg, run))
    if len(todo) > 1 and hasattr(module, "run_group"):
        module.run_group([c for c, _ in todo], [r for _, r in todo], log=log, quiet=quiet)
    else:
        for cfg, run in todo:
            module.run(cfg, run, log=log, quiet=quiet)
    for _, run in todo:
        plot_run(run.path)
    return [Path(p) for p in paths]
