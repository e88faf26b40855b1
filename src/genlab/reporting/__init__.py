"""Figures and reports, built from run and sweep folders only: nothing here trains.

Each study's figures and key numbers live in one module of its own (``robustness``,
``random_labels``, ``memorization_map``, ``linreg``), named by the study's registry entry
(``genlab.studies.STUDIES[name].reporting``) and found through it here; shared helpers live in
``plotting``, which imports none of them. Every per-study module defines the same names::

    TITLE: str                              the study's heading in the report
    KEY_NUMBERS: list[tuple[str, str]]      (column heading, dotted key into summary.json)
    plot_run(run_dir) -> list[Path]         one run's figures, into run_dir/figures
    plot_sweep(sweep_dir, run_dirs) -> list[Path]   a sweep's figures, into sweep_dir/figures

and may define two more, which ``genlab report`` looks up with ``getattr`` and calls with the
study's finished run folders (anything either raises is one problem line in the page)::

    finding(run_dirs) -> str | None         the study's sentence in the report's summary
    compare(run_dirs, out_dir) -> list[Path]        figures across the runs (PNGs), into out_dir
                                            (the report's figures/), atop the study's section

An analysis folder (``genlab analyze``) is drawn by the module of its kind
(``genlab.reporting.similarity``, ``genlab.reporting.criticality``), which defines ``TITLE``,
``plot_analysis(folder) -> list[Path]`` and ``key_numbers(results) -> list[tuple[str, str]]``.

``plot_run``, ``plot_sweep`` and ``plot_analysis`` here are the entry points: they check the folder's files first
(a damaged one is one ``GenlabError`` naming it), and write ``figures/figures.json``, the list of
what was drawn, last, so a folder cut while drawing (killed, disk full) is drawn again by the
next command (``figures_drawn``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from genlab.errors import GenlabError
from genlab.fileio import read_json, remove_stale, write_error, write_json
from genlab.reporting.plotting import read_sweep
from genlab.runs import (
    AGGREGATE,
    ANALYSIS,
    CONFIG,
    CRITICALITY,
    DATASET,
    FIGURE_LIST,
    FIGURES,
    SIMILARITY,
    SUMMARY,
    SWEEP,
    check_files,
    is_sweep,
)


def reporting_module(study_name: str) -> ModuleType:
    """The reporting module of a registered study (a KeyError for an unknown study)."""
    from genlab.studies import STUDIES  # here, not at import: the studies import torch

    return importlib.import_module(STUDIES[study_name].reporting)


def _module(folder: Path, name: Path, study: str) -> ModuleType:
    try:
        return reporting_module(study)
    except KeyError:
        raise GenlabError(
            f"{folder / name}: names the study {study!r}, which this genlab does not have"
        ) from None


def figures_drawn(folder: Path) -> bool:
    """Whether every figure of a run or sweep folder was drawn (its list written last), after
    its results (summary.json, aggregate.json) were: figures drawn while a run trained are
    drawn again once it finishes."""
    folder = Path(folder)
    try:
        drawn = (folder / FIGURES / FIGURE_LIST).stat().st_mtime_ns
    except OSError:
        return False
    results = [folder / SUMMARY, folder / AGGREGATE, folder / SIMILARITY, folder / CRITICALITY]
    return all(drawn >= r.stat().st_mtime_ns for r in results if r.exists())


def _draw(folder: Path, draw: Callable[[], list[Path]]) -> list[Path]:
    """``draw()`` with the folder's list of figures written after it; an error of a reporting
    module reading a file it did not expect becomes one line naming the folder."""
    out = folder / FIGURES
    try:
        (out / FIGURE_LIST).unlink(missing_ok=True)
    except OSError as e:
        raise write_error(out / FIGURE_LIST, e) from None
    remove_stale(out)
    try:
        files = draw()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise GenlabError(
            f"{folder}: its figures cannot be drawn from its files ({type(e).__name__}: {e}); "
            "a file of it is damaged or from another genlab version"
        ) from None
    write_json(out / FIGURE_LIST, sorted(os.path.relpath(f, out) for f in files))
    return files


def plot_run(run_dir: Path) -> list[Path]:
    """Draw every figure of the run's study into ``run_dir/figures``; returns the files."""
    run_dir = Path(run_dir)
    check_files(run_dir)
    study = read_json(run_dir / CONFIG)["study"]
    if not (run_dir / DATASET).exists():  # killed before it wrote anything to draw
        return []
    module = _module(run_dir, Path(CONFIG), study)
    return _draw(run_dir, lambda: module.plot_run(run_dir))


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
    module = _module(sweep_dir, Path(SWEEP), read_sweep(sweep_dir)["study"])
    return _draw(sweep_dir, lambda: module.plot_sweep(sweep_dir, sweep_members(sweep_dir)))


ANALYSIS_MODULES = {
    "similarity": "genlab.reporting.similarity",
    "criticality": "genlab.reporting.criticality",
}


def analysis_module(folder: Path) -> ModuleType:
    """The reporting module of an analysis folder's kind (its analysis.json names it)."""
    from genlab.fileio import read_object

    kind = read_object(Path(folder) / ANALYSIS).get("analysis")
    if kind not in ANALYSIS_MODULES:
        raise GenlabError(
            f"{Path(folder) / ANALYSIS}: names no analysis this genlab has ({kind!r})"
        )
    return importlib.import_module(ANALYSIS_MODULES[kind])


def plot_analysis(folder: Path) -> list[Path]:
    """Draw the figures of an analysis folder into ``folder/figures``; returns the files."""
    folder = Path(folder)
    module = analysis_module(folder)
    return _draw(folder, lambda: module.plot_analysis(folder))


__all__ = [
    "analysis_module",
    "figures_drawn",
    "plot_analysis",
    "plot_run",
    "plot_sweep",
    "reporting_module",
    "sweep_members",
]
