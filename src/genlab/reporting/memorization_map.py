"""Figures and key numbers of the memorization map, read from its run folder only.

One run is already a grid: a model per (width, label noise p) cell, one metrics.jsonl record per
cell. Its figures are two heat maps over width x p: fitted train accuracy and test accuracy.
"""

from __future__ import annotations

from pathlib import Path

from genlab.fileio import read_json
from genlab.reporting.plotting import annotated_heatmap, pyplot, read_metrics, save
from genlab.runs import CONFIG, FIGURES

TITLE = "Memorization map"
KEY_NUMBERS: list[tuple[str, str]] = [  # (column heading, dotted key into summary.json)
    ("n", "n"),
    ("cells", "cells"),
    ("fit threshold", "stop_at_train_acc"),
    ("smallest fitting width per p", "smallest_fitting"),
    ("seconds", "seconds"),
]


def plot_run(run_dir: Path) -> list[Path]:
    """map_train_fitted_acc.png and map_test_acc.png: width (rows, labelled with parameter
    counts) x p (columns), into ``run_dir/figures``."""
    import numpy as np

    run_dir = Path(run_dir)
    plt = pyplot()
    cells = read_metrics(run_dir)
    if not cells:
        return []
    widths = sorted({c["width"] for c in cells})
    noise = sorted({c["label_noise"] for c in cells})
    params = {c["width"]: c["params"] for c in cells}
    n = cells[0]["num_train"]
    cfg = read_json(run_dir / CONFIG)["config"]
    stop, budget = cfg["stop_at_train_acc"], cfg["epochs"]
    files = []
    for key, label in (
        ("train_fitted_acc", "fitted-label train accuracy"),
        ("test_acc", "test accuracy"),
    ):
        grid = np.full((len(widths), len(noise)), np.nan)
        for c in cells:
            grid[widths.index(c["width"]), noise.index(c["label_noise"])] = c[key]
        fig, ax = plt.subplots(figsize=(6.4, 5.2))
        im = annotated_heatmap(ax, grid, origin="lower")
        ax.set_xticks(range(len(noise)), [str(p) for p in noise])
        ax.set_yticks(range(len(widths)), [f"c={w}: {params[w]:,}" for w in widths])
        ax.set(
            xlabel="label noise p",
            ylabel="width: parameters",
            title=f"Memorization map: {label}\n(n = {n:,} training images; a cell stops once its "
            f"fitted accuracy reaches {stop}, else after {budget} epochs)",
        )
        ax.title.set_fontsize(9)
        fig.colorbar(im, ax=ax, label=label)
        files.append(save(fig, run_dir / FIGURES / f"map_{key}.png"))
    return files


def plot_sweep(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """None: each member is a whole map with its own figures, and the report's aggregated table
    carries the numbers over seeds (cells, smallest fitting width per p)."""
    return []
