"""Figures and key numbers of the random-labels study, read from run and sweep folders only.

One run: loss and accuracy per epoch on the fitted labels, the true labels, the noisy and clean
subsets and the test set.

A sweep: members that differ only in their seed are one setting. Per setting of everything but
the label noise p, one figure with a panel per p: fitted-label train accuracy, true-label train
accuracy and test accuracy per epoch, each the mean over seeds with a shaded 95% Student-t band
(a member stopped early at the fit threshold counts at the epochs it reached). The ``report``
sweep (the report's grid) adds today's figures: per width the four panels (train loss, test
loss, train accuracy, test accuracy per epoch), one line per p, and time to fit against p.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from genlab.fileio import read_json
from genlab.reporting.plotting import (
    BAND_NOTE,
    OKABE_ITO,
    Group,
    band,
    by_epoch,
    clauses,
    color,
    group_runs,
    integer_ticks,
    legend_below,
    legend_right,
    mean_of,
    pyplot,
    read_metrics,
    read_run,
    read_sweep,
    save,
    setting_label,
)
from genlab.runs import CONFIG, DATASET, FIGURES, SUMMARY

TITLE = "Random labels"
KEY_NUMBERS: list[tuple[str, str]] = [  # (column heading, dotted key into summary.json)
    ("labels changed", "fraction_changed"),
    ("params", "params"),
    ("params per train label", "regime.params_per_label"),  # >= 1: over-parametrized
    ("train acc (fitted labels)", "final_train_fitted_acc"),
    ("train acc (true labels)", "final_acc.train_true"),
    ("test acc", "final_acc.test"),
    ("epoch fitted", "time_to_fit"),
    ("epochs", "epochs"),
    ("seconds", "seconds"),
]
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


def regime_note(summary: dict[str, Any]) -> str:
    """The run's regime as a phrase, e.g. "6,666 parameters for 2,000 training labels:
    over-parametrized", from its summary's ``regime`` (written since issue #14); "" without."""
    r = summary.get("regime")
    if not r:
        return ""
    kind = "over" if r["over_parametrized"] else "under"
    note = f"{r['params']:,} parameters for {r['num_train']:,} training labels: {kind}-parametrized"
    if r.get("matches_preset") is False:
        note += f" (not as the '{r['preset']}' preset is named)"
    return note


# -- one run --------------------------------------------------------------------------------------
def plot_run(run_dir: Path) -> list[Path]:
    """curves.png into ``run_dir/figures``."""
    run_dir = Path(run_dir)
    plt = pyplot()
    cfg, dataset, metrics = read_run(run_dir)
    if not metrics:
        return []
    epochs = [m["epoch"] for m in metrics]
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).exists() else {}
    note = regime_note(summary)
    title = (
        f"Conv-4 width {cfg['width']} on {Path(str(dataset['name'])).name} ({dataset['num_train']:,} images), "
        f"p={cfg['label_noise']} {cfg['label_noise_mode']}, randomize {cfg['randomize']}; {_test_note(dataset)}"
        + (f"\n{note}" if note else "")
    )
    views = ["train_true", "test"]
    views += [
        v
        for v, n in (("train_noisy", dataset["num_noisy"]), ("train_clean", dataset["num_clean"]))
        if n and dataset["num_noisy"]  # none changed: the unchanged labels are the true ones
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
        label = SUBSET_LABELS[v]
        if v == "train_true" and not dataset["num_noisy"]:
            label += " (= unchanged: no label changed)"
        style = {
            "color": SUBSET_COLORS[v],
            "label": label,
            "ls": "--" if v == "train_true" else "-",
        }
        ax_loss.plot(epochs, [m[f"{v}_loss"] for m in metrics], **style)
        ax_acc.plot(epochs, [m[f"{v}_acc"] for m in metrics], **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (fraction correct)", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    legend_right(ax_acc)
    fig.suptitle(title, fontsize=9)
    return [save(fig, run_dir / FIGURES / "curves.png")]


# -- a sweep: settings x seeds --------------------------------------------------------------------
def fitted_acc(record: dict[str, Any], num_noisy: int, num_clean: int) -> float | None:
    """Eval-mode accuracy on the labels the model is fitted to: the noisy and clean views pooled,
    weighted by their sizes (as genlab.studies.random_labels.fitted_acc computes it)."""
    parts = [
        (record.get(f"train_{s}_acc"), n) for s, n in (("noisy", num_noisy), ("clean", num_clean))
    ]
    if any(acc is None for acc, n in parts if n):
        return None
    return sum(acc * n for acc, n in parts if n) / max(num_noisy + num_clean, 1)


CURVES = (  # (what, colour, label, line style) in a sweep's curves
    ("fitted", SUBSET_COLORS["train"], "train, fitted labels", "-"),
    ("train_true_acc", SUBSET_COLORS["train_true"], SUBSET_LABELS["train_true"], "--"),
    ("test_acc", SUBSET_COLORS["test"], SUBSET_LABELS["test"], "-"),
)


def _curves(run_dir: Path) -> list[dict[str, Any]]:
    """The member's records with its pooled fitted-label accuracy added as "fitted"."""
    dataset = read_json(run_dir / DATASET)
    noisy, clean = dataset.get("num_noisy", 0), dataset.get("num_clean", 0)
    return [{**r, "fitted": fitted_acc(r, noisy, clean)} for r in read_metrics(run_dir)]


def plot_sweep(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """sweep_curves[_SETTING].png (one per setting of all but p) into ``sweep_dir/figures``; the
    report sweep adds its grid figures (curves per width, time_to_fit.png)."""
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / FIGURES
    by_rest: dict[str, list[Group]] = defaultdict(list)  # one figure per setting of all but p
    for g in group_runs([d for d in map(Path, run_dirs) if (d / DATASET).exists()]):
        by_rest[setting_label({k: v for k, v in g.settings.items() if k != "label_noise"})].append(
            g
        )
    files = []
    for rest, groups in by_rest.items():
        fig = curves_figure(groups, rest)
        if fig is not None:
            suffix = (
                "" if len(by_rest) == 1 else "_" + re.sub(r"[^\w.-]+", "_", rest.replace("=", ""))
            )
            files.append(save(fig, out / f"sweep_curves{suffix}.png"))
    if read_sweep(sweep_dir).get("name") == "report":
        files += plot_grid(run_dirs, out)
    return files


def curves_figure(groups: list[Group], title: str) -> Any | None:
    """One panel per label noise p: fitted-label, true-label and test accuracy per epoch, the
    mean over each group's seeds with a 95% band. None before any epoch."""
    plt = pyplot()
    curves = [(g, [m for m in map(_curves, g.run_dirs) if m]) for g in groups]
    curves = [(g, runs) for g, runs in curves if runs]
    if not curves:
        return None
    curves.sort(key=lambda gr: _p(gr[0]))
    ncols = min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows), squeeze=False, sharey=True
    )
    for ax, (group, runs) in zip(axes.flat, curves, strict=False):
        drawn = {key: by_epoch(runs, lambda r, k=key: r.get(k)) for key, *_ in CURVES}
        same = _same(drawn["fitted"], drawn["train_true_acc"])  # no label changed: one curve
        for key, c, label, ls in CURVES:
            if same and key == "train_true_acc":
                continue
            if same and key == "fitted":
                label = "train, fitted labels = true labels (none changed)"
            band(ax, *drawn[key], c, label, ls=ls)
        p = _p(group)
        ax.set(xlabel="epoch", ylim=(0, 1.02), title="" if p is None else f"label noise p = {p}")
        ax.grid(alpha=0.3)
        integer_ticks(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (fraction correct)")
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    shared = _describe(curves[0][0].run_dirs[0])
    fig.suptitle(
        f"{shared}{'' if title == 'all members' else '; ' + title}\n{BAND_NOTE}", fontsize=9
    )
    fig.tight_layout()
    legend_below(fig, ncol=2)
    return fig


def _same(a: tuple[list[int], list[list[Any]]], b: tuple[list[int], list[list[Any]]]) -> bool:
    """Whether two ``by_epoch`` results are one curve (equal up to rounding, None alike)."""
    (xa, rows_a), (xb, rows_b) = a, b
    if xa != xb or [len(r) for r in rows_a] != [len(r) for r in rows_b]:
        return False
    cells = [
        (u, v) for ra, rb in zip(rows_a, rows_b, strict=True) for u, v in zip(ra, rb, strict=True)
    ]
    return all(u is v is None or (None not in (u, v) and math.isclose(u, v)) for u, v in cells)


def _describe(run_dir: Path) -> str:
    """What every member of a figure shares: model, optimizer, data."""
    cfg, dataset = read_json(run_dir / CONFIG)["config"], read_json(run_dir / DATASET)
    return (
        f"Conv-4 width {cfg.get('width')}, {cfg.get('optimizer')} lr {cfg.get('lr')} on "
        f"{Path(str(dataset.get('name'))).name} ({dataset.get('num_train', '?'):,} images); "
        f"{_test_note(dataset)}"
    )


def _p(group: Group) -> float | None:
    if "label_noise" in group.settings:
        return group.settings["label_noise"]
    return read_json(group.run_dirs[0] / CONFIG)["config"].get("label_noise")


# -- the report sweep: today's grid figures -------------------------------------------------------
def _load(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).exists() else {}
    return {
        "cfg": read_json(run_dir / CONFIG)["config"],
        "dataset": read_json(run_dir / DATASET),
        "metrics": read_metrics(run_dir),
        "summary": summary,
    }


def plot_grid(run_dirs: list[Path], out: Path) -> list[Path]:
    """Per width: train loss, test loss, train accuracy, test accuracy per epoch, one line per
    run; then time to fit against p, one line per width."""
    plt = pyplot()
    runs = [
        r
        for r in map(_load, [d for d in map(Path, run_dirs) if (d / DATASET).exists()])
        if r["metrics"]
    ]
    by_width: dict[tuple, list[dict[str, Any]]] = defaultdict(list)  # per width (and optimizer)
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
        g = group[0]
        params, note = g["summary"].get("params"), regime_note(g["summary"])
        fig.suptitle(
            f"Conv-4 width {width}"
            + (f" ({params:,} parameters)" if params and not note else "")
            + f", {g['cfg']['optimizer']} lr {g['cfg']['lr']} on {Path(str(g['dataset']['name'])).name} "
            f"({g['dataset']['num_train']:,} images); {_test_note(g['dataset'])}"
            + (f"\n{note}" if note else ""),
            fontsize=9,
        )
        fig.tight_layout()
        legend_below(fig, ncol=5)  # one entry per p, not per seed
        files.append(save(fig, Path(out) / f"curves_w{width}_{opt}_lr{lr}.png"))

    done = [r for r in runs if r["summary"]]
    if done:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for k, ((width, opt, lr), group) in enumerate(sorted(by_width.items())):
            pts = sorted(
                (r["cfg"]["label_noise"], r["summary"]["time_to_fit"], r["summary"]["epochs"])
                for r in group
                if r["summary"]
            )
            fit = [(p, t) for p, t, _ in pts if t is not None]
            never = [(p, e) for p, t, e in pts if t is None]
            if fit:
                ax.plot(
                    *zip(*fit, strict=True),
                    color=color(k),
                    marker="o",
                    label=f"width {width}, {opt} lr {lr}",
                )
            if never:  # drawn at the epoch budget, hollow: the threshold was never reached
                ax.plot(
                    *zip(*never, strict=True),
                    color=color(k),
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
        legend_right(ax)
        files.append(save(fig, Path(out) / "time_to_fit.png"))
    return files


# -- the report: its summary sentence and its runs in one figure -----------------------------------
def _who(group: Group, groups: list[Group]) -> str:
    if len(groups) == 1:
        return _describe(group.run_dirs[0]).split(";")[0]
    return group.label.replace("label_noise=", "p = ")


def finding(run_dirs: list[Path]) -> str | None:
    """The report's sentence on these runs: per setting (e.g. per label noise p), the final
    train accuracy on the labels it was fitted to and the test accuracy (means over seeds),
    against chance; None before any run finished."""
    done = [d for d in map(Path, run_dirs) if (d / SUMMARY).exists()]
    groups = sorted(group_runs(done), key=lambda g: _p(g) or 0.0)
    if not groups:
        return None
    parts = []
    for g in groups:
        summaries = [read_json(d / SUMMARY) for d in g.run_dirs]
        fitted = mean_of(s.get("final_train_fitted_acc") for s in summaries)
        test = mean_of(s["final_acc"].get("test") for s in summaries)
        seeds = f" (mean of {len(summaries)} seeds)" if len(summaries) > 1 else ""
        parts.append(
            f"{_who(g, groups)}: train accuracy {fitted:.2f} on its training labels, "
            f"test {test:.2f}{seeds}"
        )
    chance = 1 / len(read_json(done[0] / DATASET)["classes"])
    return clauses([*parts, f"chance is {chance:.2f}"], most=len(parts) + 1)


def compare(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """random_labels_fitted.png in ``out_dir``: train accuracy on the fitted labels per epoch of
    every setting among the runs (mean over seeds, 95% band), when there are two or more."""
    groups = sorted(
        group_runs([d for d in map(Path, run_dirs) if (d / DATASET).exists()]),
        key=lambda g: _p(g) or 0.0,
    )
    curves = [(g, [c for c in map(_curves, g.run_dirs) if c]) for g in groups]
    curves = [(g, runs) for g, runs in curves if runs]
    if len(curves) < 2:
        return []
    only_p = all(set(g.settings) == {"label_noise"} for g, _ in curves)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (g, runs) in enumerate(curves):
        c = _noise_color(_p(g) or 0.0) if only_p else color(k)
        band(ax, *by_epoch(runs, lambda r: r.get("fitted")), c, _who(g, groups))
    ax.set(xlabel="epoch", ylabel="train accuracy, fitted labels", ylim=(0, 1.02))
    ax.set_title(f"Fitting the training labels ({BAND_NOTE})", fontsize=9)
    ax.grid(alpha=0.3)
    integer_ticks(ax)
    legend_right(ax)
    return [save(fig, Path(out_dir) / "random_labels_fitted.png")]
