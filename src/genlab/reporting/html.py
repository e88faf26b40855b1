"""``genlab report``: one self-contained HTML page for any set of run and sweep folders.

For each study: each sweep folder (one holding sweep.json) at or below the given paths as one
table of its aggregate.json (one row per setting: the settings that vary, n, and each key number
as mean ± half-width of its 95% interval over seeds), its figures and links to its members; then
the key numbers of its runs as one table (one row per run, the settings that differ between
them as columns, the sweep a run belongs to), the figures, and per run its resolved config,
environment, summary and where its files are. The study's reporting module (found through the
registry) gives its title and key numbers. The page reads run folders only and never trains; a finished
run without figures gets them drawn from its files (``plot_run``). A path that does not exist, a
run without summary.json (unfinished or killed) and a run whose JSON does not parse are shown as
such, in their own rows, instead of stopping the report.

After the studies, a section "Analyses" shows each analysis folder (``genlab analyze``: one
holding analysis.json) at or below the given paths: the title, the finding in a sentence and
the key numbers of its kind's reporting module (``genlab.reporting.similarity``,
``genlab.reporting.criticality``), its figures (drawn first by ``plot_analysis`` when they are
missing or older than its results), its settings and the runs it read, linked to their
sections when they are in the page too. An analysis folder whose files do not parse is shown
as damaged, in one line.

The page opens with a summary: one line per study, the sentence its reporting module's optional
``finding(run_dirs)`` writes from the study's finished runs, linked to its section; the section
then starts with the figures of its optional ``compare(run_dirs, out_dir)`` (the study's runs
overlaid, written into ``OUT/figures``). Either failing is one problem line in the page, never
a failed report.

Numbers are written at one precision per column, decided by ``number_format`` from the column's
key: accuracies, gaps and fractions to 3 decimals, seconds to 1, counts with thousands
separators, other reals to a fixed number of decimals shared by the whole column. The JSON in the
details blocks is shown with floats rounded to 4 significant digits (the files keep every digit).
Links to run, sweep and analysis folders are relative to the report's folder, so a report moved
or mailed with its folders still opens them.

Figures are embedded as base64 ``data:`` URIs, so the page is one file that opens from the file
system with no network, can be mailed or moved, and never shows a stale or missing image (about a
third larger than the PNGs). Each is shown no larger than its size at 96 CSS pixels per inch (its
text at its font size), two side by side where two fit. Everything read from a run folder passes
through jinja2's autoescaping, and a Content-Security-Policy forbids scripts, so a run named
``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from genlab import reporting  # its plot_run/plot_sweep looked up when called (patchable)
from genlab.errors import GenlabError
from genlab.fileio import atomic_write, read_json
from genlab.reporting.plotting import DPI
from genlab.runs import (
    AGGREGATE,
    ANALYSIS,
    CONFIG,
    ENV,
    FIGURE_LIST,
    FIGURES,
    METRICS,
    SUMMARY,
    SWEEP,
    check_files,
    find_analyses,
    find_runs,
    find_sweeps,
)

REPORT = "index.html"
LogFn = Callable[[str], None]
MAX_JSON_BYTES = 64_000  # other JSON files of a run are shown up to this size (not label lists)

UNREADABLE = "?"  # the study of a run folder whose config.json cannot be read
UNREADABLE_TITLE = "Missing or unreadable run folders"


HALF_CELL_PX = 640  # a figure at most this wide (CSS px) shares its row: a half cell is 554 px
# at the page's 1200 px, so it is shown at 87% of its size or more; a wider one gets a row


@dataclass
class Figure:
    name: str  # the file name
    src: str  # a data: URI
    width: int = 0  # CSS px at 96 per inch: the widest it is shown (0: as wide as its cell)

    @property
    def wide(self) -> bool:
        """A figure too wide to share its row (a row of panels, a legend beside the axes)."""
        return self.width > HALF_CELL_PX


@dataclass
class Finding:
    """What a study's reporting module says of its finished runs: its sentence (``finding``),
    its figures across runs (``compare``) and what went wrong calling either."""

    sentence: str | None = None
    figures: list[Figure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class RunView:
    """What the report shows of one run folder. ``state``: finished, unfinished, broken, missing."""

    STATES = ("finished", "unfinished", "broken", "missing")

    path: Path
    study: str
    state: str
    problems: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    epochs_done: int = 0
    figures: list[Figure] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)
    other_json: dict[str, Any] = field(default_factory=dict)  # dataset.json, ridge.json, ...
    sweep: Path | None = None  # the sweep folder holding this run, if any

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def anchor(self) -> str:
        return _anchor("run-", self.path)


@dataclass
class SweepView:
    """What the report shows of one sweep folder: its aggregate.json as rows, its figures and
    its members (run id, folder, state: a run's state or "not started")."""

    path: Path
    study: str
    name: str | None = None
    swept: list[str] = field(default_factory=list)
    members: list[tuple[str, Path, str]] = field(default_factory=list)
    aggregate: dict[str, Any] | None = None
    figures: list[Figure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return _anchor("sweep-", self.path)

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, state in self.members:
            counts[state] = counts.get(state, 0) + 1
        return counts


@dataclass
class AnalysisView:
    """What the report shows of one analysis folder. ``state``: finished or damaged."""

    path: Path
    kind: str = "?"
    title: str = "Analysis"
    state: str = "finished"
    summary: str = ""
    key_numbers: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)  # name, path, study, seed, group
    figures: list[Figure] = field(default_factory=list)  # figures/*.png
    more_figures: list[Figure] = field(default_factory=list)  # in folders of figures/ (per run)
    problems: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return _anchor("analysis-", self.path)


def build_report(
    paths: list[Path], out: Path, *, draw_missing: bool = True, log: LogFn = print
) -> Path:
    """Write ``out/index.html`` for the run, sweep and analysis folders at or below ``paths``;
    returns its path. Logs one line per run, sweep or analysis that is not finished or damaged,
    and per path holding none."""
    paths = [Path(p) for p in paths]
    runs = [_missing(p) for p in paths if not p.exists()]
    runs += [read_run(p, draw_missing=draw_missing) for p in find_runs(paths)]
    sweeps = [read_sweep_folder(p, runs, draw_missing=draw_missing) for p in find_sweeps(paths)]
    analyses = [read_analysis(p, draw_missing=draw_missing) for p in find_analyses(paths)]
    not_found = [
        p
        for p in paths
        if p.exists() and not find_runs([p]) and not find_sweeps([p]) and not find_analyses([p])
    ]
    for r in runs:
        if r.state != "finished" or r.problems:
            log(f"{r.path}: {r.state}; {'; '.join(r.problems)}")
    for sw in sweeps:
        if sw.problems:
            log(f"{sw.path}: sweep; {'; '.join(sw.problems)}")
    for a in analyses:
        if a.problems:
            log(f"{a.path}: analysis {a.state}; {'; '.join(a.problems)}")
    for p in not_found:
        log(f"{p}: no run folders found")
    findings = {}
    for study in sorted({r.study for r in runs if r.state == "finished"}):
        done = [r.path for r in runs if r.study == study and r.state == "finished"]
        findings[study] = read_finding(study, done, Path(out) / FIGURES)
        for problem in findings[study].problems:
            log(f"{study}: {problem}")
    html = render(runs, sweeps, not_found, analyses, out=Path(out), findings=findings)
    target = Path(out) / REPORT
    atomic_write(target, lambda f: f.write(html), mode="w")
    return target


def read_finding(study: str, run_dirs: list[Path], out_dir: Path) -> Finding:
    """The sentence and the figures across runs that the study's reporting module gives for its
    finished runs, through its optional ``finding(run_dirs)`` and ``compare(run_dirs, out_dir)``
    (figures into ``out_dir``, the report's figures folder); never raises: what either raises is
    a problem line, so one module's bug costs its summary, not the report."""
    view = Finding()
    try:
        module = reporting.reporting_module(study)
    except KeyError:  # not a registered study (or the unreadable ones): nothing to ask
        return view
    name = module.__name__
    finding = getattr(module, "finding", None)
    if finding is not None:
        try:
            sentence = finding(list(run_dirs))
            view.sentence = None if sentence is None else str(sentence)
        except Exception as e:  # noqa: BLE001 - a module's bug is shown, not fatal
            view.problems.append(f"{name}.finding failed ({_error_line(e)})")
    compare = getattr(module, "compare", None)
    if compare is not None:
        made = not Path(out_dir).exists()
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            files = [Path(f) for f in compare(list(run_dirs), Path(out_dir))]
        except Exception as e:  # noqa: BLE001 - a module's bug is shown, not fatal
            view.problems.append(f"{name}.compare failed ({_error_line(e)})")
            files = []
        if made and not files:  # no empty figures folder beside a report that has none
            try:
                Path(out_dir).rmdir()
            except OSError:  # another study's figures are in it
                pass
        for png in (f for f in files if f.suffix == ".png"):
            try:
                view.figures.append(_figure(png))
            except OSError as e:
                view.problems.append(f"{png.name}: unreadable ({e.strerror})")
    return view


def _error_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def read_sweep_folder(path: Path, runs: list[RunView], *, draw_missing: bool = True) -> SweepView:
    """Everything the report shows of one sweep folder; never raises for a broken one. Runs
    already read (``runs``) give the members' states; a member run is marked with its sweep."""
    path = Path(path).resolve()
    view = SweepView(path, UNREADABLE)
    try:
        record = read_json(path / SWEEP)
        view.study = str(record["study"])
        view.name = record.get("name")
        view.swept = [str(k) for k in record.get("swept", [])]
        member_ids = [str(m["run_id"]) for m in record["members"]]
    except (GenlabError, KeyError, TypeError, AttributeError) as e:
        view.problems.append(
            _short(e, path) if isinstance(e, GenlabError) else f"{SWEEP}: not a sweep ({e!r})"
        )
        return view
    by_path = {r.path: r for r in runs}
    for run_id in member_ids:
        member = by_path.get(path / run_id)
        if member is not None:
            member.sweep = path
        view.members.append((run_id, path / run_id, member.state if member else "not started"))
    if (path / AGGREGATE).exists():
        try:
            view.aggregate = read_json(path / AGGREGATE)
            if not isinstance(view.aggregate, dict) or not isinstance(
                view.aggregate.get("entries"), list
            ):
                raise GenlabError(f"{path / AGGREGATE}: not an aggregate (no entries)")
        except GenlabError as e:
            view.aggregate = None
            view.problems.append(_short(e, path))
    else:
        done = view.counts.get("finished", 0)
        view.problems.append(
            f"no {AGGREGATE}: members unfinished ({done} of {len(member_ids)} finished)"
        )
    draw = reporting.plot_sweep if view.aggregate is not None and draw_missing else None
    view.figures = _figures(path, draw, view.problems)
    return view


def read_run(path: Path, *, draw_missing: bool = True) -> RunView:
    """Everything the report shows of one run folder; never raises for a broken folder."""
    path = Path(path).resolve()
    view = RunView(path, "?", "finished")
    view.files = _files(path)
    try:
        record = read_json(path / CONFIG)
        view.study = str(record.get("study", "?"))
        view.config = dict(record.get("config", {}))
    except (GenlabError, AttributeError, TypeError, ValueError) as e:
        view.state = "broken"
        unreadable = isinstance(e, GenlabError)
        view.problems.append(_short(e, path) if unreadable else f"{CONFIG}: not a run ({e})")
        return view
    try:
        view.env = read_json(path / ENV)
        if not isinstance(view.env, dict):
            view.env = None
            raise GenlabError(f"{path / ENV}: not a JSON object")
    except GenlabError as e:
        view.problems.append(_short(e, path))
    view.epochs_done = _count_lines(path / METRICS)
    try:
        check_files(path)  # the other files; summary.json a JSON object too
    except GenlabError as e:  # shown as broken, with what is readable of it
        view.state = "broken"
        view.problems.append(_short(e, path))
    if view.state == "finished" and (path / SUMMARY).exists():
        view.summary = read_json(path / SUMMARY)
    elif view.state == "finished":
        view.state = "unfinished"
        budget = view.config.get("epochs")
        done = f"{view.epochs_done} of {budget}" if budget else str(view.epochs_done)
        view.problems.append(
            f"no {SUMMARY}: unfinished or killed ({done} epochs recorded; "
            f"files last written {_last_written(path)})"
        )
    draw = reporting.plot_run if view.state == "finished" and draw_missing else None
    view.figures = _figures(path, draw, view.problems)
    for file in sorted(path.glob("*.json")):
        shown = file.name not in (CONFIG, ENV, SUMMARY) and file.is_file()
        if shown and file.stat().st_size <= MAX_JSON_BYTES:
            try:
                view.other_json[file.name] = read_json(file)
            except GenlabError as e:
                view.problems.append(_short(e, path))
    return view


def read_analysis(path: Path, *, draw_missing: bool = True) -> AnalysisView:
    """Everything the report shows of one analysis folder; never raises for a damaged one."""
    from genlab.analysis.folders import RESULTS

    path = Path(path).resolve()
    view = AnalysisView(path)
    try:
        record = read_json(path / ANALYSIS)
        if not isinstance(record, dict):
            raise GenlabError(f"{path / ANALYSIS}: not a JSON object")
        view.kind = str(record.get("analysis", "?"))
        module = reporting.analysis_module(path)
        view.title = module.TITLE
        view.settings = dict(record.get("settings") or {})
        results = read_json(path / RESULTS[view.kind])
        if not isinstance(results, dict):
            raise GenlabError(f"{path / RESULTS[view.kind]}: not a JSON object")
        view.runs = _analysis_runs(record, results)
        view.summary = module.summary(results)
        view.key_numbers = [(str(k), str(v)) for k, v in module.key_numbers(results)]
    except (GenlabError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        view.state = "damaged"
        view.problems.append(
            _short(e, path)
            if isinstance(e, GenlabError)
            else f"its files are not those of an analysis ({type(e).__name__}: {e})"
        )
        return view
    if draw_missing and not reporting.figures_drawn(path):
        try:
            reporting.plot_analysis(path)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is noted
            view.problems.append(f"figures could not be drawn ({type(e).__name__}: {e})")
    for name in _analysis_pngs(path / FIGURES):
        try:
            figure = _figure(path / FIGURES / name)
        except OSError as e:
            view.problems.append(f"{name}: unreadable ({e.strerror})")
            continue
        figure.name = name
        (view.more_figures if "/" in name else view.figures).append(figure)
    return view


def _analysis_runs(record: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs an analysis read (analysis.json), with their seed and group from the results."""
    described = results.get("runs") or []
    labels = [g.get("label", "") for g in results.get("groups") or []]
    runs = []
    for i, run in enumerate(record.get("runs") or []):
        extra = described[i] if i < len(described) else {}
        group = extra.get("group")
        runs.append(
            {
                "name": Path(str(run["path"])).name,
                "path": Path(str(run["path"])),
                "study": run.get("study"),
                "seed": extra.get("seed"),
                "group": labels[group] if isinstance(group, int) and group < len(labels) else None,
            }
        )
    return runs


def _analysis_pngs(folder: Path) -> list[str]:
    """The figures of an analysis folder, relative to ``folder``: those its figures.json lists
    (the top-level ones first), else every PNG below it."""
    try:
        listed = read_json(folder / FIGURE_LIST)
        names = [str(n) for n in listed] if isinstance(listed, list) else None
    except GenlabError:
        names = None
    if names is None:
        names = (
            [str(p.relative_to(folder)) for p in folder.rglob("*.png")] if folder.is_dir() else []
        )
    names = [n for n in names if n.endswith(".png") and (folder / n).is_file()]
    return sorted(names, key=lambda n: ("/" in n, n))


def render(
    runs: list[RunView],
    sweeps: list[SweepView],
    not_found: list[Path],
    analyses: list[AnalysisView] | None = None,
    *,
    out: Path | None = None,
    findings: dict[str, Finding] | None = None,
) -> str:
    """The report's HTML (jinja2, autoescaped) for a page written into the folder ``out``, which
    its links to folders are relative to (absolute ``file:`` URIs without it); ``findings``: per
    study, what its reporting module says of its finished runs (``read_finding``)."""
    import jinja2

    from genlab.studies import STUDIES

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["pretty"] = pretty
    env.filters["href"] = lambda path: folder_href(path, out)
    env.filters["run_anchor"] = lambda path: _anchor("run-", path)
    template = env.from_string(
        resources.files("genlab.reporting").joinpath("report.html.j2").read_text()
    )
    by_study: dict[str, list[RunView]] = defaultdict(list)
    for run in runs:
        by_study[run.study].append(run)
    names = set(by_study) | {sw.study for sw in sweeps}
    order = [*STUDIES, *sorted(names - set(STUDIES))]
    studies = [
        _study(
            name,
            by_study[name],
            [sw for sw in sweeps if sw.study == name],
            (findings or {}).get(name) or Finding(),
        )
        for name in order
        if name in names
    ]
    in_page = {r.path: r.anchor for r in runs}
    for a in analyses or []:
        for run in a.runs:
            run["anchor"] = in_page.get(_resolved(run["path"]))
    return template.render(
        studies=studies,
        analyses=analyses or [],
        not_found=not_found,
        counts={s: sum(r.state == s for r in runs) for s in RunView.STATES},
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        total=len(runs),
        sweeps=len(sweeps),
    )


def folder_href(path: Path, base: Path | None) -> str:
    """A link to a folder from a page in ``base``: relative (``../runs/x/``), so the report
    still opens its run folders when both are moved, copied or mailed together; an absolute
    ``file:`` URI without a base or where no relative path exists (another drive)."""
    path = Path(path).absolute()
    if base is not None:
        try:
            relative = os.path.relpath(path, Path(base).absolute())
        except ValueError:
            pass
        else:
            return urllib.parse.quote(Path(relative).as_posix().rstrip("/") + "/")
    return path.as_uri() + "/"


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(path)


def _describe(name: str) -> tuple[str, list[tuple[str, str]] | None]:
    """A study's title and key numbers from its reporting module (None: not a registered study)."""
    if name == UNREADABLE:
        return UNREADABLE_TITLE, None
    try:
        module = reporting.reporting_module(name)
    except KeyError:
        return name, None
    return module.TITLE, list(module.KEY_NUMBERS)


def _study(
    name: str, runs: list[RunView], sweeps: list[SweepView], finding: Finding
) -> dict[str, Any]:
    """One study's section: what its module says of its finished runs, its sweeps' aggregated
    tables, the table of key numbers of its runs and which settings vary between them."""
    title, key_numbers = _describe(name)
    readable = [r for r in runs if r.config]
    keys = sorted({k for r in readable for k in r.config})
    values = {k: [json.dumps(r.config.get(k), sort_keys=True) for r in readable] for k in keys}
    varying = [k for k in keys if len(set(values[k])) > 1]
    shared = {k: readable[0].config.get(k) for k in keys if k not in varying} if readable else {}
    columns = key_numbers or _generic_columns(runs)
    cells = [[_lookup(r.summary, key) for _, key in columns] for r in runs]
    formats = [number_format(key, [row[i] for row in cells]) for i, (_, key) in enumerate(columns)]
    rows = [
        {
            "run": r,
            "settings": [r.config.get(k) for k in varying],
            "numbers": [write(v) for write, v in zip(formats, row, strict=True)],
        }
        for r, row in zip(runs, cells, strict=True)
    ]
    shown = {sw.path: sw.anchor for sw in sweeps}
    return {
        "name": name,
        "title": title,
        "runs": runs,
        "finished": sum(r.state == "finished" for r in runs),
        "finding": finding,
        "varying": varying,
        "shared": shared,
        "columns": [heading for heading, _ in columns],
        "rows": rows,
        "notes": any(r.problems for r in runs),
        "in_sweeps": any(r.sweep for r in runs),
        "sweep_anchors": shown,
        "sweeps": [_sweep(sw, key_numbers) for sw in sweeps],
    }


def _sweep(sweep: SweepView, key_numbers: list[tuple[str, str]] | None) -> dict[str, Any]:
    """A sweep's table: one row per aggregate entry (the settings that vary between entries or
    were swept, n, the seeds, then each key number as mean ± half-width of its 95% interval)."""
    entries = (sweep.aggregate or {}).get("entries", [])
    settings = [e.get("settings", {}) for e in entries]
    keys: dict[str, None] = {}
    for st in settings:
        keys.update(dict.fromkeys(st))
    varying = [
        k
        for k in keys
        if k in sweep.swept or len({json.dumps(st.get(k), sort_keys=True) for st in settings}) > 1
    ]
    if key_numbers is None:  # not a registered study: every metric the entries share
        metrics = sorted({m for e in entries for m in e.get("metrics", {})})
        key_numbers = [(m.replace("_", " "), m) for m in metrics]
    formats = [
        number_format(key, [_mean(e, key) for e in entries if _mean(e, key) is not None])
        for _, key in key_numbers
    ]
    rows = [
        {
            "settings": [e.get("settings", {}).get(k) for k in varying],
            "n": e.get("n"),
            "seeds": e.get("seeds", []),
            "numbers": [
                _aggregated(e, key, write)
                for (_, key), write in zip(key_numbers, formats, strict=True)
            ],
        }
        for e in entries
    ]
    return {
        "view": sweep,
        "varying": varying,
        "columns": [heading for heading, _ in key_numbers],
        "rows": rows,
        "confidence": (sweep.aggregate or {}).get("confidence"),
        "method": (sweep.aggregate or {}).get("method"),
    }


def _mean(entry: dict[str, Any], key: str) -> Any:
    metric = entry.get("metrics", {}).get(key)
    return metric.get("mean") if isinstance(metric, dict) else None


def _aggregated(entry: dict[str, Any], key: str, write: NumberFormat) -> str:
    """One cell of a sweep's table: "mean ± half-width" of the 95% interval, the mean alone for
    n = 1 (no interval) or when every seed gave the same value, "—" for a metric no member has,
    "not in every run" for one only some members have (e.g. a time to fit never reached)."""
    metric = entry.get("metrics", {}).get(key)
    if metric is None:
        return "not in every run" if key in entry.get("incomplete", []) else fmt(None)
    return write.interval(metric["mean"], metric.get("ci95"))


# -- numbers as a reader wants them ------------------------------------------------------------
FRACTION_WORDS = {"acc", "accuracy", "gap", "fraction", "barrier", "cka", "cos"}  # in [-1, 1]
SECONDS_WORDS = {"seconds", "s", "sec", "time"}  # as a key's last word: time_to_fit is epochs


@dataclass(frozen=True)
class NumberFormat:
    """How one column's numbers are written. ``kind``: ``fraction`` (3 decimals), ``seconds``
    (1 decimal), ``count`` (an integer, thousands separated), ``real`` (``decimals`` decimals),
    ``sci`` (3 significant digits, an exponent), ``given`` (a setting: as it was typed)."""

    kind: str
    decimals: int = 3

    def __call__(self, value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, dict):
            return "; ".join(f"{k}: {_fmt_short(v)}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return ", ".join(map(_fmt_short, value))
        if not isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if self.kind == "given":
            return f"{value:,}" if isinstance(value, int) else _shortest(value)
        if self.kind == "fraction":
            return f"{value:.3f}"
        if self.kind == "seconds":
            return f"{value:,.1f}"
        if self.kind == "count":
            return f"{round(value):,}"
        if self.kind == "sci":
            return f"{value:.2e}"
        return f"{value:,.{self.decimals}f}"

    def interval(self, mean: float, ci95: list[float] | None) -> str:
        """``0.740 ± 0.099``: the mean and the half-width of its interval, both at the column's
        precision (accuracies 3 decimals, seconds 1), else both to the half-width's second
        significant digit; the mean alone with no interval or a zero one (every seed gave the
        same value, up to float rounding)."""
        integral = isinstance(mean, float) and mean.is_integer() and abs(mean) < 1e15
        mean_text = self(int(mean) if integral and self.kind == "count" else mean)
        if ci95 is None or None in ci95:
            return mean_text
        half = (ci95[1] - ci95[0]) / 2
        if not math.isfinite(half):
            return f"{mean_text} ± {half}"
        if half <= 1e-12 * max(abs(mean), 1.0):  # equal in every seed, up to float rounding
            return mean_text
        if self.kind in ("fraction", "seconds"):
            return f"{mean_text} ± {self(half)}"
        if abs(mean) >= 1e5 or (abs(mean) < 1e-3 and mean != 0):
            return f"{mean:.2e} ± {half:.1e}"
        decimals = max(0, 1 - math.floor(math.log10(half)))
        if decimals > 8:
            return f"{mean:.2e} ± {half:.1e}"
        return f"{mean:,.{decimals}f} ± {half:,.{decimals}f}"


def number_format(key: str | None, values: Iterable[Any] = ()) -> NumberFormat:
    """The one place a column's precision is decided, from its dotted key into summary.json and
    the values it holds, so a column never shows 0.9756 above 1 or 0.0 beside 1.000:

    - accuracies, gaps, fractions, barriers, similarities (a word of the key: ``acc``, ``gap``,
      ``fraction``, ...; every value in [-1, 1]): 3 decimals (``0.976``, ``-0.007``, ``1.000``);
    - seconds (the key's last word ``seconds``, ``s``, ``time``): 1 decimal (``17.2``);
    - counts (every value a whole number, as a mean of equal counts is): thousands separated
      (``99,210``);
    - other reals: one number of decimals for the column, 3 significant digits of its smallest
      nonzero value (``2.648``, ``2.500``); with an exponent (``2.70e-13``) when that value is
      below 0.001, the largest is 1e6 or more, or they span more than 4 decades;
    - no key (a setting, as typed): ``0.005``, ``1.0``, ``64``.
    """
    if key is None:
        return NumberFormat("given")
    words = {w for part in key.lower().split(".") for w in part.split("_")}
    last = key.lower().split(".")[-1].split("_")[-1]
    numbers = [
        v
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if last in SECONDS_WORDS or "seconds" in words:  # seconds_per_epoch too
        return NumberFormat("seconds", 1)
    if words & FRACTION_WORDS and all(-1 <= v <= 1 for v in numbers):
        return NumberFormat("fraction", 3)
    if all(isinstance(v, int) or v.is_integer() for v in numbers):  # a mean of counts too
        return NumberFormat("count", 0)
    sizes = [abs(v) for v in numbers if v != 0]
    if not sizes:
        return NumberFormat("real", 1)
    low, high = min(sizes), max(sizes)
    if low < 1e-3 or high >= 1e6 or high / low > 1e4:
        return NumberFormat("sci")
    return NumberFormat("real", max(0, 2 - math.floor(math.log10(low))))


def fmt(value: Any, key: str | None = None) -> str:
    """A value as the report writes it in the column of ``key`` (``number_format``): 0.976,
    17.2, 99,210, "—" for none; without a key, as typed (a setting)."""
    return number_format(key, [value])(value)


def fmt_interval(mean: float, ci95: list[float] | None, key: str | None = "") -> str:
    """A mean ± the half-width of its interval in the column of ``key`` (``number_format``;
    ``NumberFormat.interval``)."""
    return number_format(key, [mean]).interval(mean, ci95)


def _shortest(value: float) -> str:
    """A float as typed: the shortest text that reads back to it (0.005, 1.0, 1e-05)."""
    text = repr(value)
    return text if len(text) <= 10 else f"{value:.4g}"


def _fmt_short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return fmt(value)


def pretty(obj: Any) -> str:
    """A JSON object as the details blocks show it: indented, keys sorted, floats rounded to 4
    significant digits for reading (the file keeps full precision)."""
    return json.dumps(_rounded(obj), indent=2, sort_keys=True, default=str)


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float) and math.isfinite(obj):
        return float(f"{obj:.4g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj


def _lookup(summary: dict[str, Any] | None, dotted: str) -> Any:
    value: Any = summary
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _generic_columns(runs: list[RunView]) -> list[tuple[str, str]]:
    keys: dict[str, None] = {}
    for r in runs:
        for k, v in (r.summary or {}).items():
            if isinstance(v, (int, float, str)) or v is None:
                keys.setdefault(k)
    return [(k.replace("_", " "), k) for k in keys]


def _missing(path: Path) -> RunView:
    return RunView(Path(path).absolute(), "?", "missing", [f"{path}: no such file or folder"])


def _anchor(prefix: str, path: Path) -> str:
    return prefix + "".join(ch if ch.isalnum() else "-" for ch in str(path))


def _figures(path: Path, draw: Callable[[Path], Any] | None, problems: list[str]) -> list[Figure]:
    """The PNGs of ``path/figures``, drawn first by ``draw(path)`` if there are none; what
    cannot be drawn or read is noted in ``problems``, never fatal."""
    if draw is not None and not _pngs(path / FIGURES):  # run and sweep redraw a cut folder
        try:
            draw(path)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is noted
            problems.append(f"figures could not be drawn ({type(e).__name__}: {e})")
    figures = []
    for png in _pngs(path / FIGURES):
        try:
            figures.append(_figure(png))
        except OSError as e:
            problems.append(f"{png.name}: unreadable ({e.strerror})")
    return figures


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def _figure(path: Path) -> Figure:
    blob = path.read_bytes()
    data = base64.b64encode(blob).decode("ascii")
    return Figure(path.name, f"data:image/png;base64,{data}", width=_css_width(blob))


def _css_width(png: bytes) -> int:
    """A PNG's width in CSS px (96 per inch) from its pixel width and the resolution its pHYs
    chunk records (matplotlib writes the dpi it saved at; genlab's ``DPI`` when none): shown
    no wider, a figure's text is never blown up past its font size. 0 for what is not a PNG."""
    if png[12:16] != b"IHDR":
        return 0
    (pixels,) = struct.unpack(">I", png[16:20])
    dpi = float(DPI)
    at = 8
    while at + 8 <= len(png):  # the chunks: length, type, data, CRC; pHYs comes before IDAT
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        if kind == b"pHYs" and length == 9:
            per_unit, _, unit = struct.unpack(">IIB", png[at + 8 : at + 17])
            if unit == 1 and per_unit > 0:  # per metre
                dpi = per_unit * 0.0254
            break
        if kind == b"IDAT":
            break
        at += 12 + length
    return round(pixels * 96 / dpi)


def _files(path: Path) -> list[tuple[str, int]]:
    if not path.is_dir():
        return []
    return [
        (str(f.relative_to(path)), f.stat().st_size)
        for f in sorted(path.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    ]


def _last_written(path: Path) -> str:
    times = [f.stat().st_mtime for f in path.iterdir() if f.is_file()]
    if not times:
        return "never"
    return datetime.fromtimestamp(max(times), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _count_lines(path: Path) -> int:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return 0
    count = 0
    for line in text.splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by a kill
        count += 1
    return count


def _short(e: Exception, folder: Path) -> str:
    """The error's first line, file names relative to the run folder."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.replace(f"{folder}/", "")
