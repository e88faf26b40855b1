"""Figures drawn from a run folder's files (config.json, metrics.jsonl, summary.json).

PNG at 200 dpi, matplotlib's Agg backend, the Okabe-Ito palette (safe for colour-blind readers),
one colour per condition across every figure: upright test in blue, flipped test in vermilion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.fileio import atomic_write, read_json
from genlab.runs import CONFIG, DATASET, FIGURES, SUMMARY, Run

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
VIEW_COLORS = {"test": OKABE_ITO[0], "test_vflip": OKABE_ITO[1], "train": OKABE_ITO[7]}
VIEW_LABELS = {"test": "test", "test_vflip": "test, flipped upside down", "train": "train"}
DPI = 200


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-epoch records ([] before its first epoch; a cut last line is dropped)."""
    return Run(Path(run_dir), "resume").metrics()


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A trained run's resolved config, dataset.json and per-epoch records."""
    cfg = read_json(run_dir / CONFIG)["config"]
    return cfg, read_json(run_dir / DATASET), _read_metrics(run_dir)


def _annotated_heatmap(ax: Any, grid: Any, **imshow: Any) -> Any:
    """``grid`` (rows x columns, values in [0, 1], NaN = empty) as colours with its values written
    in; returns the image for a colour bar."""
    import numpy as np

    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", **imshow)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            color = "white" if value < 0.6 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    return image


def _save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def _title(cfg: dict[str, Any], dataset: dict[str, Any]) -> str:
    name = Path(str(dataset.get("name", cfg.get("dataset")))).name
    aug = cfg.get("augment", "none")
    return (
        f"{cfg.get('model', 'conv4')} width {cfg['width']} on {name} "
        f"({dataset.get('num_train', '?'):,} train images, {cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''}, augment {aug})"
    )


def plot_run(run_dir: Path) -> list[Path]:
    """Draw every figure of the run's study into ``run_dir/figures``; returns the files."""
    run_dir = Path(run_dir)
    study = read_json(run_dir / CONFIG)["study"]
    if not (run_dir / DATASET).exists():  # killed before it wrote anything to draw
        return []
    if study == "robustness":
        from genlab.reporting.views_figures import plot_views

        return plot_robustness(run_dir) + plot_views(run_dir)
    if study in ("random-labels", "memorization-map"):
        from genlab.reporting import random_labels_figures

        return random_labels_figures.plot_run(run_dir, study)
    if study == "linreg":
        from genlab.reporting import linreg_figures

        return linreg_figures.plot_run(run_dir)
    return []


def plot_grid(run_dirs: list[Path], out: Path) -> list[Path]:
    """Figures comparing the runs of one grid (``genlab run STUDY --grid``), drawn into ``out``."""
    studies = {read_json(Path(d) / CONFIG)["study"] for d in run_dirs}
    if studies == {"robustness"}:  # ``genlab run robustness --compare``
        from genlab.reporting.views_figures import plot_compare

        return plot_compare(run_dirs, out)
    if studies == {"random-labels"}:
        from genlab.reporting import random_labels_figures

        return random_labels_figures.plot_grid(run_dirs, out)
    return []


def plot_robustness(run_dir: Path) -> list[Path]:
    plt = _pyplot()
    cfg, dataset, metrics = _read_run(run_dir)
    if not metrics:
        return []
    classes = dataset["classes"]
    out = run_dir / FIGURES
    epochs = [m["epoch"] for m in metrics]
    title = _title(cfg, dataset)
    files = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(
        epochs,
        [m["train_acc"] for m in metrics],
        color=VIEW_COLORS["train"],
        ls=":",
        label="train (as fitted)",
    )
    for view in ("test", "test_vflip"):
        ax.plot(
            epochs,
            [m[f"{view}_acc"] for m in metrics],
            color=VIEW_COLORS[view],
            marker="o",
            ms=3,
            label=VIEW_LABELS[view],
        )
    ax.set(xlabel="epoch", ylabel="accuracy (fraction correct)", ylim=(0, 1.02), title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    files.append(_save(fig, out / "accuracy.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, name in enumerate(classes):
        color = OKABE_ITO[k % len(OKABE_ITO)]
        ax.plot(
            epochs, [m["test_per_class_acc"][k] for m in metrics], color=color, ls="-", label=name
        )
        ax.plot(epochs, [m["test_vflip_per_class_acc"][k] for m in metrics], color=color, ls="--")
    ax.set(
        xlabel="epoch",
        ylabel="accuracy (fraction correct)",
        ylim=(0, 1.02),
        title=f"Per-class accuracy: solid = test, dashed = flipped test\n{title}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=7, loc="lower right")
    files.append(_save(fig, out / "per_class_accuracy.png"))

    if (run_dir / SUMMARY).exists():
        summary = read_json(run_dir / SUMMARY)
        import numpy as np

        x = np.arange(len(classes))
        fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(classes)), 4.2))
        for i, view in enumerate(("test", "test_vflip")):
            values = [summary["per_class_acc"][view][c] for c in classes]
            ax.bar(
                x + (i - 0.5) * 0.4,
                values,
                width=0.4,
                color=VIEW_COLORS[view],
                label=VIEW_LABELS[view],
            )
        ax.set_xticks(
            x,
            classes,
            rotation=45 if len(classes) > 6 else 0,
            ha="right" if len(classes) > 6 else "center",
        )
        ax.set(
            ylabel="final accuracy (fraction correct)",
            ylim=(0, 1.2),  # headroom: the legend sits above bars that reach 1
            yticks=np.linspace(0, 1, 6),
            title=f"Final per-class accuracy\n{title}",
        )
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="upper center", ncol=2)
        files.append(_save(fig, out / "per_class_bars.png"))
    return files
