"""Linear least squares with more features than samples: exact solvers, GD/SGD, and theory.

Pure numpy/scipy in float64, no file I/O. Conventions, used everywhere in genlab's linreg study:

- ``X`` is (n, p), ``y`` is (n,). The training loss is ``L(b) = ||X b - y||^2 / (2 n)``; its
  Hessian is ``X^T X / n``, whose eigenvalues are the spectrum we compare with Marchenko-Pastur.
- Ridge minimizes ``||X b - y||^2 / n + lam ||b||^2``, so ``b(lam) = (X^T X + n lam I)^-1 X^T y``.
- Numerical rank: singular values above ``tol = s_max * max(n, p) * eps`` (numpy's matrix_rank
  and lstsq default), so ``min_norm`` and ``np.linalg.lstsq(rcond=None)`` agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import daxpy, ddot


@dataclass(frozen=True)
class Decomposition:
    """Thin SVD of X truncated to its numerical rank: ``X = U diag(s) Vt``."""

    u: np.ndarray  # (n, rank)
    s: np.ndarray  # (rank,) descending
    vt: np.ndarray  # (rank, p): an orthonormal basis of the row space of X
    rank: int
    tol: float  # singular values <= tol count as zero
    n: int
    p: int

    @property
    def eigenvalues(self) -> np.ndarray:
        """The nonzero eigenvalues of X^T X / n, descending; the other p - rank are zero."""
        return self.s**2 / self.n


def decompose(x: np.ndarray) -> Decomposition:
    n, p = x.shape
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    tol = float(s[0]) * max(n, p) * np.finfo(np.float64).eps if s.size else 0.0
    rank = int(np.sum(s > tol))
    return Decomposition(u[:, :rank], s[:rank], vt[:rank], rank, tol, n, p)


def min_norm(dec: Decomposition, y: np.ndarray) -> np.ndarray:
    """The minimum-norm least-squares solution ``X^+ y`` (Moore-Penrose pseudo-inverse)."""
    return dec.vt.T @ ((dec.u.T @ y) / dec.s)


def min_norm_gram(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``X^+ y`` through the eigendecomposition of the smaller Gram matrix (n x n or p x p).

    Several times faster than the SVD for a wide X (n = 500, p = 5000); the eigenvalues are the
    squared singular values, so it loses accuracy once cond(X) passes ~1e6 — fine for Gaussian
    designs (cond(X) ~ 1e3 even next to p = n), which is what the p-sweep uses it for.
    """
    n, p = x.shape
    wide = p >= n
    gram = x @ x.T if wide else x.T @ x
    w, q = np.linalg.eigh(gram)
    s_max = math.sqrt(max(float(w[-1]), 0.0))
    keep = w > (s_max * max(n, p) * np.finfo(np.float64).eps) ** 2
    q, w = q[:, keep], w[keep]
    if wide:  # b = X^T (X X^T)^+ y
        return x.T @ (q @ ((q.T @ y) / w))
    return q @ ((q.T @ (x.T @ y)) / w)  # b = (X^T X)^+ X^T y


def outside_row_space(dec: Decomposition, b: np.ndarray) -> np.ndarray:
    """Norms of the components of b (p,) or of each row of B (T, p) orthogonal to X's row space.

    Computed as ``|b - V V^T b|`` rather than ``sqrt(|b|^2 - |V^T b|^2)``: the latter cancels and
    reports ~1e-8 |b| for a vector exactly in the row space."""
    b = np.asarray(b)
    return np.linalg.norm(b - (b @ dec.vt.T) @ dec.vt, axis=-1)


def project_null_space(dec: Decomposition, b: np.ndarray) -> np.ndarray:
    """The part of b in the null space of X (orthogonal to the row space)."""
    return b - dec.vt.T @ (dec.vt @ b)


def ridge_path(dec: Decomposition, y: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """Ridge solutions for every lambda at once, (L, p): ``V diag(s / (s^2 + n lam)) U^T y``."""
    uty = dec.u.T @ y  # (rank,)
    shrink = dec.s[None, :] / (dec.s[None, :] ** 2 + dec.n * np.asarray(lambdas)[:, None])
    return (shrink * uty[None, :]) @ dec.vt


def mse(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error of b (p,) or of each row of B (T, p); vectorized over rows."""
    pred = x @ np.asarray(b).T  # (m,) or (m, T)
    resid = pred - (y if pred.ndim == 1 else y[:, None])
    return np.mean(resid * resid, axis=0)


# -- gradient descent ------------------------------------------------------------------------


def gd(
    x: np.ndarray, y: np.ndarray, lr: float, epochs: int, b0: np.ndarray | None = None
) -> np.ndarray:
    """Full-batch gradient descent on ``L(b) = ||X b - y||^2 / (2n)``, one step per epoch.

    Returns the trajectory (epochs + 1, p): row t is b after t epochs (row 0 is the start).
    """
    n, p = x.shape
    b = np.zeros(p) if b0 is None else np.array(b0, dtype=np.float64)
    traj = np.empty((epochs + 1, p))
    traj[0] = b
    step = lr / n
    for t in range(epochs):
        b -= step * ((x @ b - y) @ x)
        traj[t + 1] = b
    return traj


def sgd(
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    b0: np.ndarray | None = None,
) -> np.ndarray:
    """Plain SGD (constant step, no momentum) on the same loss, reshuffled every epoch.

    Each step uses the mean gradient of one mini-batch:
    ``b <- b - lr/|B| * X_B^T (X_B b - y_B)``; with ``batch_size=1`` that is the per-sample update
    ``b <- b - lr * (x_i.b - y_i) x_i``. Returns the trajectory (epochs + 1, p) like ``gd``.

    Speed: every update is a real update (no closed form per epoch). The per-sample loop calls
    BLAS ddot/daxpy directly on rows of an epoch's contiguous shuffled copy of X, updating b in
    place: about 1.6 us per update at p = 1000 on a shared 2-core CPU, against 4.4 us for the
    plain numpy expression ``b -= (lr * (xi @ b - yi)) * xi``, which allocates a temporary.
    """
    n, p = x.shape
    x = np.ascontiguousarray(x, dtype=np.float64)
    b = np.zeros(p) if b0 is None else np.array(b0, dtype=np.float64)
    traj = np.empty((epochs + 1, p))
    traj[0] = b
    for t in range(epochs):
        perm = rng.permutation(n)
        xp, yp = x[perm], y[perm]  # (n, p) contiguous: row access is a cheap view
        if batch_size == 1:
            for xi, yi in zip(xp, yp.tolist(), strict=True):
                b = daxpy(xi, b, a=-lr * (ddot(xi, b) - yi))  # in place: b is contiguous float64
        else:
            for start in range(0, n, batch_size):
                xb, yb = xp[start : start + batch_size], yp[start : start + batch_size]
                b -= (lr / len(yb)) * ((xb @ b - yb) @ xb)
        traj[t + 1] = b
    return traj


def sgd_smoothness(eigenvalue_max: float, row_norm_sq_max: float, n: int, batch_size: int) -> float:
    """Expected smoothness L_b of mini-batch SGD without replacement (Gower et al., 2019, Prop. 3.8).

    ``L_b = n (b - 1) / (b (n - 1)) * lambda_max + (n - b) / (b (n - 1)) * max_i ||x_i||^2``:
    the largest eigenvalue of X^T X / n for full batches, and the largest eigenvalue of one
    sample's Hessian x_i x_i^T (= ||x_i||^2) for single samples. ``--lr auto`` takes 1 / L_b.
    """
    b = min(batch_size, n)
    if n == 1:
        return row_norm_sq_max
    return n * (b - 1) / (b * (n - 1)) * eigenvalue_max + (n - b) / (b * (n - 1)) * row_norm_sq_max


def predicted_contraction(lr: float, eigenvalue: float, steps_per_epoch: int) -> float:
    """How much one epoch shrinks the error along an eigendirection of X^T X / n in expectation:
    ``(1 - lr * eigenvalue) ** steps`` (each step's expected map is ``I - lr X^T X / n``)."""
    return float(abs(1.0 - lr * eigenvalue) ** steps_per_epoch)


def measured_contraction(errors: np.ndarray, floor: float) -> float | None:
    """Geometric-mean per-epoch ratio of ``errors`` (T + 1,) over the epochs before it falls
    below ``floor`` (where float64 rounding, not the algorithm, sets its size)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors[0] <= 0:
        return None
    below = np.nonzero(errors <= floor)[0]
    last = int(below[0]) if below.size else len(errors) - 1
    if last < 1:
        return None
    return float((errors[last] / errors[0]) ** (1.0 / last))


# -- random-matrix theory --------------------------------------------------------------------


def mp_edges(gamma: float) -> tuple[float, float]:
    """Support [lambda_-, lambda_+] = [(1 - sqrt(gamma))^2, (1 + sqrt(gamma))^2]."""
    r = math.sqrt(gamma)
    return (1 - r) ** 2, (1 + r) ** 2


def mp_mass(gamma: float) -> float:
    """Mass of the continuous part: 1 / gamma for gamma > 1 (the rest, 1 - 1/gamma, sits at 0)."""
    return min(1.0, 1.0 / gamma)


def mp_density(x: np.ndarray, gamma: float) -> np.ndarray:
    """Marchenko-Pastur density of the eigenvalues of X^T X / n for iid N(0, 1) X with
    p / n = gamma: ``sqrt((l+ - x)(x - l-)) / (2 pi gamma x)`` on [l-, l+], 0 elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = mp_edges(gamma)
    inside = (x > lo) & (x < hi) & (x > 0)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2 * math.pi * gamma * xi)
    return out


def mp_cdf(x: np.ndarray, gamma: float, grid: int = 4001) -> np.ndarray:
    """Mass of the continuous part of Marchenko-Pastur below x (reaches ``mp_mass`` at l+).

    With ``x = c - h cos(theta)`` (c, h the support's centre and half-width) the integrand
    becomes ``h^2 sin^2(theta) / (2 pi gamma x)``: smooth, so the trapezoid rule on a uniform
    theta grid gives the total mass to ~1e-12 even with the square-root edges, and values in
    between (linear interpolation in theta) to ~1e-7.
    """
    lo, hi = mp_edges(gamma)
    c, h = (lo + hi) / 2, (hi - lo) / 2
    theta = np.linspace(0.0, math.pi, grid)
    lam = c - h * np.cos(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = h * h * np.sin(theta) ** 2 / (2 * math.pi * gamma * lam)
    if lam[0] <= 0:  # gamma == 1: the limit at x -> 0 is h (1 + cos 0) / (2 pi) = h / pi
        f[0] = h / math.pi
    cum = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(theta))])
    x = np.asarray(x, dtype=np.float64)
    th = np.arccos(np.clip((c - x) / h, -1.0, 1.0))
    return np.interp(th, theta, cum)


def ks_marchenko_pastur(nonzero_eigenvalues: np.ndarray, gamma: float) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of the nonzero eigenvalues
    and the continuous part of Marchenko-Pastur normalized to mass 1 (the point mass at 0, of
    the p - n zero eigenvalues when gamma > 1, is matched exactly and left out)."""
    e = np.sort(np.asarray(nonzero_eigenvalues, dtype=np.float64))
    m = e.size
    f = mp_cdf(e, gamma) / mp_mass(gamma)
    i = np.arange(1, m + 1)
    return float(max(np.max(i / m - f), np.max(f - (i - 1) / m)))


def theory_test_mse(gamma: float, r: float, sigma: float) -> float:
    """Asymptotic test MSE of min-norm least squares, isotropic features (Hastie, Montanari,
    Rosset, Tibshirani 2019, Thm 1-2; the risk plus the noise sigma^2 of a fresh test label):
    ``sigma^2 + sigma^2 gamma / (1 - gamma)`` for gamma < 1, and
    ``sigma^2 + r^2 (1 - 1/gamma) + sigma^2 / (gamma - 1)`` for gamma > 1; infinite at 1."""
    if gamma == 1:
        return math.inf
    if gamma < 1:
        return sigma**2 + sigma**2 * gamma / (1 - gamma)
    return sigma**2 + r**2 * (1 - 1 / gamma) + sigma**2 / (gamma - 1)
