"""Figures and key numbers of the pruning study, read from run and sweep folders only.

One run (``pruning.png``): per round, eval-mode accuracy on the fitted training labels, test
and flipped test accuracy against the weights that remain (log scale), lottery (magnitude)
pruning solid, the random control dashed; the dense count and the fit threshold marked.

A sweep (``pruning_sweep.png``): members that differ only in their seed are one setting (one
per label noise p, say); per setting a line per kind (lottery solid, random dashed): the mean
over seeds with a shaded 95% Student-t band where there are two seeds or more. Every member of
a setting has the same remaining counts (they depend on the prunable count, f and r only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.fileio import read_json
from genlab.reporting.plotting import (
    BAND_NOTE,
    OKABE_ITO,
    band,
    clauses,
    color,
    group_runs,
    legend_below,
    pyplot,
    save,
)
from genlab.runs import CONFIG, FIGURES, SUMMARY

TITLE = "Pruning: the effective number of parameters"
KEY_NUMBERS: list[tuple[str, str]] = [  # (column heading, dotted key into summary.json)
    ("labels changed", "fraction_changed"),
    ("prunable weights", "prunable_weights"),
    ("fewest weights that fit (lottery)", "smallest_fitting.lottery.remaining"),
    ("fewest weights that fit (random)", "smallest_fitting.random.remaining"),
    ("fraction that fits (lottery)", "smallest_fitting.lottery.remaining_fraction"),
    ("dense train acc (fitted labels)", "dense.train_fitted_acc"),
    ("dense test acc", "dense.test_acc"),
    ("last round: weights", "last_round.lottery.remaining"),
    ("last round train acc (lottery)", "last_round.lottery.train_fitted_acc"),
    ("last round train acc (random)", "last_round.random.train_fitted_acc"),
    ("last round test acc (lottery)", "last_round.lottery.test_acc"),
    ("last round test acc (random)", "last_round.random.test_acc"),
    ("seconds", "seconds"),
]
KINDS = ("lottery", "random")
STYLES = {"lottery": "-", "random": "--"}
METRICS = {  # summary key -> panel title
    "train_fitted_acc": "train, fitted labels (eval mode)",
    "test_acc": "test",
    "test_vflip_acc": "test, flipped upside down",
}
METRIC_COLORS = {
    "train_fitted_acc": OKABE_ITO[7],
    "test_acc": OKABE_ITO[0],
    "test_vflip_acc": OKABE_ITO[1],
}
FONT = 9  # every text of the figures (>= 8 pt)


def rounds_of(summary: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The rounds of one kind in order, the dense round first (both kinds start from it)."""
    rounds = summary["rounds"]
    found = [rounds["lottery-0"]]
    r = 1
    while f"{kind}-{r}" in rounds:
        found.append(rounds[f"{kind}-{r}"])
        r += 1
    return found


def _count(n: float) -> str:
    return f"{n / 1000:.3g}k" if n >= 1000 else f"{n:.0f}"


def _axes_style(ax: Any, dense: set[int], threshold: float | None, ticks: list[int]) -> None:
    """Log x with the rounds' counts as ticks, the dense count(s) and fit threshold marked."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())  # ticks at the rounds' counts, not 10^k
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sorted(set(ticks)), [_count(t) for t in sorted(set(ticks))], rotation=45)
    for count in sorted(dense):
        ax.axvline(count, color=OKABE_ITO[8], lw=0.8, ls=":")
        ax.text(
            count,
            0.02,
            " dense",
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=FONT,
            color=OKABE_ITO[8],
        )
    if threshold is not None:
        ax.axhline(threshold, color=OKABE_ITO[8], lw=0.8, ls="-.")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("remaining weights (log scale)", fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3, which="both")


def plot_run(run_dir: Path) -> list[Path]:
    """pruning.png into ``run_dir/figures`` (nothing before the run's summary.json)."""
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).exists():
        return []
    summary = read_json(run_dir / SUMMARY)
    cfg = read_json(run_dir / CONFIG)["config"]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 3.8), sharey=True)
    for ax, (key, title) in zip(axes, METRICS.items(), strict=True):
        for kind in KINDS:
            rounds = rounds_of(summary, kind)
            ax.plot(
                [r["remaining"] for r in rounds],
                [r[key] for r in rounds],
                STYLES[kind],
                marker="o",
                ms=3,
                color=METRIC_COLORS[key],
                label=f"{kind} pruning",
            )
        _axes_style(
            ax,
            {summary["prunable_weights"]},
            summary["fit_threshold"] if key == "train_fitted_acc" else None,
            [r["remaining"] for r in rounds_of(summary, "lottery")],
        )
        ax.set_title(title, fontsize=FONT + 1)
    axes[0].set_ylabel("accuracy", fontsize=FONT)
    fig.suptitle(
        f"Conv-4 width {cfg['width']} on {Path(str(cfg['dataset'])).name}, p={cfg['label_noise']}; "
        f"{cfg['rounds']} rounds of {cfg['prune_fraction']:g}, rewound to epoch {cfg['rewind_epoch']}; "
        f"fit threshold {summary['fit_threshold']:g} (dash-dot)",
        fontsize=FONT + 1,
    )
    fig.tight_layout()
    legend_below(fig, ncol=2)
    return [save(fig, run_dir / FIGURES / "pruning.png")]


def plot_sweep(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """pruning_sweep.png into ``sweep_dir/figures`` from its finished members."""
    finished = [d for d in run_dirs if (Path(d) / SUMMARY).exists()]
    if not finished:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(13, 4.2), sharey=True)
    dense_counts: set[int] = set()
    ticks: list[int] = []
    threshold = None
    for g, group in enumerate(group_runs(finished)):
        summaries = [read_json(d / SUMMARY) for d in group.run_dirs]
        dense_counts.update(s["prunable_weights"] for s in summaries)
        threshold = summaries[0]["fit_threshold"]
        for kind in KINDS:
            per_run = [rounds_of(s, kind) for s in summaries]
            x = [r["remaining"] for r in per_run[0]]
            ticks += x
            for ax, key in zip(axes, METRICS, strict=True):
                rows = [[r[key] for r in rounds] for rounds in per_run]
                label = f"{group.label or 'all'}, {kind}"
                band(ax, x, rows, color(g), label, ls=STYLES[kind], marker="o", ms=3)
    for ax, (key, title) in zip(axes, METRICS.items(), strict=True):
        _axes_style(ax, dense_counts, threshold if key == "train_fitted_acc" else None, ticks)
        ax.set_title(title, fontsize=FONT + 1)
    axes[0].set_ylabel("accuracy", fontsize=FONT)
    fig.suptitle(
        f"Pruning, lottery (solid) vs random (dashed); {BAND_NOTE}; dense count dotted",
        fontsize=FONT + 1,
    )
    fig.tight_layout()
    legend_below(fig, ncol=2)
    return [save(fig, Path(sweep_dir) / FIGURES / "pruning_sweep.png")]


# -- the report: its summary sentence -------------------------------------------------------------
def finding(run_dirs: list[Path]) -> str | None:
    """The report's sentence on these runs: per run, whether the dense network fitted its
    training labels, and the fewest weights with which the lottery (magnitude) masks and the
    random control did; None before any run finished."""
    parts = []
    for run_dir in (d for d in map(Path, run_dirs) if (d / SUMMARY).exists()):
        s = read_json(run_dir / SUMMARY)
        fits = []
        for kind in ("lottery", "random"):
            remaining = s["smallest_fitting"][kind]["remaining"]
            fits.append(
                f"{kind} masks fitted with {remaining:,} of {s['prunable_weights']:,} weights"
                if remaining is not None
                else f"{kind} masks fitted in no round"
            )
        dense = s["dense"]["train_fitted_acc"]
        reached = "reached" if dense >= s["fit_threshold"] else "did not reach"
        parts.append(
            f"p = {s['label_noise']}: the dense network {reached} the fit threshold "
            f"(train accuracy {dense:.3f}, threshold {s['fit_threshold']:g}); " + ", ".join(fits)
        )
    return clauses(parts, most=3)
