"""Linear CKA and the per-layer invariance measures."""

from __future__ import annotations

import pytest
import torch

from genlab.analysis.invariance import block_features, layer_invariance, mean_cosine
from genlab.analysis.measures import linear_cka
from genlab.models import Conv4, GroupAverage, make_model

LAYERS = ["block1", "block2", "block3", "block4", "logits"]


def features(n: int = 40, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_a_representation_with_itself_is_one():
    x = features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert mean_cosine(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = features(seed=1), features(d=7, seed=2) + features(seed=1)[:, :7]
    q, _ = torch.linalg.qr(features(n=12, d=12, seed=3))  # a random orthogonal matrix
    base = linear_cka(x, y)
    assert 0.05 < base < 0.95
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-12)  # columns are centred
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)


def test_cka_matches_the_feature_space_formula():
    x, y = features(seed=4), features(d=5, seed=5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("name", ["conv4-vflip", "conv4-d4"])
def test_equivariant_models_score_one_at_every_layer(name):
    torch.manual_seed(0)
    model = make_model(name, 2, 3, num_classes=5)
    rows = layer_invariance(model, torch.randn(16, 3, 8, 8), "vflip")
    assert [r["layer"] for r in rows] == LAYERS
    for row in rows:
        for key in ("equivariance_cos", "equivariance_cka", "invariance_cos", "invariance_cka"):
            assert row[key] == pytest.approx(1.0, abs=1e-5), (row["layer"], key)


def test_plain_conv4_is_not_equivariant_but_the_average_is_invariant():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    plain = {r["layer"]: r for r in layer_invariance(Conv4(2, 3, num_classes=5), x)}
    assert plain["block1"]["equivariance_cos"] < 0.95  # random filters are not symmetric
    assert plain["logits"]["invariance_cka"] < 0.99
    averaged = layer_invariance(GroupAverage(Conv4(2, 3, num_classes=5), ("identity", "vflip")), x)
    assert averaged[-1]["invariance_cka"] == pytest.approx(1.0, abs=1e-12)
    assert averaged[0]["equivariance_cos"] < 0.95  # inside, it is still a plain Conv-4


def test_a_view_outside_the_group_is_refused():
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match="'rot90' is not in the model's group"):
        layer_invariance(make_model("conv4-vflip", 1, 3, 3), torch.randn(2, 3, 8, 8), "rot90")


def test_block_features_are_each_blocks_output():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for model, group_axis in ((Conv4(2, 3), False), (make_model("conv4-vflip", 2, 3, 10), True)):
        feats = block_features(model, x)
        assert [n for n, _ in feats] == LAYERS
        assert [f.shape[-1] for _, f in feats[:4]] == [32, 16, 8, 1]
        assert [f.shape[1] for _, f in feats[:4]] == [2, 4, 8, 16]
        assert all(f.ndim == (5 if group_axis else 4) for _, f in feats[:4])
        assert all((f >= 0).all() for _, f in feats[:4])  # after the ReLU
