"""genlab.models.linear: the min-norm solution, GD/SGD's implicit bias, Marchenko-Pastur, theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from genlab.data.linear import gaussian_design
from genlab.models import linear as lin


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """As the study runs: on a busy 2-core machine a two-thread SVD of 1000 x 2000 took 30 s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _design(n: int = 40, p: int = 100, seed: int = 0):
    return gaussian_design(n, p, 200, 1.0, 1.0, np.random.default_rng(seed))


def test_min_norm_interpolates_equals_lstsq_and_lies_in_row_space() -> None:
    d = _design()
    dec = lin.decompose(d.x_train)
    b = lin.min_norm(dec, d.y_train)
    assert dec.rank == 40 and b.dtype == np.float64
    assert np.max(np.abs(d.x_train @ b - d.y_train)) < 1e-10  # interpolates (p >= n)
    lstsq = np.linalg.lstsq(d.x_train, d.y_train, rcond=None)[0]
    np.testing.assert_allclose(b, lstsq, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b, np.linalg.pinv(d.x_train) @ d.y_train, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lin.min_norm_gram(d.x_train, d.y_train), b, rtol=0, atol=1e-10)
    # In the row space: b = X^T a for some a, so nothing is left outside it.
    a = np.linalg.lstsq(d.x_train.T, b, rcond=None)[0]
    np.testing.assert_allclose(d.x_train.T @ a, b, atol=1e-12)
    assert lin.outside_row_space(dec, b) < 1e-12


def test_every_solution_is_min_norm_plus_null_space_vector() -> None:
    d = _design()
    dec = lin.decompose(d.x_train)
    b = lin.min_norm(dec, d.y_train)
    z = lin.project_null_space(dec, np.random.default_rng(1).standard_normal(d.p))
    assert np.linalg.norm(d.x_train @ z) < 1e-10 * np.linalg.norm(z)
    other = b + z  # also solves the normal equations, with a larger norm (Pythagoras)
    xtx, xty = d.x_train.T @ d.x_train, d.x_train.T @ d.y_train
    assert np.linalg.norm(xtx @ other - xty) < 1e-9 * np.linalg.norm(xty)
    assert other @ other == pytest.approx(b @ b + z @ z, rel=1e-12)


def test_rank_deficient_design_has_the_forced_rank_and_min_norm_matches_lstsq() -> None:
    d = gaussian_design(50, 80, 10, 1.0, 0.5, np.random.default_rng(2), rank=20)
    dec = lin.decompose(d.x_train)
    assert dec.rank == 20 == np.linalg.matrix_rank(d.x_train)
    b = lin.min_norm(dec, d.y_train)
    np.testing.assert_allclose(b, np.linalg.lstsq(d.x_train, d.y_train, rcond=None)[0], atol=1e-10)
    assert np.var(d.x_train) == pytest.approx(1.0, rel=0.15)  # entries keep variance ~1


def test_ridge_tends_to_min_norm_as_lambda_goes_to_zero() -> None:
    d = _design()
    dec = lin.decompose(d.x_train)
    b = lin.min_norm(dec, d.y_train)
    lambdas = np.array([1e-10, 1e-6, 1e-2, 1.0])
    path = lin.ridge_path(dec, d.y_train, lambdas)
    direct = np.linalg.solve(
        d.x_train.T @ d.x_train + d.n * 1.0 * np.eye(d.p), d.x_train.T @ d.y_train
    )
    np.testing.assert_allclose(path[-1], direct, atol=1e-10)
    dist = np.linalg.norm(path - b, axis=1)
    assert dist[0] < 1e-7 and np.all(np.diff(dist) > 0)


@pytest.mark.parametrize("method", ["gd", "sgd1", "sgd8"])
def test_gd_and_sgd_from_zero_converge_to_min_norm_in_the_row_space(method: str) -> None:
    d = _design(30, 60)
    dec = lin.decompose(d.x_train)
    b_mn = lin.min_norm(dec, d.y_train)
    lam_max = dec.eigenvalues[0]
    if method == "gd":
        traj = lin.gd(d.x_train, d.y_train, 1 / lam_max, 3000)
    else:
        batch = 1 if method == "sgd1" else 8
        row_max = np.max(np.sum(d.x_train**2, axis=1))
        lr = 1 / lin.sgd_smoothness(lam_max, row_max, d.n, batch)
        traj = lin.sgd(d.x_train, d.y_train, lr, 1500, batch, np.random.default_rng(0))
    assert np.all(traj[0] == 0)
    assert np.linalg.norm(traj[-1] - b_mn) < 1e-8
    assert np.max(lin.outside_row_space(dec, traj)) < 1e-12  # zero from zero init, up to rounding


@pytest.mark.parametrize("method", ["gd", "sgd"])
def test_nonzero_init_converges_to_another_interpolator_with_min_norm_row_space_part(
    method: str,
) -> None:
    d = _design(30, 60)
    dec = lin.decompose(d.x_train)
    b_mn = lin.min_norm(dec, d.y_train)
    b0 = np.random.default_rng(3).standard_normal(d.p)
    if method == "gd":
        final = lin.gd(d.x_train, d.y_train, 1 / dec.eigenvalues[0], 3000, b0=b0)[-1]
    else:
        final = lin.sgd(d.x_train, d.y_train, 0.01, 1500, 1, np.random.default_rng(0), b0=b0)[-1]
    assert lin.mse(d.x_train, d.y_train, final) < 1e-18  # interpolates
    null0 = lin.project_null_space(dec, b0)
    assert np.linalg.norm(final - b_mn) > 1.0  # a different solution ...
    np.testing.assert_allclose(final - b_mn, null0, atol=1e-8)  # ... min-norm + b0's null part
    np.testing.assert_allclose(dec.vt.T @ (dec.vt @ final), b_mn, atol=1e-8)
    assert np.linalg.norm(final) > np.linalg.norm(b_mn)


def test_sgd_matches_a_plain_reference_loop_and_is_reproducible() -> None:
    d = _design(20, 50)
    lr, epochs = 0.01, 5
    fast = lin.sgd(d.x_train, d.y_train, lr, epochs, 1, np.random.default_rng(7))
    again = lin.sgd(d.x_train, d.y_train, lr, epochs, 1, np.random.default_rng(7))
    assert np.array_equal(fast, again)
    rng, b = np.random.default_rng(7), np.zeros(d.p)
    for _ in range(epochs):
        for i in rng.permutation(d.n):
            b = b - lr * (d.x_train[i] @ b - d.y_train[i]) * d.x_train[i]
    np.testing.assert_allclose(fast[-1], b, rtol=0, atol=1e-12)
    # A mini-batch of the whole set is one GD step per epoch.
    full = lin.sgd(d.x_train, d.y_train, lr, epochs, d.n, np.random.default_rng(0))
    np.testing.assert_allclose(full, lin.gd(d.x_train, d.y_train, lr, epochs), atol=1e-12)


def test_step_size_rule_and_contraction() -> None:
    assert lin.sgd_smoothness(5.0, 900.0, 100, 1) == pytest.approx(900.0)
    assert lin.sgd_smoothness(5.0, 900.0, 100, 100) == pytest.approx(5.0)
    assert 5.0 < lin.sgd_smoothness(5.0, 900.0, 100, 10) < 900.0
    assert lin.predicted_contraction(0.1, 2.0, 3) == pytest.approx(0.8**3)
    errors = 0.5 ** np.arange(40.0)
    assert lin.measured_contraction(errors, 1e-6) == pytest.approx(0.5)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 2.0, 5.0])
def test_marchenko_pastur_density_integrates_to_its_mass(gamma: float) -> None:
    lo, hi = lin.mp_edges(gamma)
    total, _ = integrate.quad(
        lambda x: float(lin.mp_density(np.array([x]), gamma)[0]), lo, hi, limit=200
    )
    expected = 1 / gamma if gamma > 1 else 1.0
    assert lin.mp_mass(gamma) == pytest.approx(expected)
    assert total == pytest.approx(expected, abs=1e-6)
    assert lin.mp_cdf(np.array([hi + 1.0]), gamma)[0] == pytest.approx(expected, abs=1e-10)
    assert lin.mp_cdf(np.array([lo - 1e-3]), gamma)[0] == 0.0
    mid = (lo + hi) / 2
    part, _ = integrate.quad(
        lambda x: float(lin.mp_density(np.array([x]), gamma)[0]), lo, mid, limit=200
    )
    assert lin.mp_cdf(np.array([mid]), gamma)[0] == pytest.approx(part, abs=1e-6)


@pytest.mark.parametrize(("n", "p"), [(1000, 2000), (2000, 500)])
def test_ks_distance_is_small_on_a_large_draw_and_large_for_the_wrong_gamma(n: int, p: int) -> None:
    x = np.random.default_rng(0).standard_normal((n, p))
    eig = lin.decompose(x).eigenvalues
    assert eig.size == min(n, p)
    assert lin.ks_marchenko_pastur(eig, p / n) < 0.02
    assert lin.ks_marchenko_pastur(eig, 2 * p / n) > 0.1


def test_theory_at_known_points() -> None:
    assert lin.theory_test_mse(0.5, 1.0, 1.0) == pytest.approx(2.0)  # sigma^2 / (1 - gamma)
    assert lin.theory_test_mse(0.0, 3.0, 1.0) == pytest.approx(1.0)  # n -> inf: just the noise
    assert lin.theory_test_mse(2.0, 1.0, 1.0) == pytest.approx(2.5)
    assert lin.theory_test_mse(2.0, 1.0, 0.0) == pytest.approx(0.5)  # noiseless: r^2 (1 - 1/gamma)
    assert lin.theory_test_mse(1e9, 2.0, 1.0) == pytest.approx(5.0, rel=1e-6)  # sigma^2 + r^2
    assert lin.theory_test_mse(1.0, 1.0, 1.0) == math.inf


def test_min_norm_risk_matches_theory_away_from_the_peak() -> None:
    n, sigma, r = 300, 1.0, 1.0
    for gamma in (0.5, 2.0):
        p = int(gamma * n)
        risks = []
        for seed in range(4):
            d = gaussian_design(n, p, 0, r, sigma, np.random.default_rng(seed))
            b = lin.min_norm_gram(d.x_train, d.y_train)
            risks.append(np.sum((b - d.beta_star) ** 2) + sigma**2)
        assert np.mean(risks) == pytest.approx(lin.theory_test_mse(gamma, r, sigma), rel=0.1)
