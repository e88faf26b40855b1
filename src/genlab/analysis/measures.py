"""Estimators of representational similarity, as pure functions of tensors.

Everything here takes and returns tensors (or floats) and computes in float64; nothing reads or
writes files. Rows are data points throughout.

Linear CKA, full batch (``linear_cka``)
    Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations Revisited"
    (ICML 2019). With column-centred features Xc (N, Dx), Yc (N, Dy) and their Gram matrices
    Gx = Xc Xc^T, Gy = Yc Yc^T: CKA = <Gx, Gy>_F / (||Gx||_F ||Gy||_F), which equals the feature
    space form ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F). This is the *biased* HSIC
    estimator: its diagonal terms make two independent high-dimensional representations look
    similar (about D / (D + N) for isotropic Gaussian features), and it needs all N rows at once.

Unbiased HSIC and minibatch CKA (``u_centred_gram``, ``hsic_matrix``, ``cka_from_hsic``,
``minibatch_cka``)
    Song, Smola, Gretton, Bedo & Borgwardt, "Feature Selection via Dependence Maximization"
    (JMLR 2012) give the unbiased estimator, for n >= 4 and K~ = K with its diagonal set to 0,

        HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2))
                        - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)).

    Székely & Rizzo, "Partial distance correlation with methods for dissimilarities" (Annals of
    Statistics 2014) write it as a plain inner product: with the U-centring

        U(K)_ij = K~_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))  (i != j),   U(K)_ii = 0,

    where r = K~ 1 are the row sums *of the zero-diagonal matrix* and s = 1^T K~ 1, one has
    HSIC_1(K, L) = <U(K), U(L)>_F / (n(n-3)) exactly (checked in tests/test_measures.py to
    ~1e-12 relative). So U-centring each representation's Gram once and taking one matmul of the
    stacked, flattened U matrices gives the HSIC_1 of every pair. Since <.,.>_F / (n(n-3)) on
    U-centred matrices is an inner product, Cauchy-Schwarz holds and the resulting CKA lies in
    [-1, 1]; unlike the biased one it can be (slightly) negative, and for independent
    representations it is centred on 0.

    Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn the Same Things?" (ICLR 2021):
    summing the (M, M) HSIC_1 matrices over minibatches and normalising only at the end gives
    the minibatch CKA, in O(M n^2) memory whatever the number N of inputs. Each batch's HSIC_1 is
    an unbiased estimate of the population HSIC only if the batch is a random sample, so rows
    should be in random order (not, say, sorted by class) before they are cut into batches.

PWCCA (``Moments``, ``cca``, ``pwcca_from_moments``, ``pwcca``)
    Morcos, Raghu & Bengio, "Insights on representational similarity in neural networks with
    canonical correlation" (NeurIPS 2018): the canonical correlations rho_i between two blocks
    of variables, averaged with weights alpha_i proportional to how much of the block's neurons
    the i-th canonical variate accounts for, sum_j |<h_i, x_j>|. Everything CCA needs is the joint
    covariance of [x, y], so ``Moments`` streams the count, sum and sum of outer products over as
    many data points as one likes, and ``cca`` works on the covariance alone. Each block is
    whitened on the span its data reach (directions with an eigenvalue <= tol * the block's
    largest are dropped: dead units, collinear units), so a dead ReLU unit neither breaks the
    inverse square root nor changes the result. Morcos et al.'s PWCCA takes the weights from one
    side only, which makes it asymmetric; ``pwcca_from_moments`` returns the mean of the two
    sides, so that similarity matrices built from it are symmetric. CCA is invariant to any
    invertible linear map of either block; CKA is invariant only to orthogonal maps and
    isotropic scaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Index = Sequence[int] | slice | range | torch.Tensor


# --- linear CKA, full batch -----------------------------------------------------------------


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Full-batch linear CKA (biased HSIC) of x (N, ...) and y (N, ...), flattened to (N, D).

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc, computed from
    the (N, N) Gram matrices (cheap when D >> N). 1 for x against itself, invariant to
    orthogonal transforms and isotropic scaling of either argument."""
    gx, gy = _centred_gram(x), _centred_gram(y)
    return float((gx * gy).sum() / (gx.norm() * gy.norm()).clamp_min(1e-300))


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    """(N, N) Gram matrix Xc Xc^T of the column-centred (N, D) float64 features."""
    x = x.flatten(1).double()
    x = x - x.mean(0, keepdim=True)
    return x @ x.T


# --- unbiased HSIC and minibatch CKA --------------------------------------------------------


def u_centred_gram(x: torch.Tensor) -> torch.Tensor:
    """U-centred linear Gram matrix (n, n), float64, of features x of shape (n, ...).

    With K = x x^T (x flattened to (n, D)), K~ = K with a zero diagonal, r = K~ 1 and
    s = 1^T K~ 1: U_ij = K~_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2)) for i != j, U_ii = 0
    (Székely & Rizzo 2014), so that <U(K), U(L)>_F / (n(n-3)) is Song et al.'s unbiased HSIC_1.
    Raises ValueError for n < 4, where HSIC_1 is undefined."""
    x = x.flatten(1).double()
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 data points, got {n}")
    # U-centring removes every term of the form a_i + b_j, so U(K) is unchanged when the same
    # vector is subtracted from every row of x. Subtracting the first row makes a constant
    # representation (or a constant column) exactly zero, so its HSIC is exactly 0 rather than
    # rounding noise; then subtracting the mean keeps K's entries small, so the centring below
    # does not cancel large offsets.
    x = x - x[:1]
    x = x - x.mean(0, keepdim=True)
    k = x @ x.T
    k.fill_diagonal_(0.0)
    r = k.sum(1)
    s = r.sum()
    u = k - r[:, None] / (n - 2) - r[None, :] / (n - 2) + s / ((n - 1) * (n - 2))
    u.fill_diagonal_(0.0)
    return u


def hsic_matrix(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """(M, M) float64 matrix of the unbiased HSIC_1 between every pair of M representations.

    ``features[m]`` has shape (n, ...) for the same n inputs; trailing shapes may differ between
    representations. Computed as U @ U^T / (n(n-3)) with U (M, n*n) the stacked, flattened
    U-centred Grams. Sum these over minibatches and apply ``cka_from_hsic`` for minibatch CKA."""
    if len(features) == 0:
        raise ValueError("hsic_matrix needs at least one representation")
    n = features[0].shape[0]
    if any(f.shape[0] != n for f in features):
        raise ValueError(
            f"all representations need the same inputs, got {[len(f) for f in features]}"
        )
    u = torch.stack([u_centred_gram(f).reshape(-1) for f in features])
    s = u @ u.T / (n * (n - 3))
    # A matmul need not round (i, j) and (j, i) alike; average so the matrix is exactly symmetric.
    return 0.5 * (s + s.T)


def cka_from_hsic(s: torch.Tensor) -> torch.Tensor:
    """CKA (M, M) from an (M, M) HSIC matrix: s_ij / sqrt(s_ii s_jj).

    A representation with s_ii <= 0 (constant: its HSIC with itself is 0) gives NaN in its row
    and column (its CKA is undefined). The diagonal of every other representation is exactly
    1.0."""
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"expected a square (M, M) matrix, got shape {tuple(s.shape)}")
    s = s.double()
    d = s.diagonal()
    valid = d > 0
    root = torch.where(valid, d, torch.full_like(d, math.nan)).sqrt()
    out = s / (root[:, None] * root[None, :])  # NaN propagates to the degenerate rows/columns
    # s_ii / sqrt(s_ii s_ii) can round to 0.9999999999999999; the diagonal is 1 by definition.
    idx = valid.nonzero().squeeze(1)
    out[idx, idx] = 1.0
    return out


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Minibatch linear CKA (unbiased HSIC) of x (N, ...) and y (N, ...).

    The N rows are cut into consecutive chunks of ``batch_size``; a last chunk of fewer than 4
    rows is dropped (HSIC_1 needs 4 points; its rows are lost, which matters only if N is tiny).
    HSIC matrices are summed over chunks and normalised once. Rows should be in random order."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same rows, got {x.shape[0]} and {y.shape[0]}")
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4, got {batch_size}")
    total: torch.Tensor | None = None
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if xb.shape[0] < 4:
            continue
        s = hsic_matrix([xb, yb])
        total = s if total is None else total + s
    if total is None:
        raise ValueError(f"minibatch CKA needs at least 4 rows, got {x.shape[0]}")
    return float(cka_from_hsic(total)[0, 1])


# --- PWCCA from streamed moments ------------------------------------------------------------


class Moments:
    """Streamed first and second moments of (P, D) batches: count, sum (D,), sum of z^T z (D, D).

    Sums are taken in float64 of the data minus a shift c, the first row of the first batch:
    ``covariance`` is S/n - mu mu^T of the shifted data, and with the offset removed mu is of
    the order of the spread of the data, so the subtraction loses only a few bits rather than
    all of them (as it would for features with a large mean). Shifting by a data point (not a
    mean) also makes a constant column exactly zero, so its variance is exactly 0."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None  # (D,)
        self.sum: torch.Tensor | None = None  # (D,), of z - shift
        self.sum_outer: torch.Tensor | None = None  # (D, D), of (z - shift)^T (z - shift)

    def add(self, z: torch.Tensor) -> None:
        """Accumulate z of shape (P, D): P data points of D variables."""
        if z.ndim != 2:
            raise ValueError(f"expected (P, D) data, got shape {tuple(z.shape)}")
        z = z.double()
        if self.shift is None:
            if z.shape[0] == 0:
                return
            self.shift = z[0].clone()
            self.sum = torch.zeros_like(self.shift)
            self.sum_outer = torch.zeros(z.shape[1], z.shape[1], dtype=z.dtype, device=z.device)
        if z.shape[1] != self.shift.shape[0]:
            raise ValueError(f"expected {self.shift.shape[0]} variables, got {z.shape[1]}")
        zs = z - self.shift
        self.count += z.shape[0]
        self.sum += zs.sum(0)
        self.sum_outer += zs.T @ zs

    def mean(self) -> torch.Tensor:
        """(D,) mean of everything added."""
        self._check()
        return self.shift + self.sum / self.count

    def covariance(self) -> torch.Tensor:
        """(D, D) covariance (divided by the count, not count - 1), exactly symmetric."""
        self._check()
        mu = self.sum / self.count
        cov = self.sum_outer / self.count - torch.outer(mu, mu)
        return 0.5 * (cov + cov.T)

    def _check(self) -> None:
        if self.count == 0:
            raise ValueError("no data points added")


def _block(cov: torch.Tensor, rows: Index, cols: Index) -> torch.Tensor:
    """cov[rows][:, cols] for index lists, ranges, slices or index tensors."""
    d = torch.arange(cov.shape[0], device=cov.device)
    r, c = d[_as_index(rows)], d[_as_index(cols)]
    return cov[r[:, None], c[None, :]]


def _as_index(idx: Index) -> slice | torch.Tensor:
    if isinstance(idx, slice):
        return idx
    return torch.as_tensor(list(idx) if isinstance(idx, range) else idx, dtype=torch.long)


def _whitening(sxx: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, r) eigenvectors and (r,) eigenvalues of the block covariance on the span the data
    reach: eigenvalues <= tol * the largest are dropped (dead or collinear units)."""
    evals, evecs = torch.linalg.eigh(sxx)
    top = evals.max() if evals.numel() else evals.new_tensor(0.0)
    keep = evals > tol * top if top > 0 else torch.zeros_like(evals, dtype=torch.bool)
    return evecs[:, keep], evals[keep]


def cca(
    cov: torch.Tensor, x_idx: Index, y_idx: Index, tol: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canonical correlations between the variable blocks x_idx and y_idx of a joint (D, D)
    covariance, with Morcos et al.'s projection weights for each side.

    Returns (rho, alpha_x, alpha_y), each of shape (k,), k = min(rank_x, rank_y): rho the
    canonical correlations in descending order, clamped to [0, 1]; alpha_x, alpha_y the
    projection weights (each summing to 1) of the x and y sides. A block of rank 0 gives k = 0.
    CCA is taken on the span the data reach: each block is whitened with the eigenvectors of
    its covariance whose eigenvalue is > tol * the block's largest."""
    cov = cov.double()
    sxx, syy, sxy = _block(cov, x_idx, x_idx), _block(cov, y_idx, y_idx), _block(cov, x_idx, y_idx)
    vx, ex = _whitening(sxx, tol)
    vy, ey = _whitening(syy, tol)
    if ex.numel() == 0 or ey.numel() == 0:
        empty = cov.new_zeros(0)
        return empty, empty.clone(), empty.clone()
    # Sxx^{-1/2} restricted to the kept span, (Dx, rx): the whitened variates Xc Wx have
    # identity covariance.
    wx, wy = vx * ex.rsqrt(), vy * ey.rsqrt()
    m = wx.T @ sxy @ wy  # (rx, ry)
    u, rho, vh = torch.linalg.svd(m, full_matrices=False)  # k = min(rx, ry) singular values
    rho = rho.clamp(0.0, 1.0)
    # The i-th canonical variate is h_i = Xc Wx u_i, so over the P data points its inner product
    # with neuron j's centred activations x_j = Xc e_j is
    #     <h_i, x_j> = e_j^T Xc^T Xc Wx u_i = P (Sxx Wx u_i)_j = P (Vx diag(sqrt(ex)) u_i)_j,
    # because Sxx Vx = Vx diag(ex) for the kept eigenvectors. So the weight of direction i is
    # sum_j |(Sxx^{1/2} u_i)_j| up to the factor P, which the normalisation removes.
    alpha_x = ((vx * ex.sqrt()) @ u).abs().sum(0)
    alpha_y = ((vy * ey.sqrt()) @ vh.T).abs().sum(0)
    return rho, alpha_x / alpha_x.sum(), alpha_y / alpha_y.sum()


def pwcca_from_moments(cov: torch.Tensor, x_idx: Index, y_idx: Index) -> float:
    """Projection-weighted CCA of the blocks x_idx and y_idx of a joint (D, D) covariance.

    Morcos et al. (2018) weight the canonical correlations with one side's projection weights,
    which is asymmetric; this returns the symmetric mean of both sides,
    0.5 * (sum_i alpha_x,i rho_i + sum_i alpha_y,i rho_i), so that similarity matrices are
    symmetric. NaN when either block has rank 0 (all its variables constant)."""
    rho, alpha_x, alpha_y = cca(cov, x_idx, y_idx)
    if rho.numel() == 0:
        return math.nan
    return float(0.5 * ((alpha_x * rho).sum() + (alpha_y * rho).sum()))


def pwcca(x: torch.Tensor, y: torch.Tensor) -> float:
    """Symmetric PWCCA of x (P, Dx) and y (P, Dy), rows data points (see ``pwcca_from_moments``)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected (P, Dx) and (P, Dy), got {tuple(x.shape)}, {tuple(y.shape)}")
    moments = Moments()
    moments.add(torch.cat([x.double(), y.double()], dim=1))
    dx = x.shape[1]
    return pwcca_from_moments(moments.covariance(), range(dx), range(dx, dx + y.shape[1]))
