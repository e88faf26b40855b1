"""The similarity estimators: linear CKA (full batch and minibatch, unbiased HSIC) and PWCCA."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.analysis.measures import (
    Moments,
    cca,
    cka_from_hsic,
    hsic_matrix,
    linear_cka,
    minibatch_cka,
    pwcca,
    pwcca_from_moments,
    u_centred_gram,
)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(randn(d, d, seed=seed))
    return q


def related(n: int = 200, dx: int = 12, dy: int = 9, seed: int = 0):
    """Two representations sharing a 4-dimensional latent, plus noise."""
    z = randn(n, 4, seed=seed)
    x = z @ randn(4, dx, seed=seed + 1) + randn(n, dx, seed=seed + 2)
    y = z @ randn(4, dy, seed=seed + 3) + randn(n, dy, seed=seed + 4)
    return x, y


def full_unbiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(cka_from_hsic(hsic_matrix([x, y]))[0, 1])


# --- linear CKA, full batch -----------------------------------------------------------------


def test_linear_cka_matches_the_feature_space_formula():
    x, y = randn(40, 12, seed=4), randn(40, 5, seed=5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(expected.item(), abs=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


# --- CKA properties, full and minibatch -----------------------------------------------------


def test_cka_of_a_representation_with_itself_is_one():
    x, y = related()
    assert minibatch_cka(x, x, 50) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    cka = cka_from_hsic(hsic_matrix([x, y, 2.0 * x + 1.0]))
    assert cka.diagonal().tolist() == [1.0, 1.0, 1.0]  # exactly, not 0.9999999999999999
    assert cka[0, 2].item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("cka", [linear_cka, lambda x, y: minibatch_cka(x, y, 50)])
def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling_only(cka):
    x, y = related()
    base = cka(x, y)
    assert 0.1 < base < 0.95
    assert cka(x @ orthogonal(12, seed=7), y) == pytest.approx(base, abs=1e-10)
    assert cka(x, y @ orthogonal(9, seed=8)) == pytest.approx(base, abs=1e-10)
    assert cka(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-10)
    assert cka(x + 5.0, y - 2.0) == pytest.approx(base, abs=1e-10)  # centred
    # A general invertible map reweights directions, and CKA sees that (CCA does not).
    spread = torch.diag(torch.exp(torch.linspace(-3, 3, 12, dtype=torch.float64)))
    assert abs(cka(x @ spread, y) - base) > 1e-3
    ill = orthogonal(12, seed=9) @ spread @ orthogonal(12, seed=10)
    assert abs(cka(x @ ill, y) - base) > 1e-3


def test_cka_and_hsic_are_symmetric():
    x, y = related()
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert minibatch_cka(x, y, 50) == pytest.approx(minibatch_cka(y, x, 50), abs=1e-12)
    s = hsic_matrix([x, y, randn(200, 3, seed=11)])
    assert s.shape == (3, 3) and s.dtype == torch.float64
    assert torch.equal(s, s.T)


# --- unbiased HSIC --------------------------------------------------------------------------


def song_hsic1(gram_k: torch.Tensor, gram_l: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012)'s unbiased HSIC_1 of Gram matrices K, L, written out as in the paper."""
    n = gram_k.shape[0]
    kt, lt = gram_k.clone(), gram_l.clone()
    kt.fill_diagonal_(0.0)
    lt.fill_diagonal_(0.0)
    one = torch.ones(n, dtype=torch.float64)
    trace = (kt * lt.T).sum()  # tr(K~ L~)
    return (
        trace + kt.sum() * lt.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


@pytest.mark.parametrize("n", [4, 5, 30])
def test_u_centring_gives_song_et_al_unbiased_hsic(n):
    # Offsets and different widths: U-centring must remove the mean exactly as HSIC_1 does.
    x = randn(n, 7, seed=20) + 3.0
    y = randn(n, 5, seed=21) + x[:, :5] - 1.5
    expected = song_hsic1(x @ x.T, y @ y.T)
    got = (u_centred_gram(x) * u_centred_gram(y)).sum() / (n * (n - 3))
    # measured: relative error ~5e-13 at n = 30
    assert got.item() == pytest.approx(expected.item(), rel=1e-9)
    assert hsic_matrix([x, y])[0, 1].item() == pytest.approx(expected.item(), rel=1e-9)


def test_u_centred_gram_has_zero_diagonal_and_zero_row_sums():
    u = u_centred_gram(randn(12, 6, seed=22) + 4.0)
    assert u.shape == (12, 12) and u.dtype == torch.float64
    assert torch.equal(u.diagonal(), torch.zeros(12, dtype=torch.float64))
    assert torch.allclose(u, u.T, atol=1e-12)
    assert u.sum(1).abs().max().item() < 1e-12 * u.abs().max().item() * 12


def test_u_centred_gram_needs_four_points():
    with pytest.raises(ValueError, match="at least 4"):
        u_centred_gram(randn(3, 5, seed=23))
    with pytest.raises(ValueError):
        hsic_matrix([randn(10, 2, seed=24), randn(9, 2, seed=25)])
    with pytest.raises(ValueError):
        minibatch_cka(randn(3, 2, seed=26), randn(3, 2, seed=27), 4)


def test_trailing_shapes_are_flattened():
    f = randn(16, 3, 4, 5, seed=30)
    g = randn(16, 7, seed=31)
    s = hsic_matrix([f, g])
    assert torch.allclose(s, hsic_matrix([f.reshape(16, 60), g]), rtol=0, atol=1e-12)


def test_constant_representation_gives_nan_not_an_error():
    x = randn(20, 4, seed=32)
    # 0.1 is inexact in binary, so a mean of it leaves a residue; the HSIC must still be exactly 0
    c = torch.full((20, 3), 0.1, dtype=torch.float64)
    s = hsic_matrix([x, c])
    assert s[1, 1].item() == 0.0
    cka = cka_from_hsic(s)
    assert cka[0, 0].item() == 1.0
    assert math.isnan(cka[0, 1].item()) and math.isnan(cka[1, 0].item())
    assert math.isnan(cka[1, 1].item())


def test_cka_diagonal_is_exactly_one():
    # d / (sqrt(d) sqrt(d)) rounds to 0.9999999999999999 for many d; the diagonal must not.
    d = torch.rand(1000, generator=torch.Generator().manual_seed(33), dtype=torch.float64) * 1e3
    s = torch.diag(d)
    assert (cka_from_hsic(s).diagonal() == 1.0).all()


def test_minibatch_drops_a_last_chunk_of_fewer_than_four_rows():
    x, y = related(n=103)
    assert minibatch_cka(x, y, 50) == minibatch_cka(x[:100], y[:100], 50)
    # 51 + 51 + 1 rows: the single last row is dropped
    assert minibatch_cka(x, y, 51) == minibatch_cka(x[:102], y[:102], 51)


def test_minibatch_cka_agrees_with_full_batch_unbiased_cka():
    n, d = 4000, 100
    z = randn(n, 5, seed=10)
    x = z @ randn(5, d, seed=11) + 4.0 * randn(n, d, seed=12)
    y = z @ randn(5, d, seed=13) + 4.0 * randn(n, d, seed=14)
    full = full_unbiased_cka(x, y)  # one batch of all 4000 rows
    # measured over 8 seeds of this construction: full ~0.51-0.55, |minibatch - full| <= 1.0e-3
    assert 0.4 < full < 0.7
    assert minibatch_cka(x, y, 500) == pytest.approx(full, abs=5e-3)


def test_unbiased_cka_of_independent_data_is_near_zero_and_biased_is_not():
    x, y = randn(2000, 500, seed=40), randn(2000, 500, seed=41)
    # measured over 5 seeds: minibatch |cka| <= 0.0042; biased 0.199-0.200 (about D / (D + N))
    assert abs(minibatch_cka(x, y, 500)) < 0.05
    assert linear_cka(x, y) > 0.1


# --- PWCCA ----------------------------------------------------------------------------------


def test_pwcca_is_one_for_orthogonal_and_general_invertible_maps():
    x = randn(500, 10, seed=50) + 7.0
    assert pwcca(x, x @ orthogonal(10, seed=51)) == pytest.approx(1.0, abs=1e-8)
    # CCA is invariant to any invertible linear map of either side; CKA is not (see above).
    spread = torch.diag(torch.exp(torch.linspace(-3, 3, 10, dtype=torch.float64)))
    a = orthogonal(10, seed=52) @ spread @ orthogonal(10, seed=53)
    assert pwcca(x, x @ a) == pytest.approx(1.0, abs=1e-8)
    assert pwcca(x @ spread, x) == pytest.approx(1.0, abs=1e-8)


def test_pwcca_of_independent_data_is_small():
    x, y = randn(5000, 20, seed=54), randn(5000, 30, seed=55)
    assert pwcca(x, y) < 0.2  # measured ~0.066-0.071 over 5 seeds


def test_pwcca_is_symmetric():
    x, y = related(n=300)
    base = pwcca(x, y)
    assert 0.2 < base < 0.95
    assert pwcca(y, x) == pytest.approx(base, abs=1e-12)


def test_moments_streamed_in_chunks_equal_all_at_once():
    x, y = related(n=300, seed=60)
    x = x + 100.0  # a large mean: the shifted accumulation must not lose the covariance
    z = torch.cat([x, y], 1)
    moments = Moments()
    for chunk in torch.split(z, [1, 70, 0, 100, 129]):
        moments.add(chunk)
    assert moments.count == 300
    cov = moments.covariance()
    assert torch.allclose(cov, torch.cov(z.T, correction=0), rtol=0, atol=1e-10)
    assert torch.allclose(moments.mean(), z.mean(0), rtol=0, atol=1e-10)
    streamed = pwcca_from_moments(cov, range(12), range(12, 21))
    assert streamed == pytest.approx(pwcca(x, y), abs=1e-10)
    assert pwcca_from_moments(cov, slice(0, 12), [12 + i for i in range(9)]) == streamed
    with pytest.raises(ValueError):
        Moments().covariance()
    with pytest.raises(ValueError):
        moments.add(torch.zeros(2, 5))


def test_a_dead_or_collinear_unit_changes_nothing():
    x, y = related(n=300, seed=61)
    base = pwcca(x, y)
    for fill in (0.0, 3.3):
        dead = torch.cat([x[:, :5], torch.full((300, 1), fill, dtype=torch.float64), x[:, 5:]], 1)
        result = pwcca(dead, y)
        assert math.isfinite(result)
        assert result == pytest.approx(base, abs=1e-8)
        # the same with a covariance computed elsewhere: the constant column's variance is
        # rounding noise (not exactly 0), which the relative tolerance must drop
        cov = torch.cov(torch.cat([dead, y], 1).T, correction=0)
        assert pwcca_from_moments(cov, range(13), range(13, 22)) == pytest.approx(base, abs=1e-8)
    # A collinear unit leaves the span and so the canonical correlations unchanged (the weights,
    # a sum over units, do change).
    both = torch.cat([x, 2.0 * x[:, :1] - x[:, 1:2], y], 1)
    cov = torch.cov(both.T, correction=0)
    rho, _, _ = cca(cov, range(13), range(13, 22))
    rho0, _, _ = cca(torch.cov(torch.cat([x, y], 1).T, correction=0), range(12), range(12, 21))
    assert torch.allclose(rho, rho0, rtol=0, atol=1e-8)
    # k = min(rank_x, rank_y): 3 units plus a combination of two of them have rank 3
    narrow = torch.cat([x[:, :3], x[:, :1] - 0.5 * x[:, 1:2], y], 1)
    rho, alpha_x, alpha_y = cca(torch.cov(narrow.T, correction=0), range(4), range(4, 13))
    assert rho.shape == alpha_x.shape == alpha_y.shape == (3,)
    assert torch.isfinite(alpha_x).all() and torch.isfinite(alpha_y).all()


def test_canonical_correlations_match_a_qr_reference():
    x, y = related(n=400, dx=8, dy=6, seed=62)
    qx, _ = torch.linalg.qr(x - x.mean(0))
    qy, _ = torch.linalg.qr(y - y.mean(0))
    expected = torch.linalg.svdvals(qx.T @ qy)
    rho, alpha_x, alpha_y = cca(
        torch.cov(torch.cat([x, y], 1).T, correction=0), range(8), range(8, 14)
    )
    assert rho.shape == alpha_x.shape == alpha_y.shape == (6,)
    assert torch.allclose(rho, expected, rtol=0, atol=1e-8)
    assert alpha_x.sum().item() == pytest.approx(1.0, abs=1e-12) and (alpha_x >= 0).all()
    assert alpha_y.sum().item() == pytest.approx(1.0, abs=1e-12) and (alpha_y >= 0).all()


def test_projection_weights_match_the_canonical_variates():
    # alpha_i proportional to sum_j |<h_i, x_j>| with the variates h_i computed from the data.
    x, y = related(n=400, dx=8, dy=6, seed=63)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cov = torch.cov(torch.cat([x, y], 1).T, correction=0)
    rho, alpha_x, _ = cca(cov, range(8), range(8, 14))
    # canonical directions from the QR route: h_i = Qx a_i with a_i the left singular vectors
    qx, _ = torch.linalg.qr(xc)
    qy, _ = torch.linalg.qr(yc)
    a, _, _ = torch.linalg.svd(qx.T @ qy, full_matrices=False)
    h = qx @ a  # (400, 6) unit-norm canonical variates
    weights = (h.T @ xc).abs().sum(1)
    assert torch.allclose(alpha_x, weights / weights.sum(), rtol=0, atol=1e-8)


def test_rank_zero_block_gives_nan():
    _, y = related(n=100)
    assert math.isnan(pwcca(torch.full((100, 3), 2.5, dtype=torch.float64), y))
    assert math.isnan(pwcca(y, torch.zeros(100, 2, dtype=torch.float64)))
