"""Figures and key numbers of the robustness study, read from run and sweep folders only.

One run: accuracy per epoch on test and flipped test, the same per class, the final per-class
accuracy; the views x classes heat map (and the same numbers as a Markdown table) from
views.json, and the layer-by-layer equivariance and invariance from invariance.json.

A sweep: members that differ only in their seed are one setting. Per setting the mean accuracy
per epoch with a shaded 95% Student-t band over seeds (test and flipped test), the final
per-class accuracy with 95% intervals, and one figure of final test and flipped-test accuracy
across the settings. The ``compare`` sweep adds today's side-by-side figures and comparison.json.

Colours: upright test in blue, flipped test in vermilion, in every figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from genlab.data.transforms import VIEWS
from genlab.fileio import atomic_write, read_json, write_json
from genlab.reporting.plotting import (
    BAND_NOTE,
    OKABE_ITO,
    SMALL_PT,
    Group,
    annotated_heatmap,
    band,
    by_epoch,
    clauses,
    color,
    errorbar_args,
    group_runs,
    integer_ticks,
    interval_of,
    is_number,
    legend_below,
    legend_right,
    mean_of,
    n_label,
    pyplot,
    read_metrics,
    read_run,
    read_sweep,
    save,
)
from genlab.runs import CONFIG, DATASET, FIGURES, INVARIANCE, SUMMARY, VIEW_RESULTS

TITLE = "Flip robustness"
KEY_NUMBERS: list[tuple[str, str]] = [  # (column heading, dotted key into summary.json)
    ("params", "params"),
    ("test acc", "final_acc.test"),
    ("flipped test acc", "final_acc.test_vflip"),
    ("flip gap", "flip_gap"),
    ("best test acc", "best_acc.test"),
    ("epochs", "epochs"),
    ("seconds", "seconds"),
]
VIEW_COLORS = {"test": OKABE_ITO[0], "test_vflip": OKABE_ITO[1], "train": OKABE_ITO[7]}
VIEW_LABELS = {"test": "test", "test_vflip": "test, flipped upside down", "train": "train"}
MEASURES = (  # (key, label, line style)
    ("equivariance_cka", "equivariance, linear CKA", "-"),
    ("equivariance_cos", "equivariance, cosine", ":"),
    ("invariance_cka", "invariance (pooled), linear CKA", "-"),
    ("invariance_cos", "invariance (pooled), cosine", ":"),
)


# -- one run --------------------------------------------------------------------------------------
def plot_run(run_dir: Path) -> list[Path]:
    """accuracy.png, per_class_accuracy.png, per_class_bars.png (once finished) and the views and
    invariance figures, into ``run_dir/figures``."""
    run_dir = Path(run_dir)
    return _plot_curves(run_dir) + plot_views(run_dir)


def _title(cfg: dict[str, Any], dataset: dict[str, Any]) -> str:
    name = Path(str(dataset.get("name", cfg.get("dataset")))).name
    aug = cfg.get("augment", "none")
    return (
        f"{cfg.get('model', 'conv4')} width {cfg['width']} on {name} "
        f"({dataset.get('num_train', '?'):,} train images, {cfg['epochs']} epoch{'s' if cfg['epochs'] != 1 else ''}, augment {aug})"
    )


def _plot_curves(run_dir: Path) -> list[Path]:
    plt = pyplot()
    cfg, dataset, metrics = read_run(run_dir)
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
    legend_right(ax)
    files.append(save(fig, out / "accuracy.png"))

    files.append(save(_per_class_curves(classes, metrics, title), out / "per_class_accuracy.png"))

    if (run_dir / SUMMARY).exists():
        summary = read_json(run_dir / SUMMARY)
        fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(classes)), 4.2))
        _class_bars(
            ax,
            classes,
            {
                v: [(summary["per_class_acc"][v][c], None) for c in classes]
                for v in ("test", "test_vflip")
            },
        )
        ax.set_title(f"Final per-class accuracy\n{title}", fontsize=9)
        files.append(save(fig, out / "per_class_bars.png"))
    return files


def _per_class_curves(classes: list[str], metrics: list[dict[str, Any]], title: str) -> Any:
    """Small multiples: one panel per class (shared axes), test solid and flipped test dashed."""
    plt = pyplot()
    ncols = min(5, len(classes))
    nrows = math.ceil(len(classes) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.3 * ncols + 0.6, 1.9 * nrows + 1.0), sharex=True, sharey=True,
        squeeze=False,
    )  # fmt: skip
    epochs = [m["epoch"] for m in metrics]
    for k, (ax, name) in enumerate(zip(axes.flat, classes, strict=False)):
        for view, ls in (("test", "-"), ("test_vflip", "--")):
            ax.plot(
                epochs,
                [m[f"{view}_per_class_acc"][k] for m in metrics],
                color=VIEW_COLORS[view],
                ls=ls,
                label=VIEW_LABELS[view],
            )
        ax.set_title(f"class {name}", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        integer_ticks(ax)
    for ax in list(axes.flat)[len(classes) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"Per-class accuracy (fraction correct)\n{title}", fontsize=9)
    fig.tight_layout()
    legend_below(fig, ncol=2)
    return fig


def _class_bars(
    ax: Any,
    classes: list[str],
    values: dict[str, list[tuple[float, float | None]]],
    *,
    legend: bool = True,
) -> None:
    """Test and flipped-test bars per class; ``values[view]``: (mean, half-width or None)."""
    import numpy as np

    x = np.arange(len(classes))
    for i, view in enumerate(("test", "test_vflip")):
        bars = errorbar_args(values[view])
        ax.bar(
            x + (i - 0.5) * 0.4,
            bars["y"],
            yerr=bars["yerr"],
            capsize=2 if bars["yerr"] is not None else 0,
            error_kw={"lw": 0.8},
            width=0.4,
            color=VIEW_COLORS[view],
            label=VIEW_LABELS[view],
        )
    many = len(classes) > 6
    ax.set_xticks(x, classes, rotation=45 if many else 0, ha="right" if many else "center")
    ax.set(ylim=(0, 1.02), yticks=np.linspace(0, 1, 6))
    ax.grid(alpha=0.3, axis="y")
    if legend:
        ax.set_ylabel("final accuracy (fraction correct)")
        legend_right(ax)


# -- views and invariance -------------------------------------------------------------------------
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

    plt = pyplot()
    names = _ordered(views)
    grid = np.array(
        [
            [views["views"][v]["acc"]] + [views["views"][v]["per_class_acc"][c] for c in classes]
            for v in names
        ]
    )
    fig, ax = plt.subplots(figsize=(1.2 + 0.62 * (len(classes) + 1), 0.9 + 0.42 * len(names)))
    im = annotated_heatmap(ax, grid)
    ax.set_xticks(range(len(classes) + 1), ["all", *classes], rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.axvline(0.5, color="white", lw=2)
    ax.set_title(
        f"Test accuracy on each view, by class (epoch {views.get('epoch', '?')})\n{title}",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="accuracy (fraction correct)", fraction=0.04)
    return save(fig, path)


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
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    view = "vflip"
    for k, run_dir in enumerate(run_dirs):
        inv = read_json(Path(run_dir) / INVARIANCE)
        view = inv["view"]
        layers = [r["layer"] for r in inv["layers"]]
        for ax, kind in zip(axes, ("equivariance", "invariance"), strict=True):
            for key, label, ls in MEASURES:
                if not key.startswith(kind):
                    continue
                ax.plot(
                    layers,
                    [r[key] for r in inv["layers"]],
                    color=color(k),
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
    legend_right(axes[1])
    fig.suptitle("Invariance inside the network: solid = linear CKA, dotted = cosine", fontsize=9)
    return save(fig, path)


# -- the compare sweep: runs side by side ---------------------------------------------------------
def compare_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """One record per run: its condition, parameters, seconds per epoch, accuracy on test and
    flipped test per epoch and at the end (per class too), views and per-layer invariance."""
    rows = []
    for run_dir in map(Path, run_dirs):
        cfg = read_json(run_dir / CONFIG)["config"]
        metrics = read_metrics(run_dir)
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
    """comparison.json and comparison.md (beside ``out``) and the comparison figures in ``out``."""
    plt = pyplot()
    out = Path(out)
    comparison = compare_runs(run_dirs)
    write_json(out.parent / "comparison.json", comparison)
    rows = comparison["runs"]
    table = out.parent / "comparison.md"
    atomic_write(table, lambda f: f.write(comparison_table(rows)), mode="w")
    files = [out.parent / "comparison.json", table]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for k, row in enumerate(rows):
        for ax, key in zip(axes, ("test_acc", "test_vflip_acc"), strict=True):
            ax.plot(
                row["epochs"],
                row[key],
                color=color(k),
                marker="o",
                ms=3,
                label=f"{row['label']} ({row.get('params', 0):,} params)",
            )
    axes[0].set(title="test", ylabel="accuracy (fraction correct)", xlabel="epoch")
    axes[1].set(title="test, flipped upside down", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    legend_right(axes[1])
    files.append(save(fig, out / "compare_accuracy.png"))

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
                color=color(k),
                label=row["label"],
            )
        ax.set_xticks(x, classes, rotation=45, ha="right")
        ax.set(
            ylabel="flipped-test accuracy",
            ylim=(0, 1.02),
            title="Final per-class accuracy on the flipped test set",
        )
        ax.grid(alpha=0.3, axis="y")
        legend_right(ax)
        files.append(save(fig, out / "compare_per_class.png"))
    with_inv = [Path(d) for d in run_dirs if (Path(d) / INVARIANCE).exists()]
    if with_inv:
        files.append(_invariance_figure(with_inv, out / "compare_invariance.png"))
    return files


# -- a sweep: settings x seeds --------------------------------------------------------------------
def plot_sweep(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """sweep_accuracy.png, sweep_per_class.png and (with two or more settings)
    sweep_compare.png into ``sweep_dir/figures``; the compare sweep adds plot_compare's."""
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / FIGURES
    groups = group_runs(run_dirs)
    files = []
    for fig, name in (
        (accuracy_figure(groups), "sweep_accuracy.png"),
        (per_class_figure(groups), "sweep_per_class.png"),
        (comparison_figure(groups), "sweep_compare.png"),
    ):
        if fig is not None:
            files.append(save(fig, out / name))
    if read_sweep(sweep_dir).get("name") == "compare":
        files += plot_compare(run_dirs, out)
    return files


def _summaries(group: Group) -> list[dict[str, Any]]:
    return [read_json(d / SUMMARY) for d in group.run_dirs if (d / SUMMARY).exists()]


def accuracy_figure(groups: list[Group]) -> Any | None:
    """Test and flipped-test accuracy per epoch: per setting the mean over seeds with a 95%
    band (the members that reached an epoch count there). None before any epoch."""
    plt = pyplot()
    curves = [(g, [m for m in map(read_metrics, g.run_dirs) if m]) for g in groups]
    curves = [(g, runs) for g, runs in curves if runs]
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for k, (group, runs) in enumerate(curves):
        for ax, view in zip(axes, ("test", "test_vflip"), strict=True):
            x, rows = by_epoch(runs, lambda r, v=view: r.get(f"{v}_acc"))
            band(ax, x, rows, color(k), group.label, marker="o", ms=3)
    for ax, view in zip(axes, ("test", "test_vflip"), strict=True):
        ax.set(title=VIEW_LABELS[view], xlabel="epoch", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        integer_ticks(ax)
    axes[0].set_ylabel("accuracy (fraction correct)")
    legend_right(axes[1])
    fig.suptitle(f"Accuracy per epoch ({BAND_NOTE})", fontsize=9)
    return fig


def per_class_figure(groups: list[Group]) -> Any | None:
    """Final per-class accuracy, test against flipped test, one panel per setting, with 95%
    intervals over seeds as error bars. None before any member finished."""
    plt = pyplot()
    done = [(g, s) for g in groups if (s := _summaries(g))]
    if not done:
        return None
    classes = read_json(done[0][0].run_dirs[0] / DATASET)["classes"]
    ncols = min(2, len(done))
    nrows = math.ceil(len(done) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(6.4, 0.6 * len(classes)) * ncols, 0.4 + 3.0 * nrows),
        squeeze=False,
        sharey=True,
    )
    for ax, (group, summaries) in zip(axes.flat, done, strict=False):
        values = {
            view: [interval_of([s["per_class_acc"][view][c] for s in summaries]) for c in classes]
            for view in ("test", "test_vflip")
        }
        _class_bars(ax, classes, values, legend=False)
        ax.set_title(n_label(group.label, len(summaries)), fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("final accuracy (fraction correct)")
    for ax in list(axes.flat)[len(done) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Final per-class accuracy (bars: mean over seeds; error bars: 95% Student-t interval, "
        "cut at the axes)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (0.4 + 3.0 * nrows)))  # room for the title
    legend_below(fig, ncol=2)
    return fig


def comparison_figure(groups: list[Group]) -> Any | None:
    """Final test and flipped-test accuracy across the settings, with 95% intervals: against
    the swept value where one numeric setting varies, else one tick per setting."""
    import numpy as np

    plt = pyplot()
    done = [(g, s) for g in groups if (s := _summaries(g))]
    if len(done) < 2:
        return None
    keys = list(done[0][0].settings)
    numeric = len(keys) == 1 and all(is_number(g.settings[keys[0]]) for g, _ in done)
    if numeric:
        done.sort(key=lambda gs: gs[0].settings[keys[0]])
        x = np.array([g.settings[keys[0]] for g, _ in done], dtype=np.float64)
    else:
        x = np.arange(len(done), dtype=np.float64)
    log = numeric and x.min() > 0 and x.max() / x.min() >= 4
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(done)) if not numeric else 6.4, 4.2))
    counts = [len(s) for _, s in done]
    for i, view in enumerate(("test", "test_vflip")):
        points = errorbar_args([interval_of([s["final_acc"][view] for s in ss]) for _, ss in done])
        ax.errorbar(
            _dodge(x, i - 0.5, numeric=numeric, log=log),
            points["y"],
            yerr=points["yerr"],
            color=VIEW_COLORS[view],
            marker="o",
            ms=4,
            capsize=3,
            ls="-" if numeric else "none",
            label=n_label(VIEW_LABELS[view], counts),
        )
    if numeric:
        ax.set_xlabel(keys[0])
        if log:
            ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
    else:
        ax.set_xticks(x, [g.label for g, _ in done], rotation=30, ha="right", fontsize=SMALL_PT)
    ax.set(ylabel="final accuracy (fraction correct)", ylim=(0, 1.02))
    ax.set_title(
        "Final accuracy across settings (mean over seeds, 95% Student-t interval)", fontsize=9
    )
    ax.grid(alpha=0.3)
    legend_right(ax)
    return fig


def _dodge(x: Any, side: float, *, numeric: bool, log: bool) -> Any:
    """``x`` moved a little to one side, so two series' error bars at one x do not overlap."""
    if log:
        return x * 2 ** (0.04 * side)
    if numeric:
        return x + 0.015 * float(x.max() - x.min()) * side
    return x + 0.08 * side  # one tick per setting


# -- the report: its summary sentence and its runs in one figure -----------------------------------
def finding(run_dirs: list[Path]) -> str | None:
    """The report's sentence on these runs: per setting, final flipped against upright test
    accuracy (the mean over its seeds), the plain run (no augmentation, no invariance) first;
    None before any run finished."""
    groups = group_runs([d for d in map(Path, run_dirs) if (d / SUMMARY).exists()])
    if not groups:
        return None
    groups.sort(key=lambda g: _plain(g.run_dirs[0]), reverse=True)
    parts = []
    for k, g in enumerate(groups):
        summaries = _summaries(g)
        upright = mean_of(s["final_acc"]["test"] for s in summaries)
        flipped = mean_of(s["final_acc"]["test_vflip"] for s in summaries)
        who = _label(g.run_dirs[0]) if len(groups) == 1 else g.label
        seeds = f" (mean of {len(summaries)} seeds)" if len(summaries) > 1 else ""
        if k == 0:
            parts.append(
                f"{who}: flipped test accuracy {flipped:.2f} against {upright:.2f} upright{seeds}"
            )
        else:
            parts.append(f"{who}: {flipped:.2f} flipped, {upright:.2f} upright{seeds}")
    return clauses(parts)


def _plain(run_dir: Path) -> bool:
    cfg = read_json(Path(run_dir) / CONFIG)["config"]
    return cfg.get("augment", "none") == "none" and cfg.get("invariance", "none") == "none"


def compare(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """robustness_accuracy.png in ``out_dir``: test and flipped test per epoch of every setting
    among the runs (mean over seeds, 95% band), when there are two settings or more."""
    groups = group_runs([d for d in map(Path, run_dirs) if (d / DATASET).exists()])
    fig = accuracy_figure(groups) if len(groups) > 1 else None
    return [] if fig is None else [save(fig, Path(out_dir) / "robustness_accuracy.png")]
