"""Figures and reports, built from run and sweep folders only: nothing here trains.

Each study's figures and key numbers live in one module of its own (``robustness``,
``random_labels``, ``memorization_map``, ``linreg``), named by the study's registry entry
(``genlab.studies.STUDIES[name].reporting``) and found through it here; shared helpers live in
``plotting``, which imports none of them. Every per-study module defines the same names::

    TITLE: str                              the study's heading in the report
    KEY_NUMBERS: list[tuple[str, str]]      (column heading, dotted key into summary.json)
    plot_run(run_dir) -> list[Path]         one run's figures, into run_dir/figures
    plot_sweep(sweep_dir, run_dirs) -> list[Path]   a sweep's figures, into sweep_dir/figures
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from genlab.errors import GenlabError
from genlab.fileio import read_json
from genlab.reporting.plotting import read_sweep
from genlab.runs import CONFIG, DATASET, is_sweep


def reporting_module(study_name: str) -> ModuleType:
    """The reporting module of a registered study (a KeyError for an unknown study)."""
    from genlab.studies import STUDIES  # here, not at import: the studies import torch

    return importlib.import_module(STUDIES[study_name].reporting)


def plot_run(run_dir: Path) -> list[Path]:
    """Draw every figure of the run's study into ``run_dir/figures``; returns the files."""
    run_dir = Path(run_dir)
    study = read_json(run_dir / CONFIG)["study"]
    if not (run_dir / DATASET).exists():  # killed before it wrote anything to draw
        return []
    return reporting_module(study).plot_run(run_dir)


def sweep_members(sweep_dir: Path) -> list[Path]:
    """The member run folders of a sweep that exist (started), in the sweep's order."""
    sweep_dir = Path(sweep_dir)
    members = [sweep_dir / m["run_id"] for m in read_sweep(sweep_dir)["members"]]
    return [d for d in members if (d / CONFIG).exists()]


def plot_sweep(sweep_dir: Path) -> list[Path]:
    """Draw the figures of a sweep folder (one holding sweep.json) from its member run folders
    into ``sweep_dir/figures``; returns the files."""
    sweep_dir = Path(sweep_dir)
    if not is_sweep(sweep_dir):
        raise GenlabError(f"{sweep_dir}: not a sweep folder (no sweep.json, or a run folder)")
    study = read_sweep(sweep_dir)["study"]
    return reporting_module(study).plot_sweep(sweep_dir, sweep_members(sweep_dir))


__all__ = ["plot_run", "plot_sweep", "reporting_module", "sweep_members"]
