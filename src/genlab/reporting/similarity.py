"""Figures, key numbers and the finding of a similarity analysis (``genlab analyze similarity``),
read from its analysis folder's similarity.json only: nothing here measures or trains.

- ``similarity_by_layer.png``: per measure (linear CKA, PWCCA), the similarity between the seeds
  of each group of runs (runs alike but for the seed) at each layer: the mean over the pairs of
  seeds, with its 95% Student-t interval where there are two pairs or more (three seeds).
- ``layers_<group>.png``: per group with two runs or more, linear CKA between every two layers:
  of its first run against itself, and of its first run against its second.
- ``across_settings.png``: per two groups that differ in exactly one setting (e.g. only the label
  noise), per measure, the similarity across the groups (every run of one against every run of
  the other) at each layer, with both groups' similarity between seeds dashed for reference. With
  more than ``MAX_PAIRS`` such pairs, only those whose differing setting takes its smallest and
  largest value are drawn (the figure says so).

A figure with nothing to show (one seed per group, no such pair, one measure not computed) is not
drawn.
"""

from __future__ import annotations

import itertools
import json
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
from genlab.runs import FIGURES, SIMILARITY

TITLE = "Representational similarity between runs (CKA, PWCCA)"
MEASURE_TITLES = {
    "cka": "linear CKA (unbiased minibatch)",
    "pwcca": "PWCCA (projection-weighted CCA)",
}
MAX_PAIRS = 8  # at most this many pairs of groups in across_settings.png
PAIR_NOTE = (
    "mean over pairs of seeds; bars: 95% Student-t interval over the pairs where there are two "
    "or more (pairs share runs: not independent)"
)


# -- reading similarity.json ----------------------------------------------------------------------
def read_results(folder: Path) -> dict[str, Any]:
    return read_json(Path(folder) / SIMILARITY)


def _title(measure: str) -> str:
    return MEASURE_TITLES.get(measure, measure)


def _label(results: dict[str, Any], g: int) -> str:
    return str(results["groups"][g]["label"])


def within(results: dict[str, Any], measure: str, g: int) -> dict[str, dict[str, Any]]:
    """The rows of "within" of group ``g`` and ``measure``, by layer."""
    return {
        r["layer"]: r
        for r in results.get("within", [])
        if r["group"] == g and r["measure"] == measure
    }


def across(results: dict[str, Any], measure: str, g: int, h: int) -> dict[str, dict[str, Any]]:
    """The rows of "across" of groups ``g`` and ``h`` (either order) and ``measure``, by layer."""
    return {
        r["layer"]: r
        for r in results.get("across", [])
        if sorted(r["groups"]) == sorted([g, h]) and r["measure"] == measure
    }


def _half(row: dict[str, Any] | None) -> float | None:
    if not row or not row.get("ci95") or None in row["ci95"]:
        return None
    low, high = row["ci95"]
    return (high - low) / 2


def _interval(row: dict[str, Any] | None) -> tuple[float, float | None]:
    """(mean, half-width) of a within/across row; NaN for a missing or undefined one."""
    if not row or row.get("mean") is None:
        return math.nan, None
    return float(row["mean"]), _half(row)


def _fmt(row: dict[str, Any]) -> str:
    half = _half(row)
    return f"{row['mean']:.2f}" + ("" if half is None else f" ± {half:.2f}")


def cka_block(results: dict[str, Any], a: int, b: int) -> Any:
    """(L, L) linear CKA between the layers of run ``a`` (rows) and run ``b`` (columns); NaN
    where undefined."""
    import numpy as np

    layers = len(results["layers"])
    matrix = results["cka"]["matrix"]
    rows = matrix[a * layers : (a + 1) * layers]
    block = [row[b * layers : (b + 1) * layers] for row in rows]
    return np.array([[math.nan if v is None else v for v in row] for row in block], dtype=float)


def one_setting_pairs(results: dict[str, Any]) -> list[tuple[int, int, str]]:
    """Every pair of groups (g, h, the setting) whose settings differ in exactly one setting."""
    groups = results["groups"]
    found = []
    for g, h in itertools.combinations(range(len(groups)), 2):
        a, b = groups[g]["settings"], groups[h]["settings"]
        differ = [
            k for k in sorted(set(a) | set(b)) if json.dumps(a.get(k)) != json.dumps(b.get(k))
        ]
        if len(differ) == 1:
            found.append((g, h, differ[0]))
    return found


def differing_pairs(results: dict[str, Any]) -> list[tuple[int, int, str]]:
    """The pairs of ``one_setting_pairs`` that across_settings.png draws: all of them, or with
    more than ``MAX_PAIRS`` those at the extremes of their setting (module docstring)."""
    groups = results["groups"]
    found = one_setting_pairs(results)
    if len(found) <= MAX_PAIRS:
        return found
    values: dict[str, list[Any]] = {}
    for group in groups:
        for k, v in group["settings"].items():
            values.setdefault(k, []).append(v)

    def extreme(g: int, h: int, key: str) -> bool:
        try:
            lo, hi = min(values[key]), max(values[key])
        except TypeError:  # settings that do not order: keep them
            return True
        pair = {json.dumps(groups[g]["settings"][key]), json.dumps(groups[h]["settings"][key])}
        return pair == {json.dumps(lo), json.dumps(hi)}

    return [p for p in found if extreme(*p)][:MAX_PAIRS]


def _by_setting(pairs: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    return sorted(pairs, key=lambda p: p[2])  # the pairs that differ in one setting side by side


# -- figures --------------------------------------------------------------------------------------
def plot_analysis(folder: Path) -> list[Path]:
    """similarity_by_layer.png, layers_<group>.png, across_settings.png into ``folder/figures``."""
    folder = Path(folder)
    results = read_results(folder)
    out = folder / FIGURES
    files = []
    fig = by_layer_figure(results)
    if fig is not None:
        files.append(save(fig, out / "similarity_by_layer.png"))
    if "cka" in results:
        for g, group in enumerate(results["groups"]):
            if len(group["runs"]) >= 2:
                fig = layers_figure(results, g)
                files.append(save(fig, out / f"layers_{slug(group['label'])}.png"))
    fig = across_figure(results)
    if fig is not None:
        files.append(save(fig, out / "across_settings.png"))
    return files


def _probe_note(results: dict[str, Any]) -> str:
    probe = results.get("probe", {})
    return f"probe: {probe.get('num_images', '?')} {probe.get('split', 'test')} images"


def _layer_axis(ax: Any, layers: list[str]) -> None:
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlim(-0.4, len(layers) - 0.6)
    ax.grid(alpha=0.3)


def by_layer_figure(results: dict[str, Any]) -> Any | None:
    """One panel per measure: similarity between seeds per layer, one line per group. None
    when no group has two seeds."""
    plt = pyplot()
    measures = [m for m in results["measures"] if any(within(results, m, g) for g in _ids(results))]
    if not measures:
        return None
    layers = results["layers"]
    groups = [g for g in _ids(results) if any(within(results, m, g) for m in measures)]
    fig, axes = plt.subplots(
        1, len(measures), figsize=(5.2 * len(measures), 4.0), squeeze=False, sharey=True
    )
    dodge = 0.08
    for ax, measure in zip(axes[0], measures, strict=True):
        for k, g in enumerate(groups):
            rows = within(results, measure, g)
            bars = errorbar_args([_interval(rows.get(layer)) for layer in layers])
            shift = (k - (len(groups) - 1) / 2) * dodge  # side by side: the bars do not overlap
            n = max((r["n_pairs"] for r in rows.values()), default=0)
            ax.errorbar(
                [i + shift for i in range(len(layers))],
                bars["y"],
                yerr=bars["yerr"],
                color=color(g),
                marker="o",
                ms=4,
                capsize=3,
                label=f"{_label(results, g)} "
                + ("(1 pair of seeds, no interval)" if n == 1 else f"({n} pairs of seeds)"),
            )
        _layer_axis(ax, layers)
        ax.set(title=f"{_title(measure)} between seeds", xlabel="layer")
        low, high = ax.get_ylim()
        ax.set_ylim(min(0.0, low), max(1.02, high))
    axes[0, 0].set_ylabel("similarity between seeds (1 = identical)")
    fig.suptitle(
        f"Similarity between seeds by layer; {_probe_note(results)}\n{PAIR_NOTE}", fontsize=9
    )
    fig.tight_layout()
    legend_below(fig, ncol=2)
    return fig


def layers_figure(results: dict[str, Any], g: int) -> Any:
    """Linear CKA between every two layers: the group's first run against itself and against
    its second run."""
    plt = pyplot()
    first, second = results["groups"][g]["runs"][:2]
    runs, layers = results["runs"], results["layers"]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.9), layout="constrained")
    image = None
    for ax, other in zip(axes, (first, second), strict=True):
        image = annotated_heatmap(ax, cka_block(results, first, other))
        ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel(f"layer of seed {runs[other]['seed']}")
        ax.set_title(
            f"seed {runs[first]['seed']} against "
            + ("itself" if other == first else f"seed {runs[other]['seed']}"),
            fontsize=10,
        )
    axes[0].set_ylabel(f"layer of seed {runs[first]['seed']}")
    fig.colorbar(image, ax=list(axes), label="linear CKA", shrink=0.9)
    fig.suptitle(
        f"Linear CKA (unbiased minibatch) between layers: {_label(results, g)}; "
        f"{_probe_note(results)}\nruns {runs[first]['name']} and {runs[second]['name']}",
        fontsize=9,
    )
    return fig


def across_figure(results: dict[str, Any]) -> Any | None:
    """Per pair of groups that differ in one setting (columns) and measure (rows): similarity
    across the two groups per layer, and each group's between its seeds (dashed). None
    without such a pair."""
    plt = pyplot()
    pairs = [
        (g, h, key)
        for g, h, key in _by_setting(differing_pairs(results))
        if any(across(results, m, g, h) for m in results["measures"])
    ]
    if not pairs:
        return None
    measures = results["measures"]
    layers = results["layers"]
    fig, axes = plt.subplots(
        len(measures),
        len(pairs),
        figsize=(max(6.0, 4.3 * len(pairs)), 3.3 * len(measures) + 1.1),
        squeeze=False,
        sharey="row",
    )
    x = list(range(len(layers)))
    for row, measure in enumerate(measures):
        for col, (g, h, key) in enumerate(pairs):
            ax = axes[row, col]
            rows = across(results, measure, g, h)
            bars = errorbar_args([_interval(rows.get(layer)) for layer in layers])
            n = max((r["n_pairs"] for r in rows.values()), default=0)
            ax.errorbar(
                x, bars["y"], yerr=bars["yerr"], color="black", marker="o", ms=4, capsize=3,
                label=f"across the two groups ({n} pairs)",
            )  # fmt: skip
            for group in (g, h):
                mine = within(results, measure, group)
                if mine:
                    ax.plot(
                        x,
                        [_interval(mine.get(layer))[0] for layer in layers],
                        color=color(group),
                        ls="--",
                        marker=".",
                        label=f"between seeds: {_label(results, group)}",
                    )
            _layer_axis(ax, layers)
            a, b = (results["groups"][i]["settings"].get(key) for i in (g, h))
            rest = {k: v for k, v in results["groups"][g]["settings"].items() if k != key}
            shared = ", ".join(f"{k}={v}" for k, v in rest.items())
            ax.set_title(
                f"{_title(measure)}\n{key} {a} vs {b}" + (f" ({shared})" if shared else ""),
                fontsize=9,
            )
            if col == 0:
                ax.set_ylabel("similarity")
            if row == len(measures) - 1:
                ax.set_xlabel("layer")
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    note = (
        "" if len(pairs) == len(one_setting_pairs(results)) else "; extremes of each setting only"
    )
    fig.suptitle(
        f"Similarity across groups that differ in one setting; {_probe_note(results)}{note}\n"
        "solid: mean over every run of one group against every run of the other, "
        "bars: 95% interval\ndashed: between the seeds of each group",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _ids(results: dict[str, Any]) -> range:
    return range(len(results["groups"]))


# -- key numbers and the finding ------------------------------------------------------------------
def _last(results: dict[str, Any]) -> str:
    return results["layers"][-1]


def _measure(results: dict[str, Any]) -> str:
    return "cka" if "cka" in results["measures"] else results["measures"][0]


def key_numbers(results: dict[str, Any]) -> list[tuple[str, str]]:
    """Per measure and group, the similarity between seeds at the first and the last layer
    (mean ± half-width of its 95% interval over pairs of seeds), then the probe."""
    numbers = []
    first, last = results["layers"][0], _last(results)
    for measure in results["measures"]:
        for g in _ids(results):
            rows = within(results, measure, g)
            cells = [f"{layer} {_fmt(rows[layer])}" for layer in (first, last) if layer in rows]
            if cells and all(rows[layer].get("mean") is not None for layer in (first, last)):
                numbers.append(
                    (f"{measure.upper()} between seeds, {_label(results, g)}", "; ".join(cells))
                )
    probe = results.get("probe", {})
    numbers.append(
        (
            "probe",
            f"{probe.get('num_images', '?')} of {probe.get('of', '?')} {probe.get('split', '')} "
            f"images in {probe.get('num_batches', '?')} minibatches",
        )
    )
    numbers.append(("runs, groups", f"{len(results['runs'])}, {len(results['groups'])}"))
    return numbers


def _at(results: dict[str, Any], rows: list[tuple[int, dict[str, Any]]]) -> str:
    return "; ".join(f"{r['mean']:.2f} at {_label(results, g)}" for g, r in rows)


def summary(results: dict[str, Any]) -> str:
    """The finding in a sentence or two: the similarity between seeds at the last layer and at
    the first, per group (across groups where no group has two seeds)."""
    measure = _measure(results)
    name = "Linear CKA" if measure == "cka" else measure.upper()
    first, last = results["layers"][0], _last(results)

    def found(layer: str) -> list[tuple[int, dict[str, Any]]]:
        rows = [(g, within(results, measure, g).get(layer)) for g in _ids(results)]
        return [(g, r) for g, r in rows if r and r.get("mean") is not None]

    if not found(last):
        pairs = [
            (r["groups"], r)
            for r in results.get("across", [])
            if r["measure"] == measure and r["layer"] == last and r.get("mean") is not None
        ]
        if not pairs:
            return f"No two runs to compare: {name} between runs is undefined."
        cells = "; ".join(
            f"{r['mean']:.2f} between {_label(results, a)} and {_label(results, b)}"
            for (a, b), r in pairs
        )
        return f"No group has two seeds. {name} across groups at {last}: {cells}."
    text = (
        f"{name} between seeds at {last} (mean over pairs of seeds): {_at(results, found(last))}."
    )
    if first != last and found(first):
        text += f" At {first}: {_at(results, found(first))}."
    return text


__all__ = ["TITLE", "key_numbers", "plot_analysis", "summary"]
