"""Study 3 — over-parametrized linear regression: which of the infinitely many solutions do the
pseudo-inverse and SGD pick when p > n, and how well does it predict?

With more features than samples (n = 500, p = 1000) X^T X is singular (rank 500 < 1000), the
normal equations X^T X b = X^T y have a 500-dimensional affine space of solutions, and every one
of them is the minimum-norm solution X^+ y plus a null-space vector. Expect: X^+ y interpolates
(train MSE ~1e-28 in float64) and equals lstsq's; GD and SGD from zero stay in the row space of
X and converge to it, at a speed set by the smallest nonzero eigenvalue of X^T X / n; the
spectrum of X^T X / n follows Marchenko-Pastur with gamma = p / n; the measured test MSE sits
near the Hastie et al. (2019) theory (2.5 at gamma = 2, r = sigma = 1); and sweeping p draws the
double-descent curve, peaked at p = n.

Per-sample SGD with a constant step converges to X^+ y only where X^+ y fits every sample (p >= n,
or no noise): there every per-sample gradient vanishes. With residuals (p < n and sigma > 0) it
settles in a noise ball around X^+ y instead (measured at n = 500, p = 250, step 0.001: mean
|b - X^+ y| 0.060 over epochs 150-300 at sigma = 1, 0.030 at sigma = 0.5). The printed explanation
says which of these the run did, from its own numbers (``_explain``).

    genlab run linreg                          # n=500, p=1000, 1,000 epochs of per-sample SGD
    genlab run linreg --sweep-p                # plus test MSE against gamma = p/n, with theory
    genlab run linreg --lr auto --batch-size 50
    genlab run linreg --data mydata.npz        # X_train, y_train, X_test, y_test (or a folder);
                                               # n, p and n_test are the file's

Cost on a 2-core CPU shared with other jobs (benchmarks/bench_linreg.py, medians of 3 in two
sessions): the default study 8-12 s, figures included (SVD, ridge path, 1,000 GD steps, 500,000
per-sample SGD updates at ~3 us each, the scikit-learn cross-check); with ``--sweep-p`` 21-22 s
(32 values of p x 10 seeds).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from genlab import seeding
from genlab.config import check_fields, flag, option
from genlab.data.linear import LinearData, gaussian_design, load_linear
from genlab.errors import GenlabError
from genlab.fileio import atomic_write
from genlab.models import linear as lin
from genlab.runs import ARRAYS, DATASET, DOUBLE_DESCENT, METRICS, RIDGE, Run
from genlab.studies.common import run_each
from genlab.training.engine import LogFn
from genlab.training.runtime import Runtime

RIDGE_LAMBDAS = np.logspace(-8, 2, 41)
CURVES = ("train_mse", "test_mse", "norm", "dist_to_min_norm", "outside_row_space")
# What the explanation calls what it measured (``_sgd_outcome``, ``_compare_rates``):
INTERPOLATES = 1e-20  # train MSE of X^+ y / mean(y^2) at or below: rounding, it fits every sample
CONVERGED = 1e-8  # |b_SGD - X^+ y| / |X^+ y| at or below: converged (rounding is ~1e-13)
RATE_TOLERANCE = 0.1  # per-epoch log-rates within 10% of the prediction: "agrees"


@dataclass(frozen=True)
class Config:
    # With --data the file sets n, p and n_test: the config records its shape (see __post_init__).
    n: int = option(500, "training samples of the Gaussian design (with --data: the file's)")
    p: int = option(1000, "features of the Gaussian design (with --data: the file's)")
    n_test: int = option(10000, "test samples of the Gaussian design (with --data: the file's)")
    rank: int | None = option(None, "force a design of rank R (n x R times R x p Gaussian factors)")
    r: float = option(1.0, "norm of the true coefficients, ||beta*||")
    sigma: float = option(1.0, "standard deviation of the label noise")
    data: str | None = option(
        None,
        "your data instead: FILE.npz or a folder of .npy/.csv X_train, y_train, X_test, y_test",
    )
    epochs: int = option(1000, "GD and SGD epochs")
    batch_size: int = option(1, "SGD mini-batch size (1: per-sample updates)")
    lr: str = option(
        "0.001", "constant step size, or auto: 1/lambda_max for GD, 1/L_b for SGD (README)"
    )
    sklearn_check: bool = option(True, "cross-check SGD with scikit-learn's SGDRegressor")
    sweep_p: bool = option(
        False, "also sweep p from n/10 to 10n: the double-descent curve with theory"
    )
    sweep_points: int = option(32, "values of p in the sweep, log-spaced (p = n skipped)")
    sweep_seeds: int = option(10, "seeds per value of p in the sweep")
    seed: int = option(0, "seed for the design, the SGD order and every random choice of the run")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("n", "p", "n_test", "epochs", "batch_size", "sweep_points", "sweep_seeds"):
            if getattr(self, name) < 1:
                raise GenlabError(f"{flag(name)} {getattr(self, name)}: must be >= 1")
        for name in ("r", "sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise GenlabError(f"{flag(name)} {value}: must be a finite number >= 0")
        if self.lr != "auto":
            try:
                value = float(self.lr)
            except ValueError:
                raise GenlabError(
                    f"--lr {self.lr!r}: must be a positive number or 'auto'"
                ) from None
            if not (math.isfinite(value) and value > 0):
                raise GenlabError(f"--lr {self.lr}: must be a positive number or 'auto'")
            object.__setattr__(self, "lr", repr(value))  # "1e-3" and "0.001": one run, one folder
        if self.data is not None and self.rank is not None:
            raise GenlabError(
                "--rank: shapes the Gaussian design only; it cannot be used with --data"
            )
        if self.sweep_p and (self.data is not None or self.rank is not None):
            raise GenlabError("--sweep-p: sweeps the full-rank Gaussian design; drop --data/--rank")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        if self.data is not None and any(getattr(self, k) == defaults[k] for k in SIZES):
            self._take_shape_from_data(defaults)  # not when rebuilt from its config.json
        if self.rank is not None and not 1 <= self.rank <= min(self.n, self.p):
            raise GenlabError(
                f"--rank {self.rank}: must be between 1 and min(n, p) = {min(self.n, self.p)}"
            )

    def _take_shape_from_data(self, defaults: dict[str, Any]) -> None:
        """Record the file's n, p and n_test, so config.json and the folder name say what was
        fitted. A size left at its default (or preset) value is replaced; one that differs from
        both the default and the file is refused: the file, not the flag, sets it. (The config
        cannot tell ``--n 500`` typed by hand from the default 500; that one is replaced.) A
        config with no size at its default (one rebuilt from config.json) reads no file: the
        run checks the file against it when it loads it (``check_shape``)."""
        data = load_linear(self.data)  # one-line GenlabErrors for a missing or bad file
        for name, size in zip(SIZES, shape_of(data), strict=True):
            given = getattr(self, name)
            if given not in (size, defaults[name]):
                raise _set_by_the_file(name, given, self.data, size)
            object.__setattr__(self, name, int(size))


SIZES = ("n", "p", "n_test")  # set by the file with --data


def shape_of(data: LinearData) -> tuple[int, int, int]:
    return data.n, data.p, data.x_test.shape[0]


def check_shape(cfg: Config, data: LinearData) -> None:
    """The file of ``--data`` still has the shape the run's config records."""
    for name, size in zip(SIZES, shape_of(data), strict=True):
        if getattr(cfg, name) != size:
            raise _set_by_the_file(name, getattr(cfg, name), cfg.data, size)


def _set_by_the_file(name: str, given: int, data: str | None, size: int) -> GenlabError:
    return GenlabError(
        f"{flag(name)} {given}: --data {data} sets it ({name} = {size} there); drop {flag(name)}"
    )


PRESETS: dict[str, dict[str, Any]] = {
    # The original report: n = 500, p = 1000 (so rank 500), per-sample SGD from zero with the
    # constant step 0.001 (about 1 / max_i ||x_i||^2 here) for 1,000 epochs.
    "report": {
        "n": 500,
        "p": 1000,
        "rank": None,
        "r": 1.0,
        "sigma": 1.0,
        "epochs": 1000,
        "batch_size": 1,
        "lr": "0.001",
    },
}
RUN_ID_KEYS = ("n", "p", "epochs", "seed")


def run(members: list[tuple[Config, Run]], rt: Runtime) -> list[dict[str, Any]]:
    """Each member in turn, on one BLAS thread. Measured on the 2-core machine shared with other jobs:
    the SVD of a 500 x 1000 X took 0.1-0.2 s on one OpenBLAS thread and 0.5-14 s on two, and
    1,000 GD steps (matrix-vector products) 0.9-20 s on two; threads waiting for each other on
    busy cores cost more than the second core gives. Large matrix products were equally fast."""
    from threadpoolctl import threadpool_limits

    if rt.tensorboard:  # its events are written after the training: ask for the package before
        from genlab.export import require_tensorboard

        require_tensorboard()
    with threadpool_limits(limits=1, user_api="blas"):
        return run_each(members, lambda cfg, run: _tracked(cfg, run, rt))


def _tracked(cfg: Config, run: Run, rt: Runtime) -> dict[str, Any]:
    """One member, and with ``--tensorboard`` its curves as events once they are written: its
    GD and SGD epochs (step: the epoch), the ridge path (step: the lambda's index) and the p
    sweep (step: p), as ``genlab export tensorboard`` writes them. A run restarts from scratch,
    so the events are written whole at its end, replacing those of an earlier try."""
    result = _run(cfg, run, log=rt.log)
    if rt.tensorboard:
        from genlab.export import replace_events

        replace_events(run.path)
    return result


def _run(cfg: Config, run: Run, *, log: LogFn) -> dict[str, Any]:
    start, seconds = time.perf_counter(), {}
    # Independent streams: the design, the SGD order, the null-space vector, scikit-learn.
    seeds = seeding.spawn(cfg.seed, 4)
    if cfg.data:
        data = load_linear(cfg.data)
        check_shape(cfg, data)
    else:
        rng = np.random.default_rng(seeds[0])
        data = gaussian_design(cfg.n, cfg.p, cfg.n_test, cfg.r, cfg.sigma, rng, cfg.rank)
    run.write_json(DATASET, _describe(cfg, data))
    seconds["data"] = _lap(start)

    t = time.perf_counter()
    dec = lin.decompose(data.x_train)
    if dec.rank == 0:
        raise GenlabError(f"{data.name}: X_train is all zeros; there is nothing to fit")
    beta_mn = lin.min_norm(dec, data.y_train)
    s = _exact(cfg, data, dec, beta_mn, np.random.default_rng(seeds[2]), log)
    seconds["svd_min_norm"] = _lap(t)

    t = time.perf_counter()
    s.update(_ridge(run, data, dec, beta_mn, log))
    seconds["ridge"] = _lap(t)

    trajs = _descend(cfg, run, data, dec, beta_mn, s, np.random.default_rng(seeds[1]), seconds)
    s["explanation"] = _explain(s)
    for line in s["explanation"]:
        log(line)

    if cfg.sklearn_check:
        t = time.perf_counter()
        lr = s["sgd_lr"] if s["batch_size"] == 1 else 1 / s["max_row_norm_sq"]
        seed = int(seeds[3].generate_state(1)[0] % 2**31)
        s.update(_sklearn_check(data, beta_mn, trajs["sgd"][-1], lr, cfg.epochs, seed))
        seconds["sklearn"] = _lap(t)
        log(
            f"cross-check, scikit-learn SGDRegressor (per-sample, its own shuffling, step {lr:.3g}): "
            f"train MSE {s['sklearn_train_mse']:.2e}, test MSE {s['sklearn_test_mse']:.4f}, "
            f"|b - b_min-norm| {s['sklearn_dist_to_min_norm']:.2e}"
        )

    arrays = {"beta_min_norm": beta_mn, "eigenvalues": dec.eigenvalues}
    arrays.update({f"beta_{name}": traj[-1] for name, traj in trajs.items()})
    if data.beta_star is not None:
        arrays["beta_star"] = data.beta_star
    atomic_write(run.file(ARRAYS), lambda f: np.savez(f, **arrays))

    if cfg.sweep_p:
        t = time.perf_counter()
        result = sweep(cfg, log=log)
        run.write_json(DOUBLE_DESCENT, result)
        keys = ("p", "gamma", "test_mse_mean", "test_mse_std", "test_mse_theory")
        s["sweep"] = [
            dict(zip(keys, row, strict=True))
            for row in zip(*(result[k] for k in keys), strict=True)
        ]
        seconds["sweep"] = _lap(t)
    s["seconds_by_part"] = seconds
    s["seconds"] = _lap(start)
    log(f"done in {s['seconds']:.1f} s")
    run.write_summary(s)
    return s


def _exact(
    cfg: Config,
    data: LinearData,
    dec: lin.Decomposition,
    beta_mn: np.ndarray,
    rng: np.random.Generator,
    log: LogFn,
) -> dict[str, Any]:
    """The rank, the null space, the min-norm solution against lstsq and theory, the spectrum."""
    x, y, n, p = data.x_train, data.y_train, data.n, data.p
    gamma, isotropic = p / n, cfg.data is None and cfg.rank is None
    beta_lstsq = np.linalg.lstsq(x, y, rcond=None)[0]
    eig = dec.eigenvalues  # (rank,) nonzero eigenvalues of X^T X / n, descending
    s: dict[str, Any] = {
        "n": n,
        "p": p,
        "n_test": int(data.x_test.shape[0]),
        "gamma": gamma,
        "data": data.name,
        "rank": dec.rank,
        "rank_tolerance": dec.tol,
        "rank_rule": "singular values of X above s_max * max(n, p) * eps (numpy's matrix_rank, lstsq rcond=None)",
        "xtx_singular": dec.rank < p,
        "null_space_dim": p - dec.rank,
        "lambda_max": float(eig[0]),
        "lambda_min_nonzero": float(eig[-1]),
        "cond_nonnull": float(eig[0] / eig[-1]),
        "min_norm": float(np.linalg.norm(beta_mn)),
        "min_norm_vs_lstsq": _rel(beta_mn, beta_lstsq),
        "train_mse_min_norm": float(lin.mse(x, y, beta_mn)),
        # X^+ y fits every sample up to float64 rounding (relative squared residual ~1e-30 when
        # rank = n; ~sigma^2 (1 - p/n) / (r^2 + sigma^2) for a noisy Gaussian design with p < n)
        "min_norm_interpolates": bool(
            lin.mse(x, y, beta_mn) <= INTERPOLATES * max(float(np.mean(y * y)), 1e-300)
        ),
        "test_mse_min_norm": float(lin.mse(data.x_test, data.y_test, beta_mn)),
        "min_norm_outside_row_space": float(lin.outside_row_space(dec, beta_mn)),
        "normal_equations_residual": _normal_residual(x, y, beta_mn),
        **_null_space_shift(dec, x, y, beta_mn, rng),
        "test_mse_theory": _finite(lin.theory_test_mse(gamma, cfg.r, cfg.sigma))
        if isotropic
        else None,
        "test_mse_population": (
            float(np.sum((beta_mn - data.beta_star) ** 2) + cfg.sigma**2) if isotropic else None
        ),
        "ks_marchenko_pastur": lin.ks_marchenko_pastur(eig, gamma),
        "marchenko_pastur_applies": isotropic,
    }
    log(f"{data.name} design: n={n}, p={p} (gamma={gamma:.3g}), {s['n_test']} test samples")
    log(
        f"rank(X) = {dec.rank} (singular values > {dec.tol:.2e}); X^T X is {p}x{p} and "
        + (
            f"singular: its null space has dimension {p - dec.rank}"
            if s["xtx_singular"]
            else "invertible"
        )
    )
    if s["null_space_dim"]:
        log(
            "normal equations X^T X b = X^T y: every solution is X^+ y plus a null-space vector; "
            f"X^+ y + z (z in the null space, |z| = 1) leaves the residual at {s['shifted_normal_equations_residual']:.1e} "
            f"(vs {s['normal_equations_residual']:.1e}) and raises |b|^2 by {s['shifted_norm_sq_increase']:.6f}"
        )
    log(
        f"min-norm X^+ y: |b| = {s['min_norm']:.4f}, train MSE {s['train_mse_min_norm']:.2e}, test MSE "
        f"{s['test_mse_min_norm']:.4f}"
        + (f" (theory {s['test_mse_theory']:.4f})" if s["test_mse_theory"] else "")
        + f"; relative difference from lstsq {s['min_norm_vs_lstsq']:.1e}"
    )
    log(
        f"spectrum of X^T X / n: lambda_max {s['lambda_max']:.4f}, lambda_min+ {s['lambda_min_nonzero']:.4f}, "
        f"condition number on the row space {s['cond_nonnull']:.1f}; Kolmogorov-Smirnov distance to "
        f"Marchenko-Pastur {s['ks_marchenko_pastur']:.4f}"
    )
    return s


def _ridge(
    run: Run, data: LinearData, dec: lin.Decomposition, beta_mn: np.ndarray, log: LogFn
) -> dict[str, Any]:
    """Test MSE along a log grid of lambda (ridge.json): ridge -> min-norm as lambda -> 0."""
    betas = lin.ridge_path(dec, data.y_train, RIDGE_LAMBDAS)  # (L, p)
    ridge = {
        "lambda": RIDGE_LAMBDAS.tolist(),
        "train_mse": lin.mse(data.x_train, data.y_train, betas).tolist(),
        "test_mse": lin.mse(data.x_test, data.y_test, betas).tolist(),
        "norm": np.linalg.norm(betas, axis=1).tolist(),
        "dist_to_min_norm": np.linalg.norm(betas - beta_mn, axis=1).tolist(),
    }
    run.write_json(RIDGE, ridge)
    best = int(np.argmin(ridge["test_mse"]))
    log(
        f"ridge: best test MSE {ridge['test_mse'][best]:.4f} at lambda {ridge['lambda'][best]:.2g}; "
        f"at lambda {RIDGE_LAMBDAS[0]:.0e}, |b_ridge - b_min-norm| = {ridge['dist_to_min_norm'][0]:.1e}"
    )
    return {
        "ridge_best_lambda": ridge["lambda"][best],
        "ridge_best_test_mse": ridge["test_mse"][best],
        "ridge_smallest_lambda": ridge["lambda"][0],
        "ridge_smallest_lambda_dist_to_min_norm": ridge["dist_to_min_norm"][0],
    }


def _descend(
    cfg: Config,
    run: Run,
    data: LinearData,
    dec: lin.Decomposition,
    beta_mn: np.ndarray,
    s: dict[str, Any],
    rng: np.random.Generator,
    seconds: dict[str, float],
) -> dict[str, np.ndarray]:
    """GD and SGD from zero: trajectories, per-epoch curves (metrics.jsonl), and what the spectrum
    predicts for their speed next to what they did (added to ``s``)."""
    x, y, n = data.x_train, data.y_train, data.n
    eig = dec.eigenvalues
    lam_max, lam_min = s["lambda_max"], s["lambda_min_nonzero"]
    batch = min(cfg.batch_size, n)
    row_sq_max = float(np.max(np.einsum("ij,ij->i", x, x)))
    if cfg.lr == "auto":
        lrs = {"gd": 1 / lam_max, "sgd": 1 / lin.sgd_smoothness(lam_max, row_sq_max, n, batch)}
        rule = "auto: GD 1/lambda_max(X^T X/n); SGD 1/L_b, L_b = n(b-1)/(b(n-1)) lambda_max + (n-b)/(b(n-1)) max_i |x_i|^2"
    else:
        lrs = {"gd": float(cfg.lr), "sgd": float(cfg.lr)}
        rule = "constant, given by --lr"
    steps = {"gd": 1, "sgd": math.ceil(n / batch)}
    with np.errstate(over="ignore", invalid="ignore"):
        t = time.perf_counter()
        trajs = {"gd": lin.gd(x, y, lrs["gd"], cfg.epochs)}
        seconds["gd"] = _lap(t)
        t = time.perf_counter()
        trajs["sgd"] = lin.sgd(x, y, lrs["sgd"], cfg.epochs, batch, rng)
        seconds["sgd"] = _lap(t)
        t = time.perf_counter()
        curves = {name: _curves(dec, data, beta_mn, traj) for name, traj in trajs.items()}
        seconds["curves"] = _lap(t)
    for name, traj in trajs.items():
        if not np.all(np.isfinite(traj[-1])):
            limit = (
                f"2 / lambda_max = {2 / lam_max:.3g}"
                if name == "gd"
                else f"about 2 / max_i |x_i|^2 = {2 / row_sq_max:.3g}"
            )
            raise GenlabError(
                f"--lr {cfg.lr}: {name.upper()} diverged with step {lrs[name]:.3g} (stable below {limit}); try --lr auto"
            )
    _write_curves(run, curves)

    s.update(
        {
            "lr_rule": rule,
            "gd_lr": lrs["gd"],
            "sgd_lr": lrs["sgd"],
            "batch_size": batch,
            "epochs": cfg.epochs,
            "sgd_steps_per_epoch": steps["sgd"],
            "max_row_norm_sq": row_sq_max,
        }
    )
    v_min = dec.vt[-1]  # the slowest direction: the eigenvector of lambda_min+
    for name, traj in trajs.items():
        c, lr = curves[name], lrs[name]
        slow = np.abs((traj - beta_mn) @ v_min)  # (T + 1,)
        rho = lin.predicted_contraction(lr, lam_min, steps[name])
        s.update({f"{name}_final_{key}": c[key][-1] for key in CURVES})
        s.update(
            {
                f"{name}_predicted_contraction_slowest": rho,
                f"{name}_measured_contraction_slowest": lin.measured_contraction(
                    slow, 1e-9 * slow[0]
                ),
                f"{name}_predicted_contraction_fastest": lin.predicted_contraction(
                    lr, lam_max, steps[name]
                ),
                f"{name}_slowest_remaining_fraction_predicted": rho**cfg.epochs,
                f"{name}_slowest_remaining_fraction_measured": float(slow[-1] / slow[0])
                if slow[0] > 0
                else None,
            }
        )
    # SGD over the last half of the epochs: did its distance to X^+ y keep falling as the
    # expected iterate's must (by rho^(T - h) at least), or settle? (_sgd_outcome)
    half = cfg.epochs // 2
    dist = curves["sgd"]["dist_to_min_norm"]
    rho = s["sgd_predicted_contraction_slowest"]
    s.update(
        {
            "sgd_half_epoch": half,
            "sgd_half_dist_to_min_norm": dist[half],
            "sgd_late_remaining_fraction_measured": dist[-1] / dist[half]
            if dist[half] > 0
            else None,
            "sgd_late_remaining_fraction_predicted": rho ** (cfg.epochs - half),
        }
    )
    s["sgd_outcome"] = _sgd_outcome(s)
    s["sgd_rate_vs_expected"] = _compare_rates(
        s["sgd_measured_contraction_slowest"], s["sgd_predicted_contraction_slowest"]
    )
    # GD from zero is linear: its train MSE after T steps is known in closed form (a check only):
    # sum_k lambda_k (v_k . b_mn)^2 (1 - lr lambda_k)^(2T) plus the min-norm solution's own.
    coef = dec.vt @ beta_mn
    s["gd_predicted_final_train_mse"] = float(
        np.sum(eig * coef**2 * (1 - lrs["gd"] * eig) ** (2 * cfg.epochs)) + s["train_mse_min_norm"]
    )
    return trajs


def sweep(cfg: Config, *, log: LogFn = print) -> dict[str, Any]:
    """Test MSE of the min-norm solution against gamma = p / n for p from n/10 to 10n.

    The test MSE of b is its exact expectation over a fresh test point, ``|b - beta*|^2 +
    sigma^2`` (isotropic x), so the curve carries only the design's randomness, not a test set's.
    Each (p, seed) draw is seeded by (seed, p, k): the same p gives the same draws in any grid.
    """
    ps = sweep_ps(cfg.n, cfg.sweep_points)
    risk = np.empty((len(ps), cfg.sweep_seeds))
    for i, p in enumerate(ps):
        for k in range(cfg.sweep_seeds):
            rng = seeding.numpy_generator(cfg.seed, 1, p, k)
            d = gaussian_design(cfg.n, p, 0, cfg.r, cfg.sigma, rng)
            b = lin.min_norm_gram(d.x_train, d.y_train)
            risk[i, k] = np.sum((b - d.beta_star) ** 2) + cfg.sigma**2
    gammas = [p / cfg.n for p in ps]
    theory = [_finite(lin.theory_test_mse(g, cfg.r, cfg.sigma)) for g in gammas]
    result = {
        "n": cfg.n,
        "r": cfg.r,
        "sigma": cfg.sigma,
        "seeds": cfg.sweep_seeds,
        "p": ps,
        "gamma": gammas,
        "test_mse": risk.tolist(),
        "test_mse_mean": risk.mean(axis=1).tolist(),
        "test_mse_std": risk.std(axis=1, ddof=1).tolist()
        if cfg.sweep_seeds > 1
        else [0.0] * len(ps),
        "test_mse_theory": theory,
        "test_mse_definition": "|b - beta*|^2 + sigma^2: the exact expected squared error on a fresh test point",
    }
    log(f"p sweep (n={cfg.n}, {cfg.sweep_seeds} seeds): gamma, test MSE mean +- std, theory")
    for g, m, sd, th in zip(
        gammas, result["test_mse_mean"], result["test_mse_std"], theory, strict=True
    ):
        log(f"  {g:7.3f}  {m:10.4f} +- {sd:8.4f}   {th:10.4f}")
    return result


def sweep_ps(n: int, points: int) -> list[int]:
    """Distinct p, log-spaced from n/10 to 10n, without p = n (where the risk is infinite)."""
    grid = np.unique(np.round(np.geomspace(max(1, n / 10), 10 * n, points)).astype(int))
    return [int(p) for p in grid if p != n]


# -- helpers -----------------------------------------------------------------------------------


def _curves(
    dec: lin.Decomposition, data: LinearData, beta_mn: np.ndarray, traj: np.ndarray
) -> dict[str, list[float]]:
    """Per-epoch train MSE, test MSE, |b_t|, |b_t - b_mn| and the part outside the row space."""
    return {
        "train_mse": lin.mse(data.x_train, data.y_train, traj).tolist(),
        "test_mse": lin.mse(data.x_test, data.y_test, traj).tolist(),
        "norm": np.linalg.norm(traj, axis=1).tolist(),
        "dist_to_min_norm": np.linalg.norm(traj - beta_mn, axis=1).tolist(),
        "outside_row_space": lin.outside_row_space(dec, traj).tolist(),
    }


def _write_curves(run: Run, curves: dict[str, dict[str, list[float]]]) -> None:
    """metrics.jsonl, one object per epoch (epoch 0 is the start). Written in one atomic write
    after training rather than appended epoch by epoch: the whole study takes seconds and
    restarts from scratch, and 1,001 fsyncs would cost more than the training."""
    epochs = len(curves["gd"]["train_mse"])
    lines = []
    for t in range(epochs):
        record: dict[str, Any] = {"epoch": t}
        for name, c in curves.items():
            record.update({f"{name}_{key}": c[key][t] for key in CURVES})
        lines.append(_dumps(record))
    text = "".join(line + "\n" for line in lines)
    atomic_write(run.file(METRICS), lambda f: f.write(text), mode="w")


def _sgd_outcome(s: dict[str, Any]) -> str:
    """Where SGD ended, from its measured distance to X^+ y: "converged" (down to CONVERGED of
    |X^+ y|), "settled" (it fell by less than half over the last half of the epochs while the
    expected iterate would have fallen below 5% of where it was: it stopped approaching), or
    "approaching" (still falling, or too few epochs to tell)."""
    final, late = s["sgd_final_dist_to_min_norm"], s["sgd_late_remaining_fraction_measured"]
    if final <= CONVERGED * max(s["min_norm"], 1e-300):
        return "converged"
    if late is not None and late > 0.5 and s["sgd_late_remaining_fraction_predicted"] < 0.05:
        return "settled"
    return "approaching"


def _compare_rates(measured: float | None, predicted: float) -> str | None:
    """ "faster", "slower" or "agrees" (per-epoch log-rates within RATE_TOLERANCE); None when
    nothing was measured."""
    if measured is None:
        return None
    if 0 < measured < 1 and 0 < predicted < 1:
        ratio = math.log(measured) / math.log(predicted)  # > 1: contracted faster
        if abs(ratio - 1) <= RATE_TOLERANCE:
            return "agrees"
        return "faster" if ratio > 1 else "slower"
    if measured == predicted:
        return "agrees"
    return "faster" if measured < predicted else "slower"


def _explain(s: dict[str, Any]) -> list[str]:
    """How GD and SGD approached X^+ y in this run, each sentence chosen by what the run measured
    and every number taken from ``s``."""
    lines = [
        f"How GD and SGD from zero approached the least-squares solution of minimum norm X^+ y in {s['epochs']} "
        "epochs: GD geometrically, one eigendirection of X^T X / n at a time, the slowest one last.",
        f"The slowest direction has the smallest nonzero eigenvalue lambda_min+ = {s['lambda_min_nonzero']:.4g} "
        f"(lambda_max = {s['lambda_max']:.4g}; condition number on the non-null space {s['cond_nonnull']:.1f}).",
    ]
    for name, label, per in (
        ("gd", "GD", "1 step"),
        ("sgd", f"SGD (batch {s['batch_size']})", f"{s['sgd_steps_per_epoch']} steps"),
    ):
        measured = s[f"{name}_measured_contraction_slowest"]
        remaining = s[f"{name}_slowest_remaining_fraction_measured"]
        lines.append(
            f"{label}, step {s[f'{name}_lr']:.3g}, {per} per epoch: predicted per-epoch contraction of the slowest "
            f"direction (1 - lr lambda_min+)^steps = {s[f'{name}_predicted_contraction_slowest']:.6f}, measured "
            + (f"{measured:.6f}" if measured is not None else "n/a")
            + f"; after {s['epochs']} epochs {s[f'{name}_slowest_remaining_fraction_predicted']:.2e} of it remains "
            + (f"(measured {remaining:.2e})" if remaining is not None else "(measured n/a)")
            + f"; final train MSE {s[f'{name}_final_train_mse']:.2e}."
        )
    lines.append(_gd_check(s))
    lines.append(_sgd_rate(s))
    lines.append(_sgd_end(s))
    lines.append(
        f"GD's final train MSE predicted from the spectrum: {s['gd_predicted_final_train_mse']:.2e}. The limit X^+ y "
        f"has train MSE {s['train_mse_min_norm']:.1e}: "
        + (
            (
                "it interpolates (rank = n)"
                if s["rank"] == s["n"]
                else f"it interpolates though rank(X) = {s['rank']} < n = {s['n']} (y lies in the column space of X)"
            )
            + ", so what is left of that is float64 rounding, and once a direction has shrunk below rounding the "
            "error stops falling."
            if s["min_norm_interpolates"]
            else f"rank(X) = {s['rank']} < n = {s['n']} and y is not in the column space of X, so no solution "
            "interpolates and the training error cannot reach zero."
        )
    )
    return lines


def _gd_check(s: dict[str, Any]) -> str:
    measured, predicted = (
        s["gd_measured_contraction_slowest"],
        s["gd_predicted_contraction_slowest"],
    )
    if measured is None:
        return "GD's contraction could not be measured (X^+ y has no component along the slowest direction)."
    rel = abs(measured - predicted) / max(abs(predicted), 1e-300)
    return (
        f"GD's measured contraction matches the prediction to {rel:.1e} (relative): GD from zero is linear, "
        "so the prediction is exact."
        if rel <= 1e-6
        else f"GD's measured contraction differs from the prediction by {rel:.1e} (relative), though GD from zero "
        "is linear: float64 rounding, or a slowest direction that reached rounding within a few epochs."
    )


def _sgd_rate(s: dict[str, Any]) -> str:
    """SGD's measured rate along the slowest direction against the expected iterate's."""
    verdict = s["sgd_rate_vs_expected"]
    measured, predicted = (
        s["sgd_measured_contraction_slowest"],
        s["sgd_predicted_contraction_slowest"],
    )
    sharp = s["sgd_lr"] * s["max_row_norm_sq"] / s["batch_size"]
    head = (
        "SGD's prediction is for the expected iterate (expected step map I - lr X^T X / n), not for one run; "
        f"here lr max_i |x_i|^2 / batch = {sharp:.3g}. "
    )
    if verdict is None:
        return head + "Its contraction could not be measured in this run."
    numbers = f"(measured {measured:.6f} per epoch, predicted {predicted:.6f})"
    if verdict == "agrees":
        return (
            head + f"This run followed it: per-epoch rates within {RATE_TOLERANCE:.0%} {numbers}."
        )
    if verdict == "faster":
        why = (
            ": each step comes close to projecting onto its samples' hyperplane, as in randomized Kaczmarz, "
            "which shrinks one run's error faster than the mean's"
            if sharp > 0.3
            else ""
        )
        return head + f"This run contracted faster than it {numbers}{why}."
    why = (
        ": the measured rate spans the epochs SGD spent settled around X^+ y (below)"
        if s["sgd_outcome"] == "settled"
        else ""
    )
    return head + f"This run contracted slower than it {numbers}{why}."


def _sgd_end(s: dict[str, Any]) -> str:
    """Where SGD ended: converged, settled in a noise ball (and why), or still approaching."""
    final, outcome = s["sgd_final_dist_to_min_norm"], s["sgd_outcome"]
    half, epochs = s["sgd_half_epoch"], s["epochs"]
    late = s["sgd_late_remaining_fraction_measured"]
    fits = (
        f"X^+ y fits every training sample (train MSE {s['train_mse_min_norm']:.1e})"
        if s["min_norm_interpolates"]
        else f"X^+ y leaves residuals (train MSE {s['train_mse_min_norm']:.3g})"
    )
    if outcome == "converged":
        return (
            f"SGD converged to X^+ y: |b_SGD - X^+ y| = {final:.2e} after {epochs} epochs "
            f"({final / max(s['min_norm'], 1e-300):.1e} of |X^+ y|). "
            + (
                f"{fits}, so every per-sample gradient vanishes there and a constant step leaves no noise at the "
                "solution."
                if s["min_norm_interpolates"]
                else f"{fits}; a constant step would leave SGD in a noise ball around it, smaller than {final:.2e} here."
            )
        )
    change = (
        f"from {s['sgd_half_dist_to_min_norm']:.3g} at epoch {half} to {final:.3g} at epoch {epochs} "
        f"(x{'n/a' if late is None else f'{late:.3g}'}; the expected iterate's would shrink to at most "
        f"x{s['sgd_late_remaining_fraction_predicted']:.2e})"
    )
    if outcome == "settled":
        return f"SGD did not converge: its distance to X^+ y went {change}. " + (
            f"{fits}, so the per-sample gradients do not vanish there and constant-step SGD settles in a noise "
            "ball around X^+ y instead, of radius proportional to the residuals and shrinking with the step "
            f"(a smaller --lr, or a decaying step, gets closer); its final train MSE {s['sgd_final_train_mse']:.4g} "
            f"is above X^+ y's {s['train_mse_min_norm']:.4g}."
            if not s["min_norm_interpolates"]
            else f"{fits}, so this is not the noise ball of non-zero residuals; genlab has no explanation for it."
        )
    return f"SGD is still approaching X^+ y after {epochs} epochs: its distance went {change}."


def _sklearn_check(
    data: LinearData, beta_mn: np.ndarray, beta_sgd: np.ndarray, lr: float, epochs: int, seed: int
) -> dict[str, Any]:
    """scikit-learn's SGDRegressor: per-sample squared loss, no intercept, no penalty, constant step."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDRegressor

    model = SGDRegressor(
        loss="squared_error",
        penalty=None,
        alpha=0.0,
        fit_intercept=False,
        learning_rate="constant",
        eta0=lr,
        max_iter=epochs,
        tol=None,
        shuffle=True,
        random_state=seed,
        average=False,
    )
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(data.x_train, data.y_train)
    b = model.coef_.astype(np.float64)
    return {
        "sklearn_label": "scikit-learn SGDRegressor(loss='squared_error', penalty=None, fit_intercept=False, "
        "learning_rate='constant') - an independent implementation, its own shuffling",
        "sklearn_lr": lr,
        "sklearn_train_mse": float(lin.mse(data.x_train, data.y_train, b)),
        "sklearn_test_mse": float(lin.mse(data.x_test, data.y_test, b)),
        "sklearn_dist_to_min_norm": float(np.linalg.norm(b - beta_mn)),
        "sklearn_dist_to_genlab_sgd": float(np.linalg.norm(b - beta_sgd)),
    }


def _null_space_shift(
    dec: lin.Decomposition,
    x: np.ndarray,
    y: np.ndarray,
    beta_mn: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Add a unit null-space vector z to X^+ y: still a solution, with |b|^2 larger by exactly 1."""
    if dec.rank == dec.p:
        return {"shifted_normal_equations_residual": None, "shifted_norm_sq_increase": None}
    z = lin.project_null_space(dec, rng.standard_normal(dec.p))
    z /= np.linalg.norm(z)
    shifted = beta_mn + z
    return {
        "shifted_normal_equations_residual": _normal_residual(x, y, shifted),
        "shifted_norm_sq_increase": float(shifted @ shifted - beta_mn @ beta_mn),
    }


def _normal_residual(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    """|X^T X b - X^T y| / |X^T y|."""
    xty = x.T @ y
    return float(np.linalg.norm(x.T @ (x @ b) - xty) / max(np.linalg.norm(xty), 1e-300))


def _describe(cfg: Config, data: LinearData) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": data.name,
        "num_train": data.n,
        "num_test": int(data.x_test.shape[0]),
        "num_features": data.p,
    }
    if cfg.data:
        info["sha256"] = data.sha256
    else:
        info.update(
            {
                "design": "iid N(0, 1)"
                if cfg.rank is None
                else f"rank {cfg.rank}: (n x R)(R x p) / sqrt(R)",
                "r": cfg.r,
                "sigma": cfg.sigma,
            }
        )
    return info


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _lap(t: float) -> float:
    return round(time.perf_counter() - t, 3)


def _dumps(record: dict[str, Any]) -> str:
    import json

    return json.dumps(
        {k: (v if v is None or math.isfinite(v) else None) for k, v in record.items()},
        sort_keys=True,
    )
