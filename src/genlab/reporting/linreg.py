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
from genlab.reporting.plotting import OKABE_ITO, pyplot, read_metrics, save
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
    title = f"{summary['data']} design, n={summary['n']}, p={summary['p']} (gamma={summary['gamma']:.3g})"
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
        label=f"nonzero eigenvalues of X^T X / n ({eig.size})",
    )
    grid = np.linspace(max(lo, 1e-9), hi, 400)
    mass = lin.mp_mass(gamma)
    ax.plot(
        grid,
        lin.mp_density(grid, gamma) / mass,
        color=COLORS["theory"],
        lw=2,
        label=f"Marchenko-Pastur, gamma={gamma:.3g} (continuous part / {mass:.3g})",
    )
    zeros = summary["p"] - summary["rank"]
    note = f"KS distance {summary['ks_marchenko_pastur']:.4f}"
    if zeros:
        note += f"\n{zeros} zero eigenvalues (mass {zeros / summary['p']:.3g}; MP: {max(0.0, 1 - 1 / gamma):.3g})"
    ax.text(0.97, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.set(
        xlabel="eigenvalue",
        ylabel="density (nonzero part, area 1)",
        title=f"Spectrum of X^T X / n\n{title}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    return save(fig, out / "spectrum.png")


def plot_curves(run_dir: Path, summary: dict[str, Any], title: str, out: Path) -> Path | None:
    plt = pyplot()
    metrics = read_metrics(run_dir)
    if not metrics:
        return None
    epochs = np.array([m["epoch"] for m in metrics])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    fig.subplots_adjust(wspace=0.32)
    panels = [
        ("train_mse", "train MSE", summary["train_mse_min_norm"], "min-norm X^+ y"),
        ("dist_to_min_norm", "|b_t - b_min-norm|", None, None),
        ("norm", "|b_t|", summary["min_norm"], "|X^+ y|"),
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
        ax.legend(fontsize=7)
    fig.suptitle(
        f"GD and SGD from zero (lambda_min+ = {summary['lambda_min_nonzero']:.3g}, "
        f"cond on the row space {summary['cond_nonnull']:.1f})\n{title}",
        fontsize=9,
    )
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
        xlabel="lambda (ridge penalty on |b|^2, loss |Xb - y|^2 / n)",
        ylabel="test MSE",
        title=f"Ridge path: ridge -> min-norm as lambda -> 0\n{title}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
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
        label=f"min-norm, measured (mean +- std over {sweep['seeds']} seeds)",
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
        xlabel="gamma = p / n",
        ylabel="test MSE (expected, fresh test point)",
        title=f"Double descent of min-norm least squares: n={sweep['n']}, r={sweep['r']}, sigma={sweep['sigma']}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, out / "double_descent.png")
