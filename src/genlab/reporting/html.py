"""``genlab report``: one self-contained HTML page for any set of run folders.

For each study: the key numbers of its runs as one table (one row per run, the settings that
differ between them as columns), the figures, and per run its resolved config, environment,
summary and where its files are. The page reads run folders only and never trains; a finished
run without figures gets them drawn from its files (``plot_run``). A path that does not exist, a
run without summary.json (unfinished or killed) and a run whose JSON does not parse are shown as
such, in their own rows, instead of stopping the report.

Figures are embedded as base64 ``data:`` URIs, so the page is one file that opens from the file
system with no network, can be mailed or moved, and never shows a stale or missing image (about a
third larger than the PNGs). Everything read from a run folder passes through jinja2's
autoescaping, and a Content-Security-Policy forbids scripts, so a run named ``<script>`` shows as
text.
"""

from __future__ import annotations

import base64
import json
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.fileio import atomic_write, read_json
from genlab.runs import CONFIG, ENV, FIGURES, METRICS, SUMMARY, find_runs

REPORT = "index.html"
LogFn = Callable[[str], None]
MAX_JSON_BYTES = 64_000  # other JSON files of a run are shown up to this size (not label lists)

# The key numbers of each study: (column heading, dotted key into summary.json). A study missing
# here gets a table of its summary's top-level numbers; a new study adds itself with one entry.
KEY_NUMBERS: dict[str, list[tuple[str, str]]] = {
    "robustness": [
        ("params", "params"),
        ("test acc", "final_acc.test"),
        ("flipped test acc", "final_acc.test_vflip"),
        ("flip gap", "flip_gap"),
        ("best test acc", "best_acc.test"),
        ("epochs", "epochs"),
        ("seconds", "seconds"),
    ],
    "random-labels": [
        ("labels changed", "fraction_changed"),
        ("params", "params"),
        ("train acc (fitted labels)", "final_train_fitted_acc"),
        ("train acc (true labels)", "final_acc.train_true"),
        ("test acc", "final_acc.test"),
        ("epoch fitted", "time_to_fit"),
        ("epochs", "epochs"),
        ("seconds", "seconds"),
    ],
    "memorization-map": [
        ("n", "n"),
        ("cells", "cells"),
        ("fit threshold", "stop_at_train_acc"),
        ("smallest fitting width per p", "smallest_fitting"),
        ("seconds", "seconds"),
    ],
    "linreg": [
        ("n", "n"),
        ("p", "p"),
        ("rank", "rank"),
        ("test MSE (min-norm)", "test_mse_min_norm"),
        ("test MSE (theory)", "test_mse_theory"),
        ("SGD train MSE", "sgd_final_train_mse"),
        ("|b_SGD - b_min-norm|", "sgd_final_dist_to_min_norm"),
        ("KS to Marchenko-Pastur", "ks_marchenko_pastur"),
        ("seconds", "seconds"),
    ],
}
STUDY_TITLES = {
    "robustness": "Flip robustness",
    "random-labels": "Random labels",
    "memorization-map": "Memorization map",
    "linreg": "Over-parametrized linear regression",
    "?": "Missing or unreadable run folders",
}


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

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def anchor(self) -> str:
        return "run-" + "".join(ch if ch.isalnum() else "-" for ch in str(self.path))


@dataclass
class FigureSet:
    """Figures comparing several runs (a grid's ``figures`` folder), outside any run folder."""

    path: Path
    study: str
    figures: list[Figure]


def build_report(
    paths: list[Path], out: Path, *, draw_missing: bool = True, log: LogFn = print
) -> Path:
    """Write ``out/index.html`` for the run folders at or below ``paths``; returns its path.
    Logs one line per run that is not finished, and per path holding no run."""
    paths = [Path(p) for p in paths]
    runs = [_missing(p) for p in paths if not p.exists()]
    not_found = [p for p in paths if p.exists() and not find_runs([p])]
    runs += [read_run(p, draw_missing=draw_missing) for p in find_runs(paths)]
    sets = _figure_sets(paths, runs)
    for r in runs:
        if r.state != "finished" or r.problems:
            log(f"{r.path}: {r.state}; {'; '.join(r.problems)}")
    for p in not_found:
        log(f"{p}: no run folders found")
    html = render(runs, sets, not_found)
    target = Path(out) / REPORT
    atomic_write(target, lambda f: f.write(html), mode="w")
    return target


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
    if not (path / SUMMARY).exists():
        view.state = "unfinished"
        budget = view.config.get("epochs")
        done = f"{view.epochs_done} of {budget}" if budget else str(view.epochs_done)
        view.problems.append(
            f"no {SUMMARY}: unfinished or killed ({done} epochs recorded; "
            f"files last written {_last_written(path)})"
        )
    else:
        try:
            view.summary = read_json(path / SUMMARY)
            if not isinstance(view.summary, dict):
                raise GenlabError(f"{path / SUMMARY}: not a JSON object")
        except GenlabError as e:
            view.state, view.summary = "broken", None
            view.problems.append(_short(e, path))
    if view.state == "finished" and draw_missing and not _pngs(path / FIGURES):
        try:
            from genlab.reporting.figures import plot_run

            plot_run(path)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is noted, not fatal
            view.problems.append(f"figures could not be drawn ({type(e).__name__}: {e})")
    for png in _pngs(path / FIGURES):
        try:
            view.figures.append(_figure(png))
        except OSError as e:
            view.problems.append(f"{png.name}: unreadable ({e.strerror})")
    for file in sorted(path.glob("*.json")):
        if file.name not in (CONFIG, ENV, SUMMARY) and file.stat().st_size <= MAX_JSON_BYTES:
            try:
                view.other_json[file.name] = read_json(file)
            except GenlabError as e:
                view.problems.append(_short(e, path))
    return view


def render(runs: list[RunView], sets: list[FigureSet], not_found: list[Path]) -> str:
    """The report's HTML (jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["pretty"] = lambda obj: json.dumps(obj, indent=2, sort_keys=True, default=str)
    template = env.from_string(
        resources.files("genlab.reporting").joinpath("report.html.j2").read_text()
    )
    by_study: dict[str, list[RunView]] = defaultdict(list)
    for run in runs:
        by_study[run.study].append(run)
    order = [*KEY_NUMBERS, *sorted(set(by_study) - set(KEY_NUMBERS))]
    studies = [_study(name, by_study[name], sets) for name in order if name in by_study]
    return template.render(
        studies=studies,
        not_found=not_found,
        counts={s: sum(r.state == s for r in runs) for s in RunView.STATES},
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        total=len(runs),
    )


def _study(name: str, runs: list[RunView], sets: list[FigureSet]) -> dict[str, Any]:
    """One study's section: the table of key numbers and which settings vary between its runs."""
    readable = [r for r in runs if r.config]
    keys = sorted({k for r in readable for k in r.config})
    values = {k: [json.dumps(r.config.get(k), sort_keys=True) for r in readable] for k in keys}
    varying = [k for k in keys if len(set(values[k])) > 1]
    shared = {k: readable[0].config.get(k) for k in keys if k not in varying} if readable else {}
    columns = KEY_NUMBERS.get(name) or _generic_columns(runs)
    rows = [
        {
            "run": r,
            "settings": [r.config.get(k) for k in varying],
            "numbers": [_lookup(r.summary, key) for _, key in columns],
        }
        for r in runs
    ]
    return {
        "name": name,
        "title": STUDY_TITLES.get(name, name),
        "runs": runs,
        "varying": varying,
        "shared": shared,
        "columns": [heading for heading, _ in columns],
        "rows": rows,
        "notes": any(r.problems for r in runs),
        "sets": [s for s in sets if s.study == name],
    }


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


def _figure_sets(paths: list[Path], runs: list[RunView]) -> list[FigureSet]:
    """``figures`` folders outside run folders (drawn by ``--grid``), with the study of the runs
    beside them."""
    run_dirs = {r.path for r in runs}
    found: dict[Path, FigureSet] = {}
    for p in paths:
        if not p.is_dir():
            continue
        for folder in [p / FIGURES, *p.rglob(FIGURES)]:
            folder = folder.resolve()
            if folder in found or not folder.is_dir():
                continue
            if any(parent in run_dirs for parent in folder.parents):
                continue
            pngs = _pngs(folder)
            if not pngs:
                continue
            near = [r.study for r in runs if folder.parent in r.path.parents]
            study = max(set(near), key=near.count) if near else "?"
            found[folder] = FigureSet(folder, study, [_figure(f) for f in pngs])
    return list(found.values())


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
