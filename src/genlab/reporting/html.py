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

Figures are embedded as base64 ``data:`` URIs, so the page is one file that opens from the file
system with no network, can be mailed or moved, and never shows a stale or missing image (about a
third larger than the PNGs). Everything read from a run folder passes through jinja2's
autoescaping, and a Content-Security-Policy forbids scripts, so a run named ``<script>`` shows as
text.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from genlab import reporting  # its plot_run/plot_sweep looked up when called (patchable)
from genlab.errors import GenlabError
from genlab.fileio import atomic_write, read_json
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


@dataclass
class Figure:
    name: str  # the file name
    src: str  # a data: URI
    wide: bool = False  # a row of panels: shown across the page, not in a half-width cell


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
    html = render(runs, sweeps, not_found, analyses)
    target = Path(out) / REPORT
    atomic_write(target, lambda f: f.write(html), mode="w")
    return target


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
) -> str:
    """The report's HTML (jinja2, autoescaped)."""
    import jinja2

    from genlab.studies import STUDIES

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["pretty"] = lambda obj: json.dumps(obj, indent=2, sort_keys=True, default=str)
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
        _study(name, by_study[name], [sw for sw in sweeps if sw.study == name])
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


def _study(name: str, runs: list[RunView], sweeps: list[SweepView]) -> dict[str, Any]:
    """One study's section: its sweeps' aggregated tables, the table of key numbers of its runs
    and which settings vary between them."""
    title, key_numbers = _describe(name)
    readable = [r for r in runs if r.config]
    keys = sorted({k for r in readable for k in r.config})
    values = {k: [json.dumps(r.config.get(k), sort_keys=True) for r in readable] for k in keys}
    varying = [k for k in keys if len(set(values[k])) > 1]
    shared = {k: readable[0].config.get(k) for k in keys if k not in varying} if readable else {}
    columns = key_numbers or _generic_columns(runs)
    rows = [
        {
            "run": r,
            "settings": [r.config.get(k) for k in varying],
            "numbers": [_lookup(r.summary, key) for _, key in columns],
        }
        for r in runs
    ]
    shown = {sw.path: sw.anchor for sw in sweeps}
    return {
        "name": name,
        "title": title,
        "runs": runs,
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
    rows = [
        {
            "settings": [e.get("settings", {}).get(k) for k in varying],
            "n": e.get("n"),
            "seeds": e.get("seeds", []),
            "numbers": [_aggregated(e, key) for _, key in key_numbers],
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


def _aggregated(entry: dict[str, Any], key: str) -> str:
    """One cell of a sweep's table: "mean ± half-width" of the 95% interval, the mean alone for
    n = 1 (no interval) or when every seed gave the same value, "—" for a metric no member has,
    "not in every run" for one only some members have (e.g. a time to fit never reached)."""
    metric = entry.get("metrics", {}).get(key)
    if metric is None:
        return "not in every run" if key in entry.get("incomplete", []) else fmt(None)
    return fmt_interval(metric["mean"], metric.get("ci95"))


def fmt_interval(mean: float, ci95: list[float] | None) -> str:
    """``0.740 ± 0.099``: the mean and the half-width of its interval, both to the half-width's
    second significant digit; the mean alone (as ``fmt`` writes it) with no interval or a zero
    one (every seed gave the same value, up to float rounding)."""
    if isinstance(mean, float) and mean.is_integer() and abs(mean) < 1e15:
        mean_text = fmt(int(mean))
    else:
        mean_text = fmt(mean)
    if ci95 is None or None in ci95:
        return mean_text
    half = (ci95[1] - ci95[0]) / 2
    if not math.isfinite(half):
        return f"{mean_text} ± {half}"
    if half <= 1e-12 * max(abs(mean), 1.0):  # equal in every seed, up to float rounding
        return mean_text
    if abs(mean) >= 1e5 or (abs(mean) < 1e-3 and mean != 0):
        return f"{mean:.2e} ± {half:.1e}"
    decimals = max(0, 1 - math.floor(math.log10(half)))
    if decimals > 8:
        return f"{mean:.2e} ± {half:.1e}"
    return f"{mean:,.{decimals}f} ± {half:,.{decimals}f}"


def fmt(value: Any) -> str:
    """A number as a reader wants it in a table: 0.9234, 1.2e-05, 12,345, "—" for none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value == 0:
            return str(value)
        return f"{value:.2e}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt_short(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_fmt_short, value))
    return str(value)


def _fmt_short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return fmt(value)


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
    width, height = struct.unpack(">II", blob[16:24]) if blob[12:16] == b"IHDR" else (0, 1)
    data = base64.b64encode(blob).decode("ascii")
    return Figure(path.name, f"data:image/png;base64,{data}", wide=width > 1.8 * height)


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
