"""Figures and key numbers of the linreg study, drawn from its run folders: the spectrum of X^T X / n against
Marchenko-Pastur, GD/SGD curves on a log scale, the ridge path, and the double-descent curve.

Colours (Okabe-Ito, as every genlab figure): SGD blue, GD vermilion, min-norm black, theory
green, ridge orange, empirical spectrum sky blue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genlab.fileio import read_json
from genlab.models import linear as lin
from genlab.reporting.plotting import (
    OKABE_ITO,
    SMALL_PT,
    clauses,
    group_runs,
    legend_below,
    legend_right,
    pyplot,
    read_metrics,
    save,
)
from genlab.runs import ARRAYS, CONFIG, DOUBLE_DESCENT, FIGURES, RIDGE, SUMMARY, SWEEP

TITLE = "Over-parametrized linear regression"
KEY_NUMBERS: list[tuple[str, str]] = [  # (column heading, dotted key into summary.json)
    ("n", "n"),
    ("p", "p"),
    ("rank", "rank"),
    ("test MSE (min-norm)", "test_mse_min_norm"),
    ("test MSE (theory)", "test_mse_theory"),
    ("SGD train MSE", "sgd_final_train_mse"),
    ("|b_SGD - b_min-norm|", "sgd_final_dist_to_min_norm"),
    ("KS to Marchenko-Pastur", "ks_marchenko_pastur"),
    ("seconds", "seconds"),
]
MIN_NORM = r"min-norm solution $\hat\beta = X^+y$"  # the dashed reference in sgd_curves.png
COLORS = {
    "sgd": OKABE_ITO[0],
    "gd": OKABE_ITO[1],
    "min_norm": OKABE_ITO[7],
    "theory": OKABE_ITO[2],
    "ridge": OKABE_ITO[3],
    "spectrum": OKABE_ITO[5],
}


def plot_run(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).exists():
        return []
    summary = read_json(run_dir / SUMMARY)
    cfg = read_json(run_dir / CONFIG)["config"]
    out = run_dir / FIGURES
    title = (
        f"{summary['data']} design, $n$ = {summary['n']}, $p$ = {summary['p']} "
        f"($\\gamma = p/n$ = {summary['gamma']:.3g})"
    )
    files = [plot_spectrum(run_dir, summary, title, out), plot_curves(run_dir, summary, title, out)]
    if (run_dir / RIDGE).exists():
        files.append(plot_ridge(read_json(run_dir / RIDGE), summary, title, out))
    for name in (DOUBLE_DESCENT, SWEEP):  # runs written before double_descent.json: sweep.json
        if (run_dir / name).exists():
            files.append(plot_double_descent(read_json(run_dir / name), cfg, out))
            break
    return [f for f in files if f is not None]


def plot_sweep(sweep_dir: Path, run_dirs: list[Path]) -> list[Path]:
    """None: a run already sweeps gamma = p / n over seeds itself (``--sweep-p``, its
    double-descent figure), and the report's aggregated table carries the numbers over seeds."""
    return []


def plot_spectrum(run_dir: Path, summary: dict[str, Any], title: str, out: Path) -> Path:
    plt = pyplot()
    with np.load(run_dir / ARRAYS) as arrays:
        eig = arrays["eigenvalues"]  # (rank,) nonzero eigenvalues of X^T X / n
    gamma = summary["gamma"]
    lo, hi = lin.mp_edges(gamma)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.hist(
        eig,
        bins=min(60, max(10, eig.size // 10)),
        density=True,
        color=COLORS["spectrum"],
        alpha=0.7,
        label=f"nonzero eigenvalues of $X^\\top X/n$ ({eig.size})",
    )
    grid = np.linspace(max(lo, 1e-9), hi, 400)
    mass = lin.mp_mass(gamma)
    ax.plot(
        grid,
        lin.mp_density(grid, gamma) / mass,
        color=COLORS["theory"],
        lw=2,
        label=f"Marchenko–Pastur, $\\gamma$ = {gamma:.3g} (continuous part / {mass:.3g})",
    )
    zeros = summary["p"] - summary["rank"]
    note = f"KS distance {summary['ks_marchenko_pastur']:.4f}"
    if zeros:
        note += f"\n{zeros} zero eigenvalues (mass {zeros / summary['p']:.3g}; MP: {max(0.0, 1 - 1 / gamma):.3g})"
    ax.set(
        xlabel="eigenvalue",
        ylabel="density (nonzero part, area 1)",
        title=f"Spectrum of $X^\\top X/n$\n{title}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    # the note heads the legend, beside the axes: nothing is written over the histogram
    legend_right(ax, title=note, title_fontsize=SMALL_PT, alignment="left")
    return save(fig, out / "spectrum.png")


def plot_curves(run_dir: Path, summary: dict[str, Any], title: str, out: Path) -> Path | None:
    plt = pyplot()
    metrics = read_metrics(run_dir)
    if not metrics:
        return None
    epochs = np.array([m["epoch"] for m in metrics])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    panels = [
        ("train_mse", "train MSE", summary["train_mse_min_norm"], MIN_NORM),
        ("dist_to_min_norm", r"$\|\beta_t - \hat\beta\|$", None, None),
        ("norm", r"$\|\beta_t\|$", summary["min_norm"], MIN_NORM),
    ]
    for ax, (key, label, ref, ref_label) in zip(axes, panels, strict=True):
        for name in ("sgd", "gd"):
            lr = summary[f"{name}_lr"]
            tag = f"SGD, batch {summary['batch_size']}" if name == "sgd" else "GD"
            ax.plot(
                epochs,
                _positive(metrics, f"{name}_{key}"),
                color=COLORS[name],
                label=f"{tag}, step {lr:.3g}",
            )
        if key == "dist_to_min_norm":
            ax.plot(
                epochs,
                _positive(metrics, "sgd_outside_row_space"),
                color=COLORS["sgd"],
                ls=":",
                label="SGD: part outside the row space",
            )
        if ref is not None and ref > 0:
            ax.axhline(ref, color=COLORS["min_norm"], ls="--", lw=1, label=ref_label)
        ax.set(xlabel="epoch", ylabel=label, yscale="log")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"GD and SGD from zero ($\\lambda_{{\\min}}^{{+}}$ = {summary['lambda_min_nonzero']:.3g}, "
        f"cond on the row space {summary['cond_nonnull']:.1f})\n{title}",
        fontsize=9,
    )
    fig.tight_layout()
    legend_below(fig, ncol=4)
    return save(fig, out / "sgd_curves.png")


def _positive(metrics: list[dict[str, Any]], key: str) -> np.ndarray:
    """The column as floats, with None and zeros (epoch 0 from zero) left off the log axis."""
    values = np.array([np.nan if m[key] is None else m[key] for m in metrics], dtype=np.float64)
    values[values <= 0] = np.nan
    return values


def plot_ridge(ridge: dict[str, Any], summary: dict[str, Any], title: str, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(
        ridge["lambda"],
        ridge["test_mse"],
        color=COLORS["ridge"],
        marker="o",
        ms=3,
        label="ridge, test MSE",
    )
    ax.axhline(
        summary["test_mse_min_norm"],
        color=COLORS["min_norm"],
        ls="--",
        lw=1,
        label="min-norm, test MSE",
    )
    if summary.get("test_mse_theory") is not None:
        ax.axhline(
            summary["test_mse_theory"],
            color=COLORS["theory"],
            ls=":",
            lw=1.5,
            label="min-norm, theory",
        )
    ax.set(
        xscale="log",
        xlabel=r"$\lambda$ (ridge loss $\|X\beta - y\|^2/n + \lambda\|\beta\|^2$)",
        ylabel="test MSE",
        title=f"Ridge path: ridge → min-norm as $\\lambda \\to 0$\n{title}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    legend_below(fig, ncol=3)
    return save(fig, out / "ridge_path.png")


def plot_double_descent(sweep: dict[str, Any], cfg: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    gamma = np.array(sweep["gamma"])
    mean, std = np.array(sweep["test_mse_mean"]), np.array(sweep["test_mse_std"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar(
        gamma,
        mean,
        yerr=std,
        color=COLORS["min_norm"],
        marker="o",
        ms=3,
        capsize=2,
        lw=1,
        label=f"min-norm, measured (mean ± std over {sweep['seeds']} seeds)",
    )
    fine = np.geomspace(gamma.min(), gamma.max(), 800)
    fine = fine[np.abs(fine - 1) > 1e-3]
    theory = np.array([lin.theory_test_mse(g, sweep["r"], sweep["sigma"]) for g in fine])
    below = fine < 1
    ax.plot(
        fine[below],
        theory[below],
        color=COLORS["theory"],
        lw=2,
        label="theory (Hastie et al. 2019)",
    )
    ax.plot(fine[~below], theory[~below], color=COLORS["theory"], lw=2)
    ax.axvline(1, color="#999999", ls=":", lw=1)
    top = max(float(np.nanmax(mean + std)), 4 * (sweep["sigma"] ** 2 + sweep["r"] ** 2))
    ax.set(
        xscale="log",
        yscale="log",
        ylim=(0.8 * sweep["sigma"] ** 2 if sweep["sigma"] > 0 else None, top),
        xlabel=r"$\gamma = p/n$",
        ylabel="test MSE (expected, fresh test point)",
        title=f"Double descent of min-norm least squares: $n$ = {sweep['n']}, "
        f"$r$ = {sweep['r']}, $\\sigma$ = {sweep['sigma']}",
    )
    if np.nanmax(theory) > top:  # the theory's peak (infinite at gamma = 1) is cut at the top
        ax.plot(1, top, marker="^", color=COLORS["theory"], ms=7, clip_on=False, zorder=5)
        ax.annotate(
            f"theory clipped at {top:.3g} (→ ∞ as $\\gamma \\to 1$)",
            xy=(1, top),
            xytext=(0.03, 0.96),  # the empty top left: the curve is low there
            textcoords="axes fraction",
            ha="left",
            va="top",
            fontsize=SMALL_PT,
            color=COLORS["theory"],
            arrowprops={"arrowstyle": "->", "color": COLORS["theory"], "lw": 0.8},
        )
    _plain_log_ticks(ax)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    legend_below(fig, ncol=1)
    return save(fig, out / "double_descent.png")


# -- the report: its summary sentence and its runs in one figure -----------------------------------
def finding(run_dirs: list[Path]) -> str | None:
    """The report's sentence on these runs: per run its γ = p/n, the min-norm solution's test
    risk against Hastie et al.'s, how close SGD from zero came to it, and where its
    double-descent sweep peaked; None before any run finished."""
    parts = []
    for run_dir in (d for d in map(Path, run_dirs) if (d / SUMMARY).exists()):
        s = read_json(run_dir / SUMMARY)
        part = (
            f"γ = p/n = {s['gamma']:.3g} (n = {s['n']:,}): the min-norm solution X⁺y has test "
            f"MSE {s['test_mse_min_norm']:.3g} (theory {s['test_mse_theory']:.3g}), and SGD "
            f"from zero ends {s['sgd_final_dist_to_min_norm']:.2g} from it"
        )
        if s.get("sweep"):
            peak = max(s["sweep"], key=lambda row: row["test_mse_mean"])
            part += (
                "; its double-descent sweep is highest at the grid point nearest the "
                f"interpolation threshold γ = 1 (γ = {peak['gamma']:.3g}: test MSE "
                f"{peak['test_mse_mean']:.3g}, theory {peak['test_mse_theory']:.3g})"
            )
        parts.append(part)
    return clauses(parts, most=3)


def compare(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """linreg_double_descent.png in ``out_dir``: the double-descent sweeps of two or more runs
    (measured test MSE of the min-norm solution against γ) on one pair of axes."""
    runs = [Path(d) for d in run_dirs if (Path(d) / DOUBLE_DESCENT).exists()]
    if len(runs) < 2:
        return []
    labels = {g.run_dirs[0]: g.label for g in group_runs(runs)}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, run_dir in enumerate(runs):
        sweep = read_json(run_dir / DOUBLE_DESCENT)
        ax.plot(
            sweep["gamma"],
            sweep["test_mse_mean"],
            color=OKABE_ITO[k % len(OKABE_ITO)],
            marker="o",
            ms=3,
            label=labels.get(run_dir, run_dir.name),
        )
    ax.axvline(1.0, color="0.6", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel=r"$\gamma = p/n$", ylabel="test MSE (min-norm)")
    _plain_log_ticks(ax)
    ax.set_title("Double descent of each run (mean over its seeds)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    legend_right(ax)
    return [save(fig, Path(out_dir) / "linreg_double_descent.png")]


def _plain_log_ticks(ax: Any) -> None:
    """Tick labels on a log y axis as plain numbers (2, 3, 6), not as 6×10⁰."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
