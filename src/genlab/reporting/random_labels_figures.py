"""Figures of the random-labels study and the memorization map, read from run folders only.

One run: loss and accuracy per epoch on the fitted labels, the true labels, the noisy and clean
subsets and the test set. A grid: the report's four panels (train loss, test loss, train
accuracy, test accuracy per epoch), one line per p, one figure per width; and time to fit
against p. The map: two heat maps (fitted train accuracy, test accuracy) over width x p.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from genlab.fileio import read_json
from genlab.reporting.figures import (
    OKABE_ITO,
    _annotated_heatmap,
    _pyplot,
    _read_metrics,
    _read_run,
    _save,
)
from genlab.runs import CONFIG, DATASET, FIGURES, SUMMARY

NOISE_COLORS = {
    0.0: OKABE_ITO[0],
    0.25: OKABE_ITO[5],
    0.5: OKABE_ITO[3],
    0.75: OKABE_ITO[4],
    1.0: OKABE_ITO[1],
}
SUBSET_COLORS = {
    "train": OKABE_ITO[7],
    "train_true": OKABE_ITO[2],
    "train_noisy": OKABE_ITO[1],
    "train_clean": OKABE_ITO[5],
    "test": OKABE_ITO[0],  # test is blue in every study's figures
}
SUBSET_LABELS = {
    "train": "train, fitted labels (as trained)",
    "train_true": "train, true labels",
    "train_noisy": "train, changed labels (fitted)",
    "train_clean": "train, unchanged labels",
    "test": "test",
}


def _noise_color(p: float) -> str:
    return NOISE_COLORS.get(round(p, 2), OKABE_ITO[int(p * 8) % len(OKABE_ITO)])


def _test_note(dataset: dict[str, Any]) -> str:
    return f"test labels {dataset.get('test_labels', 'clean')}"


def plot_run(run_dir: Path, study: str) -> list[Path]:
    if study == "memorization-map":
        return plot_map(run_dir)
    plt = _pyplot()
    cfg, dataset, metrics = _read_run(run_dir)
    if not metrics:
        return []
    epochs = [m["epoch"] for m in metrics]
    title = (
        f"Conv-4 width {cfg['width']} on {Path(str(dataset['name'])).name} ({dataset['num_train']:,} images), "
        f"p={cfg['label_noise']} {cfg['label_noise_mode']}, randomize {cfg['randomize']}; {_test_note(dataset)}"
    )
    views = ["train_true", "test"]
    views += [
        v
        for v, n in (("train_noisy", dataset["num_noisy"]), ("train_clean", dataset["num_clean"]))
        if n
    ]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(
        epochs,
        [m["train_loss"] for m in metrics],
        color=SUBSET_COLORS["train"],
        ls=":",
        label=SUBSET_LABELS["train"],
    )
    ax_acc.plot(
        epochs,
        [m["train_acc"] for m in metrics],
        color=SUBSET_COLORS["train"],
        ls=":",
        label=SUBSET_LABELS["train"],
    )
    for v in views:
        style = {
            "color": SUBSET_COLORS[v],
            "label": SUBSET_LABELS[v],
            "ls": "--" if v == "train_true" else "-",
        }
        ax_loss.plot(epochs, [m[f"{v}_loss"] for m in metrics], **style)
        ax_acc.plot(epochs, [m[f"{v}_acc"] for m in metrics], **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (fraction correct)", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return [_save(fig, run_dir / FIGURES / "curves.png")]


def _load(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).exists() else {}
    return {
        "cfg": read_json(run_dir / CONFIG)["config"],
        "dataset": read_json(run_dir / DATASET),
        "metrics": _read_metrics(run_dir),
        "summary": summary,
    }


def plot_grid(run_dirs: list[Path], out: Path) -> list[Path]:
    """Per width: train loss, test loss, train accuracy, test accuracy per epoch, one line per p;
    then time to fit against p, one line per width."""
    plt = _pyplot()
    runs = [r for r in map(_load, run_dirs) if r["metrics"]]
    by_width: dict[tuple, list[dict[str, Any]]] = defaultdict(
        list
    )  # one set per width (and optimizer)
    for r in runs:
        by_width[(r["cfg"]["width"], r["cfg"]["optimizer"], r["cfg"]["lr"])].append(r)
    files = []
    panels = (
        ("train_loss", "train loss (fitted labels)"),
        ("test_loss", "test loss"),
        ("train_acc", "train accuracy (fitted labels)"),
        ("test_acc", "test accuracy"),
    )
    for (width, opt, lr), group in sorted(by_width.items()):
        fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
        for r in sorted(group, key=lambda r: r["cfg"]["label_noise"]):
            p = r["cfg"]["label_noise"]
            epochs = [m["epoch"] for m in r["metrics"]]
            for ax, (key, _) in zip(axes.flat, panels, strict=True):
                ax.plot(
                    epochs, [m[key] for m in r["metrics"]], color=_noise_color(p), label=f"p = {p}"
                )
        for ax, (key, label) in zip(axes.flat, panels, strict=True):
            ax.set(ylabel=label)
            if key.endswith("acc"):
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        for ax in axes[1]:
            ax.set_xlabel("epoch")
        axes[0, 0].legend()
        g = group[0]
        params = g["summary"].get("params")
        fig.suptitle(
            f"Conv-4 width {width}"
            + (f" ({params:,} parameters)" if params else "")
            + f", {g['cfg']['optimizer']} lr {g['cfg']['lr']} on {Path(str(g['dataset']['name'])).name} "
            f"({g['dataset']['num_train']:,} images); {_test_note(g['dataset'])}",
            fontsize=9,
        )
        files.append(_save(fig, Path(out) / f"curves_w{width}_{opt}_lr{lr}.png"))

    done = [r for r in runs if r["summary"]]
    if done:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for k, ((width, opt, lr), group) in enumerate(sorted(by_width.items())):
            pts = sorted(
                (r["cfg"]["label_noise"], r["summary"]["time_to_fit"], r["summary"]["epochs"])
                for r in group
                if r["summary"]
            )
            color = OKABE_ITO[k % len(OKABE_ITO)]
            fit = [(p, t) for p, t, _ in pts if t is not None]
            never = [(p, e) for p, t, e in pts if t is None]
            if fit:
                ax.plot(
                    *zip(*fit, strict=True),
                    color=color,
                    marker="o",
                    label=f"width {width}, {opt} lr {lr}",
                )
            if never:  # drawn at the epoch budget, hollow: the threshold was never reached
                ax.plot(
                    *zip(*never, strict=True),
                    color=color,
                    marker="o",
                    mfc="none",
                    ls="none",
                    label=f"width {width}, {opt}: not fitted in budget",
                )
        thr = done[0]["summary"]["fit_threshold"]
        ax.set(
            xlabel="label noise p",
            ylabel=f"epochs to fitted train accuracy >= {thr}",
            title="Time to fit against label noise",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(fig, Path(out) / "time_to_fit.png"))
    return files


def plot_map(run_dir: Path) -> list[Path]:
    """Two heat maps over width (rows, labelled with parameter counts) x p (columns)."""
    import numpy as np

    plt = _pyplot()
    cells = _read_metrics(run_dir)
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
        im = _annotated_heatmap(ax, grid, origin="lower")
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
        files.append(_save(fig, run_dir / FIGURES / f"map_{key}.png"))
    return files
