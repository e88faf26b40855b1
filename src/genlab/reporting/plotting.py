"""What every study's figures share: palette, resolution, file writing, reading run and sweep
folders, heat maps, and mean curves over seeds with a shaded 95% band.

PNG at 200 dpi, matplotlib's Agg backend, the Okabe-Ito palette (safe for colour-blind readers).
This module imports no per-study reporting module; they import it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.aggregate import setting_label, varying_keys
from genlab.fileio import atomic_write, read_json
from genlab.runs import CONFIG, DATASET, SWEEP, Run

OKABE_ITO = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#E69F00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
)
DPI = 200
BAND_NOTE = "line: mean over seeds; band: 95% Student-t interval"
TEXT_PT = 9  # titles and notes of every figure
SMALL_PT = 8  # the smallest text of any figure: legends, numbers in heat maps, annotations


def color(k: int) -> str:
    """The k-th colour of the palette (wrapping around)."""
    return OKABE_ITO[k % len(OKABE_ITO)]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG (atomically) and close it. The file is cut to what the
    figure draws (``bbox_inches="tight"``): a legend placed outside the axes (``legend_right``,
    ``legend_below``) is in it, and nothing is cut off."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))
    pyplot().close(fig)
    return Path(path)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-epoch records ([] before its first epoch; a cut last line is dropped)."""
    return Run(Path(run_dir), "resume").metrics()


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A trained run's resolved config, dataset.json and per-epoch records."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / CONFIG)["config"]
    return cfg, read_json(run_dir / DATASET), read_metrics(run_dir)


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    """A sweep folder's sweep.json: ``{"study", "name", "swept", "members": [...]}``."""
    return read_json(Path(sweep_dir) / SWEEP)


def slug(label: str) -> str:
    """A group label as a file name part: ``width=4, label_noise=0.0`` -> ``width4_label_noise0.0``."""
    return re.sub(r"[^\w.-]+", "_", label.replace("=", "")).strip("_") or "all"


def legend_right(ax: Any, *args: Any, **kwargs: Any) -> Any:
    """``ax.legend(*args)`` outside the axes, to their right, top-aligned: it never covers the
    data, whatever the data are (the rightmost axes of a figure only)."""
    kwargs = {"fontsize": SMALL_PT, "frameon": False, **kwargs}
    return ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, **kwargs)


def legend_below(fig: Any, handles: Any = None, labels: Any = None, *, ncol: int = 3) -> Any:
    """One legend for the whole figure, below it (outside every axes): by default each label
    of any of its axes once, in the order first drawn. Lay the figure out first
    (``fig.tight_layout()``), so the axes' labels sit above the figure's bottom edge."""
    if handles is None:
        found: dict[str, Any] = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                found.setdefault(label, handle)
        handles, labels = list(found.values()), list(found)
    return fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=max(1, min(ncol, len(labels))),
        fontsize=SMALL_PT,
        frameon=False,
    )


def integer_ticks(ax: Any) -> None:
    """Whole numbers only on the x axis (epochs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def annotated_heatmap(ax: Any, grid: Any, **imshow: Any) -> Any:
    """``grid`` (rows x columns, values in [0, 1], NaN = empty) as colours with its values written
    in; returns the image for a colour bar."""
    import numpy as np

    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", **imshow)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            text = "white" if value < 0.6 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=SMALL_PT, color=text)
    return image


# -- many members: groups of seeds, intervals, bands ----------------------------------------------
@dataclass
class Group:
    """The members of a sweep that differ only in their seed. ``settings``: the settings that
    vary across the sweep (without the seed), as this group has them."""

    settings: dict[str, Any]
    run_dirs: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return setting_label(self.settings)

    @property
    def n(self) -> int:
        return len(self.run_dirs)


def run_settings(run_dir: Path) -> dict[str, Any]:
    """The settings that name a run's result: config.json's "identity" (or its whole config)."""
    record = read_json(Path(run_dir) / CONFIG)
    return dict(record.get("identity") or record["config"])


def group_runs(run_dirs: Iterable[Path], seed_key: str = "seed") -> list[Group]:
    """Group run folders by their settings without ``seed_key``, in the order of first
    appearance; each group's ``settings`` keep only the keys that vary between groups."""
    keyed: dict[str, tuple[dict[str, Any], list[Path]]] = {}
    for run_dir in map(Path, run_dirs):
        rest = {k: v for k, v in run_settings(run_dir).items() if k != seed_key}
        key = json.dumps(rest, sort_keys=True, default=repr)
        keyed.setdefault(key, (rest, []))[1].append(run_dir)
    varying = varying_keys([rest for rest, _ in keyed.values()])
    return [Group({k: rest.get(k) for k in varying}, dirs) for rest, dirs in keyed.values()]


@dataclass
class Band:
    """Per x: the number of values, their mean and the 95% interval (NaN where n < 2)."""

    x: Any  # (X,) float
    mean: Any  # (X,)
    low: Any  # (X,) NaN where there is no interval
    high: Any  # (X,)
    n: Any  # (X,) int

    @property
    def max_n(self) -> int:
        return int(self.n.max()) if len(self.n) else 0


def band_stats(x: Sequence[float], rows: Sequence[Sequence[float | None]]) -> Band:
    """Mean and Student-t 95% interval at each ``x`` over ``rows`` (one row per member, aligned
    with ``x``). A row shorter than ``x`` (a member stopped early) or holding None/NaN at an x
    does not count there: the band at epoch e uses the members that reached e."""
    import numpy as np

    from genlab.aggregate import interval

    cells = []  # (mean, low, high, n) per x
    for i in range(len(x)):
        values = [r[i] for r in rows if i < len(r) and _present(r[i])]
        if not values:
            cells.append((math.nan, math.nan, math.nan, 0))
            continue
        iv = interval(values)
        low, high = iv["ci95"] or (math.nan, math.nan)
        cells.append((iv["mean"], low, high, iv["n"]))
    columns = zip(*cells, strict=True) if cells else ([], [], [], [])
    mean, low, high, n = (np.array(c, dtype=np.float64) for c in columns)
    return Band(np.array(x, dtype=np.float64), mean, low, high, n.astype(int))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def by_epoch(
    runs: Sequence[Sequence[dict[str, Any]]], value: Any, epoch_key: str = "epoch"
) -> tuple[list[int], list[list[float | None]]]:
    """Align members' records by epoch: ``x`` is every epoch any member recorded, and each row
    holds ``value(record)`` at those epochs (None where that member has no record)."""
    x = sorted({r[epoch_key] for records in runs for r in records})
    rows = []
    for records in runs:
        at = {r[epoch_key]: value(r) for r in records}
        rows.append([at.get(e) for e in x])
    return x, rows


def n_label(label: str, n: int | Sequence[int]) -> str:
    """A legend entry saying how many seeds stand behind a line (or behind each of its points)."""
    counts = [n] if isinstance(n, int) else list(n)
    low, high = min(counts, default=0), max(counts, default=0)
    if high <= 1:
        return f"{label} (n = 1, no interval)"
    return f"{label} (n = {high})" if low == high else f"{label} (n = {low} to {high})"


def band(
    ax: Any,
    x: Sequence[float],
    rows: Sequence[Sequence[float | None]],
    color: str,
    label: str,
    **line: Any,
) -> Band:
    """Draw the mean over ``rows`` as a line and its 95% interval as a shaded band (none where
    fewer than two members have a value); the legend entry says n. Returns the numbers drawn."""
    stats = band_stats(x, rows)
    ax.plot(stats.x, stats.mean, color=color, label=n_label(label, stats.max_n), **line)
    if stats.max_n > 1:
        ax.fill_between(stats.x, stats.low, stats.high, color=color, alpha=0.2, lw=0)
    return stats


def interval_of(values: Sequence[float | None]) -> tuple[float, float | None]:
    """(mean, half-width of the 95% interval); the half-width is None for one value."""
    from genlab.aggregate import interval

    iv = interval(values)
    if iv["ci95"] is None:
        return iv["mean"], None
    return iv["mean"], (iv["ci95"][1] - iv["ci95"][0]) / 2


def errorbar_args(intervals: Sequence[tuple[float, float | None]]) -> dict[str, Any]:
    """``y`` and ``yerr`` for ``ax.errorbar``/``ax.bar`` from (mean, half-width) pairs (a missing
    half-width draws no bar)."""
    import numpy as np

    means = np.array([m for m, _ in intervals], dtype=np.float64)
    half = np.array([0.0 if h is None else h for _, h in intervals], dtype=np.float64)
    return {"y": means, "yerr": half if any(h is not None for _, h in intervals) else None}


def mean_of(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are present (None when none is): a number of the report's
    sentences, over a setting's seeds."""
    present = [v for v in values if _present(v)]
    return sum(present) / len(present) if present else None


def clauses(parts: Sequence[str], most: int = 4) -> str | None:
    """A report sentence from clauses: joined by semicolons, the first ``most`` of them (and
    how many more there are), ending in a full stop; None for no clause."""
    if not parts:
        return None
    shown = "; ".join(parts[:most])
    more = len(parts) - most
    return shown + (f"; and {more} more setting{'s' if more > 1 else ''}." if more > 0 else ".")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


__all__ = [
    "BAND_NOTE",
    "DPI",
    "OKABE_ITO",
    "SMALL_PT",
    "TEXT_PT",
    "Band",
    "Group",
    "annotated_heatmap",
    "band",
    "clauses",
    "band_stats",
    "by_epoch",
    "color",
    "errorbar_args",
    "group_runs",
    "integer_ticks",
    "interval_of",
    "is_number",
    "legend_below",
    "legend_right",
    "mean_of",
    "n_label",
    "pyplot",
    "read_metrics",
    "read_run",
    "read_sweep",
    "run_settings",
    "save",
    "setting_label",
    "slug",
    "varying_keys",
]
