"""Every figure reads without squinting: no text below 8 pt, no legend over plotted data.

``figure_problems(fig)`` draws a matplotlib figure and lists what is wrong with it; it is tried
on small hand-made figures (so it can fail), then on every figure of the shipped demo, redrawn
through the reporting entry points and the HTML report with ``plotting.save`` checking each
figure before it writes it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genlab import reporting
from genlab.reporting import plotting
from genlab.runs import ANALYSIS, FIGURE_LIST, FIGURES, is_sweep

MIN_POINTS = 8.0  # the smallest font a figure may use
GRID_PX = 2.0  # spacing of the points at which a filled area (band, bar) is looked for


# -- the check ------------------------------------------------------------------------------------
def figure_problems(fig: Any) -> list[str]:
    """What makes ``fig`` hard to read, one line each: every text drawn (visible, not empty:
    titles, labels, tick labels, legend entries, annotations, colour bar labels) below
    ``MIN_POINTS``; every legend whose box covers plotted data of an axes it lies on (lines and
    their markers, error bars, scatter points, bands and bars where they are filled, images) or
    a text drawn outside it. A legend outside every axes passes by construction."""
    texts = _drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    problems = [
        f"text {t.get_text()!r} at {t.get_fontsize():g} pt (< {MIN_POINTS:g})"
        for t in texts
        if t.get_fontsize() < MIN_POINTS - 1e-9
    ]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in [*legends, *fig.legends]:
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        name = _legend_name(legend)
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            what = _data_under(ax, box)
            if what:
                title = ax.get_title() or ax.get_ylabel() or "an axes"
                problems.append(f"legend {name} covers {what} of {title!r}")
        own = {id(t) for t in legend.get_texts()} | {id(legend.get_title())}
        for t in texts:
            if id(t) in own:
                continue
            extent = t.get_window_extent(renderer)
            if _overlap(box, extent, inset=1.0):
                problems.append(f"legend {name} covers the text {t.get_text()!r}")
    return problems


def _drawn_texts(fig: Any) -> list[Any]:
    """The figure drawn once, and the texts that drew (visible and not empty), in order."""
    from matplotlib.text import Text

    drawn: dict[int, Any] = {}
    draw = Text.draw

    def recording(self: Any, renderer: Any) -> Any:
        if self.get_visible() and self.get_text().strip():
            drawn[id(self)] = self
        return draw(self, renderer)

    Text.draw = recording
    try:
        fig.canvas.draw()
    finally:
        Text.draw = draw
    return list(drawn.values())


def _legend_name(legend: Any) -> str:
    labels = [t.get_text() for t in legend.get_texts()]
    return repr(labels[0] + (", ..." if len(labels) > 1 else "")) if labels else "(empty)"


def _overlap(a: Any, b: Any, inset: float = 0.0) -> bool:
    """Whether two display boxes share an area (each shrunk by ``inset`` pixels)."""
    return (
        min(a.x1, b.x1) - max(a.x0, b.x0) > 2 * inset
        and min(a.y1, b.y1) - max(a.y0, b.y0) > 2 * inset
    )


def _inside(points: Any, box: Any) -> bool:
    points = points[np.isfinite(points).all(axis=1)]
    return bool(
        (
            (points[:, 0] > box.x0)
            & (points[:, 0] < box.x1)
            & (points[:, 1] > box.y0)
            & (points[:, 1] < box.y1)
        ).any()
    )


def _along(vertices: Any, codes: Any = None) -> Any:
    """Points every pixel or closer along a path's segments (display coordinates); a segment
    with a non-finite end or one that starts a new sub-path (MOVETO) is not drawn."""
    from matplotlib.path import Path as MplPath

    if len(vertices) < 2:
        return vertices
    a, b = vertices[:-1], vertices[1:]
    keep = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if codes is not None:
        keep &= codes[1:] != MplPath.MOVETO
    a, b = a[keep], b[keep]
    if not len(a):
        return vertices
    steps = np.ceil(np.hypot(*(b - a).T)).astype(int).clip(1, 10_000)
    t = np.concatenate([np.linspace(0, 1, s + 1) for s in steps])
    start = np.repeat(a, steps + 1, axis=0)
    step = np.repeat(b - a, steps + 1, axis=0)
    return np.vstack([vertices, start + t[:, None] * step])


def _grid(box: Any) -> Any:
    xs = np.arange(box.x0 + GRID_PX / 2, box.x1, GRID_PX)
    ys = np.arange(box.y0 + GRID_PX / 2, box.y1, GRID_PX)
    return np.array([(x, y) for x in xs for y in ys]).reshape(-1, 2)


def _covers_path(path: Any, box: Any, *, filled: bool, stroked: bool) -> bool:
    vertices = np.asarray(path.vertices, dtype=float)
    if stroked and _inside(_along(vertices, path.codes), box):
        return True
    if filled and np.isfinite(vertices).all() and len(vertices) >= 3:
        grid = _grid(box)
        return bool(len(grid) and path.contains_points(grid).any())
    return False


def _data_under(ax: Any, legend_box: Any) -> str | None:
    """What plotted data of ``ax`` lies under ``legend_box`` (None: nothing). Data is drawn
    clipped to the axes, so only the part of the box inside the axes counts."""
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    if not _overlap(legend_box, ax.bbox):
        return None
    box = Bbox.intersection(legend_box, ax.bbox)
    if box is None:
        return None
    if any(im.get_visible() for im in ax.images):
        return "an image"
    for line in ax.lines:
        if not line.get_visible():
            continue
        path = line.get_transform().transform_path(line.get_path())
        stroked = line.get_linestyle() not in ("None", "none", "", " ")
        marked = line.get_marker() not in (None, "None", "none", "", " ")
        vertices = np.asarray(path.vertices, dtype=float)
        if (stroked and _inside(_along(vertices, path.codes), box)) or (
            marked and _inside(vertices, box)
        ):
            return f"the line {line.get_label()!r}"
    for c in ax.collections:
        if not c.get_visible():
            continue
        if isinstance(c, PathCollection) and len(c.get_offsets()):  # scatter: points
            points = c.get_offset_transform().transform(np.asarray(c.get_offsets()))
            if _inside(points, box):
                return "scattered points"
            continue
        filled = len(c.get_facecolor()) and (np.asarray(c.get_facecolor())[:, 3] > 0).any()
        stroked = len(c.get_edgecolor()) and (np.asarray(c.get_edgecolor())[:, 3] > 0).any()
        transform = c.get_transform()
        for path in c.get_paths():
            if _covers_path(
                transform.transform_path(path), box, filled=bool(filled), stroked=bool(stroked)
            ):
                return f"a {type(c).__name__} (band or error bars)"
    for patch in ax.patches:
        if not patch.get_visible():
            continue
        path = patch.get_transform().transform_path(patch.get_path())
        if _covers_path(path, box, filled=patch.get_fill(), stroked=patch.get_linewidth() > 0):
            return f"a {type(patch).__name__} (bar)"
    return None


# -- the check can fail ---------------------------------------------------------------------------
@pytest.fixture
def plt() -> Any:
    plt = plotting.pyplot()
    yield plt
    plt.close("all")


def test_a_legend_over_a_line_is_one_problem(plt):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [1, 1], label="flat at the top")  # the legend in the upper right covers it
    ax.plot([0, 1], [0, 0.2], label="low")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper right", fontsize=8)
    ax.tick_params(labelsize=9)
    problems = figure_problems(fig)
    assert len(problems) == 1 and "covers the line 'flat at the top'" in problems[0]


def test_a_legend_over_a_band_where_it_is_filled(plt):
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3))
    for ax in (left, right):
        ax.fill_between([0, 1], [0.0, 0.0], [0.3, 0.3], alpha=0.2, label="band")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.tick_params(labelsize=9)
    left.legend(loc="lower left", fontsize=8)  # over the band
    right.legend(loc="upper right", fontsize=8)  # over nothing
    problems = figure_problems(fig)
    assert len(problems) == 1 and "PolyCollection" in problems[0]


def test_a_legend_outside_the_data_is_no_problem(plt):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.linspace(0, 1, 50), np.linspace(0, 1, 50) ** 2, label="x²")
    ax.bar([0.2, 0.5], [1.0, 1.0], width=0.1, label="bars")
    ax.tick_params(labelsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0))
    assert figure_problems(fig) == []


def test_a_six_point_tick_label_is_one_problem(plt):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_xticks([0.5], ["half"], fontsize=6)
    ax.set_yticks([0, 1], ["0", "1"], fontsize=9)
    problems = figure_problems(fig)
    assert problems == ["text 'half' at 6 pt (< 8)"]


def test_a_legend_over_a_text_or_an_image_is_a_problem(plt):
    fig, (ax, im) = plt.subplots(1, 2, figsize=(7, 3))
    ax.plot([0, 1], [0, 0.1], label="low")
    ax.set_ylim(0, 1)
    ax.text(0.95, 0.95, "a note", transform=ax.transAxes, ha="right", va="top", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    im.imshow(np.eye(3))
    im.plot([], [], label="nothing")
    im.legend(loc="center", fontsize=8)
    for a in (ax, im):
        a.tick_params(labelsize=9)
    problems = figure_problems(fig)
    assert len(problems) == 2
    assert any("covers the text 'a note'" in p for p in problems)
    assert any("an image" in p for p in problems)


def test_hidden_axes_and_empty_texts_are_not_checked(plt):
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].plot([0, 1], [0, 1])
    axes[0].tick_params(labelsize=9)
    axes[0].set_title("")
    axes[1].tick_params(labelsize=5)
    axes[1].set_visible(False)
    assert figure_problems(fig) == []


# -- every figure of the demo ---------------------------------------------------------------------
class Checked:
    """Every figure ``plotting.save`` wrote (path -> its problems), and every PNG matplotlib
    wrote at all (so a figure that bypasses ``save`` shows up)."""

    def __init__(self) -> None:
        self.problems: dict[Path, list[str]] = {}
        self.written = 0

    def bad(self) -> dict[str, list[str]]:
        return {str(p): found for p, found in self.problems.items() if found}


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Checked:
    """``plotting.save`` checks each figure before it writes it, in every module that calls it."""
    import importlib

    from matplotlib.figure import Figure

    for name in (*reporting.ANALYSIS_MODULES.values(), "genlab.reporting.html"):
        importlib.import_module(name)
    from genlab.studies import STUDIES

    for study in STUDIES.values():
        importlib.import_module(study.reporting)
    found = Checked()
    real_save, real_savefig = plotting.save, Figure.savefig

    def save(fig: Any, path: Path) -> Path:
        found.problems[Path(path)] = figure_problems(fig)
        return real_save(fig, path)

    def savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        found.written += 1
        return real_savefig(self, *args, **kwargs)

    patched = [m for n, m in sys.modules.items() if n.startswith("genlab")]
    for module in patched:
        if getattr(module, "save", None) is real_save:
            monkeypatch.setattr(module, "save", save)
    monkeypatch.setattr(Figure, "savefig", savefig)
    return found


def _listed(folder: Path) -> list[str]:
    names = json.loads((folder / FIGURES / FIGURE_LIST).read_text())
    return [n for n in names if n.endswith(".png")]


def test_every_demo_figure_reads_cleanly(demo_out, tmp_path, checked):
    out, _ = demo_out
    copy = tmp_path / "demo"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    folders = sorted(f.parent.parent for f in copy.rglob(FIGURE_LIST))
    expected = sum(len(_listed(folder)) for folder in folders)
    assert expected >= 25  # the demo draws about thirty figures
    for folder in folders:
        if (folder / ANALYSIS).exists():
            reporting.plot_analysis(folder)
        elif is_sweep(folder):
            reporting.plot_sweep(folder)
        else:
            reporting.plot_run(folder)
        assert sorted(_listed(folder)) == sorted(
            str(p.relative_to(folder / FIGURES))
            for p in checked.problems
            if folder / FIGURES in p.parents
        )
    assert len(checked.problems) == expected == checked.written
    assert checked.bad() == {}

    from genlab.reporting.html import build_report

    before = len(checked.problems)
    build_report([copy], tmp_path / "report", log=lambda line: None)
    assert checked.written == len(checked.problems) >= before  # report-only figures: checked
    assert checked.bad() == {}
