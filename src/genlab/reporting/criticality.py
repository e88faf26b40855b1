"""Figures, key numbers and the finding of a criticality analysis (``genlab analyze
criticality``), read from its analysis folder's criticality.json only: nothing here measures or
trains.

- ``runs/<run name>.png``: per run, one heat map per view (train: the labels it was fitted to;
  test; test_vflip where the study has it): the accuracy after changing one layer (rows) to each
  source (columns: its weights at a kept epoch, or fresh random ones), every other layer as
  trained; the panel's title gives the reference with no layer changed (every BatchNorm's
  statistics recomputed, as after a change) and the network as trained.
- ``group_<group>.png``: the same heat maps with the mean over the group's seeds.
- ``criticality_by_layer.png``: per view, the accuracy after re-initializing each layer to its
  epoch-0 weights (solid) and after re-randomizing it (dashed), one colour per group, mean over
  seeds with its 95% Student-t interval; each group's reference as a thin horizontal line.

A layer is *ambient* when re-initializing it to epoch 0 keeps the group's mean test accuracy
within ``AMBIENT_WITHIN`` of its reference, *critical* when it loses more (``summary``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from genlab.fileio import read_json
from genlab.reporting.plotting import (
    annotated_heatmap,
    color,
    errorbar_args,
    legend_below,
    pyplot,
    save,
    slug,
)
from genlab.runs import CRITICALITY, FIGURES

TITLE = "Layer criticality (re-initialization and re-randomization of one layer)"
VIEWS = ("train", "test", "test_vflip")  # the views drawn, those a run has
VIEW_TITLES = {
    "train": "train (fitted labels)",
    "test": "test",
    "test_vflip": "test, flipped vertically",
}
INIT = "epoch 0"  # the source of re-initialization in the summary and criticality_by_layer.png
RANDOM = "random"
RECOMPUTED = "recomputed"
AMBIENT_WITHIN = 0.05  # ambient: the test accuracy stays within this of the reference


def read_results(folder: Path) -> dict[str, Any]:
    return read_json(Path(folder) / CRITICALITY)


def _views(table: dict[str, Any]) -> list[str]:
    return [v for v in VIEWS if v in table]


def _label(results: dict[str, Any], g: int) -> str:
    return str(results["groups"][g]["label"])


def _source_title(source: str) -> str:
    return "random (re-drawn)" if source == RANDOM else source


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def group_rows(results: dict[str, Any], g: int) -> dict[tuple[Any, Any, str], dict[str, Any]]:
    """by_group's rows of group ``g``, by (layer, source, view)."""
    return {(r["layer"], r["source"], r["view"]): r for r in results["by_group"] if r["group"] == g}


def _sources(results: dict[str, Any], g: int) -> list[str]:
    """The sources every run of group ``g`` has, in the first run's order."""
    members = [results["runs"][i] for i in results["groups"][g]["runs"]]
    return [s for s in members[0]["sources"] if all(s in m["sources"] for m in members)]


# -- figures --------------------------------------------------------------------------------------
def plot_analysis(folder: Path) -> list[Path]:
    """runs/<run name>.png, group_<group>.png and criticality_by_layer.png into
    ``folder/figures``."""
    folder = Path(folder)
    results = read_results(folder)
    out = folder / FIGURES
    files = []
    fig = by_layer_figure(results)
    if fig is not None:
        files.append(save(fig, out / "criticality_by_layer.png"))
    for g, group in enumerate(results["groups"]):
        if group["runs"]:
            files.append(save(group_figure(results, g), out / f"group_{slug(group['label'])}.png"))
    for run in results["runs"]:
        files.append(save(run_figure(results, run), out / "runs" / f"{run['name']}.png"))
    return files


def _heatmaps(
    layers: list[str],
    sources: list[str],
    views: list[str],
    cell: Any,
    title: Any,
) -> tuple[Any, list[Any]]:
    """One annotated heat map per view: ``cell(layer, source, view)`` the accuracy (None: not
    measured), ``title(view)`` the panel's title."""
    import numpy as np

    plt = pyplot()
    fig, axes = plt.subplots(
        1,
        len(views),
        figsize=(max(3.4, 0.9 * len(sources)) * len(views) + 1.8, 0.5 * len(layers) + 2.6),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, view in zip(axes[0], views, strict=True):
        grid = np.array(
            [[_nan(cell(layer, s, view)) for s in sources] for layer in layers], dtype=float
        )
        image = annotated_heatmap(ax, grid)
        ax.set_xticks(
            range(len(sources)),
            [_source_title(s) for s in sources],
            rotation=30,
            ha="right",
            rotation_mode="anchor",
        )
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel("layer's weights set to")
        ax.set_title(title(view), fontsize=9)
    axes[0, 0].set_ylabel("layer changed (others as trained)")
    fig.colorbar(image, ax=list(axes[0]), label="accuracy (fraction correct)", shrink=0.9)
    return fig, list(axes[0])


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def run_figure(results: dict[str, Any], run: dict[str, Any]) -> Any:
    """One run's table: accuracy per changed layer and source, per view."""
    views = _views(run["trained"])
    changed = run["changed"]

    def cell(layer: str, source: str, view: str) -> float | None:
        return changed.get(layer, {}).get(source, {}).get(view, {}).get("acc")

    def title(view: str) -> str:
        return (
            f"{VIEW_TITLES.get(view, view)}: accuracy\n"
            f"reference {_acc(run[RECOMPUTED][view]['acc'])} (no layer changed, BN recomputed)\n"
            f"as trained {_acc(run['trained'][view]['acc'])}"
        )

    fig, _ = _heatmaps(results["layers"], run["sources"], views, cell, title)
    fig.suptitle(
        f"Accuracy after changing one layer: {run['name']}\n"
        f"{_label(results, run['group'])}, seed {run['seed']}, trained {run['epoch']} epochs",
        fontsize=9,
    )
    return fig


def group_figure(results: dict[str, Any], g: int) -> Any:
    """A group's table: the mean over its seeds."""
    rows = group_rows(results, g)
    views = [v for v in _views(results["runs"][results["groups"][g]["runs"][0]]["trained"])]
    n = len(results["groups"][g]["runs"])

    def cell(layer: str, source: str, view: str) -> float | None:
        row = rows.get((layer, source, view))
        return None if row is None else row["mean"]

    def title(view: str) -> str:
        ref = rows.get((None, RECOMPUTED, view), {}).get("mean")
        trained = rows.get((None, None, view), {}).get("mean")
        return (
            f"{VIEW_TITLES.get(view, view)}: mean accuracy\n"
            f"reference {_acc(ref)} (no layer changed, BN recomputed)\nas trained {_acc(trained)}"
        )

    fig, _ = _heatmaps(results["layers"], _sources(results, g), views, cell, title)
    fig.suptitle(
        f"Accuracy after changing one layer, mean over {n} seed{'' if n == 1 else 's'}: "
        f"{_label(results, g)}",
        fontsize=9,
    )
    return fig


def _interval(row: dict[str, Any] | None) -> tuple[float, float | None]:
    if not row or row.get("mean") is None:
        return math.nan, None
    ci = row.get("ci95")
    return float(row["mean"]), None if not ci else (ci[1] - ci[0]) / 2


def by_layer_figure(results: dict[str, Any]) -> Any | None:
    """Per view: accuracy after re-initializing each layer to epoch 0 (solid) and after
    re-randomizing it (dashed) per group; each group's reference as a thin line. None without
    groups."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    groups = [g for g, group in enumerate(results["groups"]) if group["runs"]]
    if not groups:
        return None
    views = [v for v in VIEWS if any(r["view"] == v for r in results["by_group"])]
    layers = results["layers"]
    x = list(range(len(layers)))
    fig, axes = plt.subplots(
        1, len(views), figsize=(4.6 * len(views), 4.0), squeeze=False, sharey=True
    )
    lines = [(INIT, "-", "o"), (RANDOM, "--", "s")]
    slots = len(groups) * len(lines)
    width = min(0.6, 0.08 * slots)  # every (group, source) its own x offset: bars side by side
    for ax, view in zip(axes[0], views, strict=True):
        for k, g in enumerate(groups):
            rows = group_rows(results, g)
            for j, (source, ls, marker) in enumerate(lines):
                if source not in _sources(results, g):
                    continue
                slot = j * len(groups) + k
                shift = (slot / max(slots - 1, 1) - 0.5) * width
                bars = errorbar_args([_interval(rows.get((la, source, view))) for la in layers])
                drawn = ax.errorbar(
                    [i + shift for i in x], bars["y"], yerr=bars["yerr"], color=color(g), ls=ls,
                    marker=marker, ms=4, capsize=2, elinewidth=0.8,
                    mfc="white" if source == RANDOM else None,
                )  # fmt: skip
                for part in (*drawn[1], *drawn[2]):  # the interval lighter than the means
                    part.set_alpha(0.45)
            ref = rows.get((None, RECOMPUTED, view), {}).get("mean")
            if ref is not None:
                ax.axhline(ref, color=color(g), lw=0.9, alpha=0.7)
        ax.set_xticks(x, layers)
        ax.set(title=f"{VIEW_TITLES.get(view, view)}", xlabel="layer changed", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy (fraction correct)")
    n = {len(results["groups"][g]["runs"]) for g in groups}
    seeds = f"{min(n)}" if len(n) == 1 else f"{min(n)} to {max(n)}"
    handles = [
        Line2D([], [], color=color(g), marker="o", label=f"{_label(results, g)}") for g in groups
    ]
    drawn = {s for g in groups for s in _sources(results, g)}
    if INIT in drawn:
        handles.append(Line2D([], [], color="gray", marker="o", label=f"re-initialized to {INIT}"))
    if RANDOM in drawn:
        handles.append(
            Line2D([], [], color="gray", marker="s", mfc="white", ls="--", label="re-randomized")
        )
    handles.append(
        Line2D([], [], color="gray", lw=0.9, label="reference: no layer changed, BN recomputed")
    )
    fig.suptitle(
        "Accuracy after changing one layer (every other as trained; later BatchNorm statistics "
        f"recomputed)\nmean over {seeds} seeds per group; bars: 95% Student-t interval",
        fontsize=9,
    )
    fig.tight_layout()
    legend_below(fig, handles, [h.get_label() for h in handles], ncol=3)
    return fig


# -- key numbers and the finding ------------------------------------------------------------------
def classify(results: dict[str, Any], g: int, view: str = "test") -> dict[str, Any] | None:
    """Group ``g``'s layers after re-initialization to epoch 0 (re-randomization when no run
    kept epoch 0) on ``view``: {"source", "reference", "ambient": [(layer, acc)], "critical":
    [(layer, acc)]}; None when the view or the reference has no accuracy."""
    rows = group_rows(results, g)
    ref = rows.get((None, RECOMPUTED, view), {}).get("mean")
    if ref is None:
        return None
    sources = _sources(results, g)
    source = INIT if INIT in sources else RANDOM
    found: dict[str, Any] = {"source": source, "reference": ref, "ambient": [], "critical": []}
    for layer in results["layers"]:
        acc = rows.get((layer, source, view), {}).get("mean")
        if acc is not None:
            kind = "ambient" if ref - acc <= AMBIENT_WITHIN else "critical"
            found[kind].append((layer, acc))
    return found


def _layers(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{layer} ({acc:.2f})" for layer, acc in pairs) or "none"


def key_numbers(results: dict[str, Any]) -> list[tuple[str, str]]:
    """Per group: the test accuracy of the reference and the critical layers with their test
    accuracy after re-initialization to epoch 0; then runs and the BatchNorm treatment."""
    numbers = []
    for g in range(len(results["groups"])):
        found = classify(results, g)
        if found is None:
            continue
        label = _label(results, g)
        numbers.append(
            (f"test acc, reference (BN recomputed): {label}", f"{found['reference']:.2f}")
        )
        numbers.append(
            (
                f"critical layers (test acc after {found['source']}): {label}",
                _layers(found["critical"]),
            )
        )
    numbers.append(("runs, groups", f"{len(results['runs'])}, {len(results['groups'])}"))
    numbers.append(("BatchNorm", str(results.get("batchnorm", ""))))
    return numbers


SUMMARY_VIEW = "train"  # what a network learned is the labels it was fitted to: at p = 1 the
# test accuracy is chance whatever is changed, and would call every layer ambient


def summary(results: dict[str, Any]) -> str:
    """Per group, which layers are ambient and which critical on the labels the networks were
    fitted to, with their mean accuracy after re-initialization and the reference."""
    found = [(g, classify(results, g, SUMMARY_VIEW)) for g in range(len(results["groups"]))]
    found = [(g, f) for g, f in found if f is not None]
    if not found:
        return "No group has a training accuracy to compare: nothing to classify."
    parts = [
        f"at {_label(results, g)} (reference {f['reference']:.2f}) ambient "
        f"{_layers(f['ambient'])}, critical {_layers(f['critical'])}"
        for g, f in found
    ]
    sources = {f["source"] for _, f in found}
    what = {
        frozenset({INIT}): "to its epoch-0 weights",
        frozenset({RANDOM}): "to random weights (no run kept its epoch-0 weights)",
    }.get(frozenset(sources), "to its epoch-0 weights (random where a run did not keep them)")
    return (
        f"Accuracy on the fitted training labels after re-initializing one layer {what} (mean "
        "over seeds), against the "
        f"reference with no layer changed and every BatchNorm recomputed: a layer is ambient "
        f"within {AMBIENT_WITHIN} of it, critical below; " + "; ".join(parts) + "."
    )


__all__ = ["TITLE", "classify", "key_numbers", "plot_analysis", "summary"]
