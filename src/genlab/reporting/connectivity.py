"""Figures and key numbers of the linear-mode-connectivity study, read from run and sweep folders.

One run: the error barrier against the spawn epoch k on the training images (fitted labels),
the test set and the flipped test set (each pair a faint dot; the mean over pairs with its 95%
interval where there are several pairs), and the error along the paths, error(α) per k (the
mean over pairs).

A sweep: members that differ only in the parent's seed are one setting; per view, the barrier
against k, the mean over seeds of each seed's mean over pairs with the 95% interval over seeds,
one line per setting (e.g. per label noise p).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.fileio import read_json
from genlab.reporting.plotting import (
    OKABE_ITO,
    clauses,
    color,
    errorbar_args,
    group_runs,
    interval_of,
    legend_below,
    legend_right,
    mean_of,
    n_label,
    pyplot,
    read_run,
    save,
)
from genlab.runs import FIGURES, INTERPOLATION, SUMMARY

TITLE = "Linear mode connectivity"
KEY_NUMBERS: list[tuple[str, str]] = [  # (column heading, dotted key into summary.json)
    ("test acc (parent)", "final_acc.test"),
    ("flipped test acc (parent)", "final_acc.test_vflip"),
    ("train acc, fitted labels (parent)", "final_train_fitted_acc"),
    ("test barrier, first k", "barrier_first.test"),
    ("test barrier, last k", "barrier_last.test"),
    ("flipped test barrier, first k", "barrier_first.test_vflip"),
    ("flipped test barrier, last k", "barrier_last.test_vflip"),
    ("train barrier, last k", "barrier_last.train"),
    ("labels changed", "fraction_changed"),
    ("epochs", "epochs"),
    ("seconds", "seconds"),
]
VIEWS = ("test", "test_vflip", "train")
VIEW_COLORS = {"test": OKABE_ITO[0], "test_vflip": OKABE_ITO[1], "train": OKABE_ITO[7]}
VIEW_LABELS = {
    "test": "test",
    "test_vflip": "test, flipped upside down",
    "train": "train, fitted labels",
}
BARRIER = "error barrier: max over α of err(α) − (err(0) + err(1)) / 2"


def _describe(cfg: dict[str, Any], dataset: dict[str, Any]) -> str:
    return (
        f"Conv-4 width {cfg['width']}, {cfg['optimizer']} lr {cfg['lr']} momentum "
        f"{cfg['momentum']}, {cfg['epochs']} epochs on {Path(str(dataset['name'])).name} "
        f"({dataset['num_train']:,} images), label noise p = {cfg['label_noise']}"
    )


# -- one run --------------------------------------------------------------------------------------
def plot_run(run_dir: Path) -> list[Path]:
    """barrier.png and paths.png into ``run_dir/figures`` (nothing before the interpolation)."""
    run_dir = Path(run_dir)
    if not (run_dir / INTERPOLATION).exists():
        return []
    cfg, dataset, _ = read_run(run_dir)
    found = read_json(run_dir / INTERPOLATION)
    title = _describe(cfg, dataset)
    return [
        save(barrier_figure(found, title), run_dir / FIGURES / "barrier.png"),
        save(paths_figure(found, title), run_dir / FIGURES / "paths.png"),
    ]


def barrier_figure(found: dict[str, Any], title: str) -> Any:
    """The barrier against the spawn epoch, one line per view."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    spawns = found["spawn_epochs"]
    ks = [e["epoch"] for e in spawns]
    pairs = len(spawns[0]["pairs"])
    for v in VIEWS:
        values = [[p["barrier"][v] for p in e["pairs"]] for e in spawns]
        if pairs > 1:  # each pair, faint
            for k, vs in zip(ks, values, strict=True):
                ax.plot([k] * len(vs), vs, "o", color=VIEW_COLORS[v], alpha=0.3, ms=3)
        ax.errorbar(
            ks,
            **errorbar_args([interval_of(vs) for vs in values]),
            color=VIEW_COLORS[v],
            marker="o",
            capsize=3,
            label=VIEW_LABELS[v],
        )
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set(xlabel="spawn epoch k", ylabel="error barrier (fraction)", xticks=ks)
    ax.grid(alpha=0.3)
    legend_right(ax)
    over = (
        f"mean over {pairs} pairs of children, bars: 95% interval (pairs share children)"
        if pairs > 1
        else "one pair of children per k"
    )
    fig.suptitle(f"{title}\n{BARRIER}; {over}", fontsize=8)
    return fig


def paths_figure(found: dict[str, Any], title: str) -> Any:
    """error(α) along the paths, a panel per view, one line per spawn epoch (mean over pairs)."""
    plt = pyplot()
    alphas = found["alphas"]
    spawns = found["spawn_epochs"]
    fig, axes = plt.subplots(1, len(VIEWS), figsize=(4.2 * len(VIEWS), 3.8), sharey=True)
    for ax, v in zip(axes, VIEWS, strict=True):
        for n, e in enumerate(spawns):
            curves = [p["path"][v]["error"] for p in e["pairs"]]
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(alphas))]
            ax.plot(alphas, mean, color=color(n), marker=".", label=f"k = {e['epoch']}")
        ax.set(xlabel="α (0: first child, 1: second)", title=VIEW_LABELS[v])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (1 − accuracy)")
    pairs = len(spawns[0]["pairs"])
    fig.suptitle(
        f"{title}\nerror along θ(α) = (1 − α)θ₁ + αθ₂, BatchNorm statistics recomputed at each α"
        + (f"; mean over {pairs} pairs" if pairs > 1 else ""),
        fontsize=8,
    )
    fig.tight_layout()
    legend_below(fig, ncol=len(spawns))
    return fig


# -- a sweep: settings x parent seeds -------------------------------------------------------------
def plot_sweep(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """barrier_sweep.png into ``sweep_dir/figures``: per view the barrier against k, mean and
    95% interval over parent seeds, one line per setting (nothing before a member finished)."""
    finished = [d for d in map(Path, run_dirs) if (d / SUMMARY).exists()]
    if not finished:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(VIEWS), figsize=(4.4 * len(VIEWS), 3.9), sharey=True)
    every: set[int] = set()
    for g, group in enumerate(group_runs(finished)):
        summaries = [read_json(d / SUMMARY) for d in group.run_dirs]
        ks = sorted({k for s in summaries for k in s["spawn_epochs"]})
        every.update(ks)
        for ax, v in zip(axes, VIEWS, strict=True):
            cells = [
                [s["barrier"][v][f"k{k}"]["mean"] for s in summaries if k in s["spawn_epochs"]]
                for k in ks
            ]
            ax.errorbar(
                ks,
                **errorbar_args([interval_of(c) for c in cells]),
                color=color(g),
                marker="o",
                capsize=3,
                label=n_label(group.label, [len(c) for c in cells]),
            )
    for ax, v in zip(axes, VIEWS, strict=True):
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xlabel="spawn epoch k", title=VIEW_LABELS[v], xticks=sorted(every))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error barrier (fraction)")
    cfg, dataset, _ = read_run(finished[0])
    fig.suptitle(
        f"{_describe(cfg, dataset).rsplit(', label noise', 1)[0]}\n{BARRIER}\n"
        "point: mean over parent seeds of each seed's mean over pairs; bars: 95% Student-t "
        "interval over seeds",
        fontsize=8,
    )
    fig.tight_layout()
    legend_below(fig, ncol=3)
    return [save(fig, Path(sweep_dir) / FIGURES / "barrier_sweep.png")]


# -- the report: its summary sentence -------------------------------------------------------------
def finding(run_dirs: list[Path]) -> str | None:
    """The report's sentence on these runs: per setting, the test error barrier between
    children spawned at the first and at the last k (means over the parent's seeds); None
    before any run finished."""
    groups = group_runs([d for d in map(Path, run_dirs) if (d / SUMMARY).exists()])
    parts = []
    for g in groups:
        summaries = [read_json(d / SUMMARY) for d in g.run_dirs]
        ks = summaries[0]["spawn_epochs"]
        first = mean_of(s["barrier_first"]["test"] for s in summaries)
        last = mean_of(s["barrier_last"]["test"] for s in summaries)
        who = "" if len(groups) == 1 else f"{g.label}: "
        seeds = f" (mean of {len(summaries)} parents)" if len(summaries) > 1 else ""
        parts.append(
            f"{who}test error barrier between two children {first:.3f} when spawned at "
            f"epoch {ks[0]}, {last:.3f} when spawned at epoch {ks[-1]}{seeds}"
        )
    return clauses(parts)
