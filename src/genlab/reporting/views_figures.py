"""Figures of the transformation suite and of invariance inside the network, from run folders.

``plot_views``: the views x classes accuracy heat map (and the same numbers as a Markdown table)
from views.json, and the layer-by-layer equivariance and invariance from invariance.json.
``plot_compare``: the runs of ``genlab run robustness --compare`` side by side, with one
comparison.json beside the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.data.transforms import VIEWS
from genlab.fileio import atomic_write, read_json, write_json
from genlab.reporting.figures import (
    OKABE_ITO,
    VIEW_COLORS,
    _annotated_heatmap,
    _pyplot,
    _read_metrics,
    _save,
)
from genlab.runs import CONFIG, DATASET, FIGURES, INVARIANCE, SUMMARY, VIEW_RESULTS

MEASURES = (  # (key, label, line style)
    ("equivariance_cka", "equivariance, linear CKA", "-"),
    ("equivariance_cos", "equivariance, cosine", ":"),
    ("invariance_cka", "invariance (pooled), linear CKA", "-"),
    ("invariance_cos", "invariance (pooled), cosine", ":"),
)


def views_table(views: dict[str, Any], classes: list[str]) -> str:
    """Views x classes accuracy as a Markdown table."""
    lines = [
        "| view | all | " + " | ".join(classes) + " |",
        "|---|---:|" + "---:|" * len(classes),
    ]
    for name in _ordered(views):
        r = views["views"][name]
        cells = " | ".join(f"{r['per_class_acc'][c]:.3f}" for c in classes)
        lines.append(f"| {name} | {r['acc']:.3f} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_views(run_dir: Path) -> list[Path]:
    """views_heatmap.png + views_table.md (if views.json) and invariance.png (if invariance.json)."""
    run_dir = Path(run_dir)
    out, files = run_dir / FIGURES, []
    if (run_dir / VIEW_RESULTS).exists():
        views = read_json(run_dir / VIEW_RESULTS)
        classes = read_json(run_dir / DATASET)["classes"]
        table = out / "views_table.md"
        atomic_write(table, lambda f: f.write(views_table(views, classes)), mode="w")
        files += [_heatmap(views, classes, out / "views_heatmap.png", _label(run_dir)), table]
    if (run_dir / INVARIANCE).exists():
        files.append(_invariance_figure([run_dir], out / "invariance.png"))
    return files


def _heatmap(views: dict[str, Any], classes: list[str], path: Path, title: str) -> Path:
    import numpy as np

    plt = _pyplot()
    names = _ordered(views)
    grid = np.array(
        [
            [views["views"][v]["acc"]] + [views["views"][v]["per_class_acc"][c] for c in classes]
            for v in names
        ]
    )
    fig, ax = plt.subplots(figsize=(1.2 + 0.62 * (len(classes) + 1), 0.9 + 0.42 * len(names)))
    im = _annotated_heatmap(ax, grid)
    ax.set_xticks(range(len(classes) + 1), ["all", *classes], rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.axvline(0.5, color="white", lw=2)
    ax.set_title(
        f"Test accuracy on each view, by class (epoch {views.get('epoch', '?')})\n{title}",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="accuracy (fraction correct)", fraction=0.04)
    return _save(fig, path)


def _ordered(views: dict[str, Any]) -> list[str]:
    """The evaluated views in the canonical order (JSON files store keys sorted)."""
    return [v for v in VIEWS if v in views["views"]]


def _label(run_dir: Path) -> str:
    cfg = read_json(Path(run_dir) / CONFIG)["config"]
    parts = [f"{cfg.get('model', 'conv4')} w{cfg.get('width')}"]
    if cfg.get("augment", "none") != "none":
        parts.append(f"augment {cfg['augment']}")
    if cfg.get("invariance", "none") != "none":
        parts.append(f"invariance {cfg['invariance']}")
    return ", ".join(parts)


def _invariance_figure(run_dirs: list[Path], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    view = "vflip"
    for k, run_dir in enumerate(run_dirs):
        inv = read_json(Path(run_dir) / INVARIANCE)
        view = inv["view"]
        layers = [r["layer"] for r in inv["layers"]]
        color = OKABE_ITO[k % len(OKABE_ITO)]
        for ax, kind in zip(axes, ("equivariance", "invariance"), strict=True):
            for key, label, ls in MEASURES:
                if not key.startswith(kind):
                    continue
                ax.plot(
                    layers,
                    [r[key] for r in inv["layers"]],
                    color=color,
                    ls=ls,
                    marker="o",
                    ms=3,
                    label=f"{_label(run_dir)}: {label.split(', ')[1]}",
                )
    axes[0].set(
        ylabel="similarity (1 = unchanged)", title=f"features of x vs of {view}(x) moved back"
    )
    axes[1].set(title=f"pooled features of x vs of {view}(x)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        ax.set_xlabel("layer")
    axes[1].legend(fontsize=6, loc="lower left")
    fig.suptitle("Invariance inside the network: solid = linear CKA, dotted = cosine", fontsize=9)
    return _save(fig, path)


def compare_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """One record per run: its condition, parameters, seconds per epoch, accuracy on test and
    flipped test per epoch and at the end (per class too), views and per-layer invariance."""
    rows = []
    for run_dir in map(Path, run_dirs):
        cfg = read_json(run_dir / CONFIG)["config"]
        metrics = _read_metrics(run_dir)
        row: dict[str, Any] = {
            "run": run_dir.name,
            "label": _label(run_dir),
            "model": cfg.get("model"),
            "width": cfg.get("width"),
            "augment": cfg.get("augment"),
            "invariance": cfg.get("invariance", "none"),
            "epochs": [m["epoch"] for m in metrics],
            "test_acc": [m["test_acc"] for m in metrics],
            "test_vflip_acc": [m["test_vflip_acc"] for m in metrics],
            "train_seconds_per_epoch": (  # training only, evaluation excluded
                sum(m["seconds"] for m in metrics) / len(metrics) if metrics else None
            ),
        }
        if (run_dir / SUMMARY).exists():
            summary = read_json(run_dir / SUMMARY)
            row["params"] = summary.get("params")
            row["final_acc"] = summary["final_acc"]
            row["per_class_acc"] = summary["per_class_acc"]
            row["views_acc"] = summary.get("views_acc")
        if (run_dir / INVARIANCE).exists():
            row["invariance_layers"] = read_json(run_dir / INVARIANCE)["layers"]
        rows.append(row)
    return {"runs": rows}


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """One line per run: parameters, training seconds per epoch, final test and flipped test."""
    lines = [
        "| condition | params | train s/epoch | test | flipped test |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = r.get("final_acc") or {}
        cells = [
            r["label"],
            f"{r['params']:,}" if r.get("params") else "?",
            f"{r['train_seconds_per_epoch']:.1f}" if r["train_seconds_per_epoch"] else "?",
            f"{acc['test']:.3f}" if "test" in acc else "?",
            f"{acc['test_vflip']:.3f}" if "test_vflip" in acc else "?",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_compare(run_dirs: list[Path], out: Path) -> list[Path]:
    """comparison.json (beside ``out``) and the comparison figures in ``out``."""
    plt = _pyplot()
    out = Path(out)
    comparison = compare_runs(run_dirs)
    write_json(out.parent / "comparison.json", comparison)
    rows = comparison["runs"]
    table = out.parent / "comparison.md"
    atomic_write(table, lambda f: f.write(comparison_table(rows)), mode="w")
    files = [out.parent / "comparison.json", table]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for k, row in enumerate(rows):
        color = OKABE_ITO[k % len(OKABE_ITO)]
        for ax, key in zip(axes, ("test_acc", "test_vflip_acc"), strict=True):
            ax.plot(
                row["epochs"],
                row[key],
                color=color,
                marker="o",
                ms=3,
                label=f"{row['label']} ({row.get('params', 0):,} params)",
            )
    axes[0].set(title="test", ylabel="accuracy (fraction correct)", xlabel="epoch")
    axes[1].set(title="test, flipped upside down", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    axes[1].legend(fontsize=7)
    files.append(_save(fig, out / "compare_accuracy.png"))

    done = [r for r in rows if "per_class_acc" in r]
    if done:
        import numpy as np

        classes = list(done[0]["per_class_acc"]["test"])
        x = np.arange(len(classes))
        fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(classes)), 4.2))
        width = 0.8 / len(done)
        for k, row in enumerate(done):
            values = [row["per_class_acc"]["test_vflip"][c] for c in classes]
            ax.bar(
                x + (k - (len(done) - 1) / 2) * width,
                values,
                width=width,
                color=OKABE_ITO[k % len(OKABE_ITO)],
                label=row["label"],
            )
        ax.set_xticks(x, classes, rotation=45, ha="right")
        ax.set(
            ylabel="flipped-test accuracy",
            ylim=(0, 1.02),
            title="Final per-class accuracy on the flipped test set",
        )
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
        files.append(_save(fig, out / "compare_per_class.png"))
    with_inv = [Path(d) for d in run_dirs if (Path(d) / INVARIANCE).exists()]
    if with_inv:
        files.append(_invariance_figure(with_inv, out / "compare_invariance.png"))
    return files


__all__ = ["VIEW_COLORS", "compare_runs", "plot_compare", "plot_views", "views_table"]
