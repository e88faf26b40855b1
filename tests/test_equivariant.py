"""The equivariant Conv-4 variants: invariant logits, equivariant layers, counts, refusals."""

from __future__ import annotations

import pytest
import torch

from genlab.data.transforms import VIEWS, view
from genlab.errors import GenlabError
from genlab.models import (
    GROUPS,
    Conv4,
    GroupAverage,
    conv4_param_count,
    count_params,
    make_model,
    matched_width,
    param_count,
)
from genlab.models.equivariant import transform_features

NCHW = (-2, -1)
# Invariance holds in exact arithmetic but not bit for bit: conv(g x, g W) visits the same
# products as g(conv(x, W)) in a different summation order, so float32 results differ by a few
# ulps (measured: <= 1e-6 relative). float64 shrinks the gap to ~1e-15, showing it is rounding.
RTOL32, RTOL64 = 1e-5, 1e-12


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters, so eval mode is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", list(GROUPS))
@pytest.mark.parametrize(("width", "kernel"), [(1, 1), (2, 3), (3, 5)])
def test_logits_are_invariant_to_every_group_element(name, width, kernel):
    torch.manual_seed(width * 10 + kernel)
    model = trained_like(make_model(name, width, kernel, num_classes=7))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
        for g in GROUPS[name]:
            assert rel_err(y, model(view(g, x, NCHW))) <= RTOL32, g
    if name == "conv4-vflip" and kernel > 1:  # and not to elements outside its group (a 1x1
        # kernel sees no geometry: then every layer is pointwise or a pool, invariant to all)
        with torch.no_grad():
            assert rel_err(y, model(view("rot90", x, NCHW))) > 1e-3


@pytest.mark.parametrize("name", list(GROUPS))
def test_invariance_is_exact_up_to_rounding(name):
    torch.manual_seed(1)
    model = trained_like(make_model(name, 2, 3, num_classes=5)).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        for g in GROUPS[name]:
            assert rel_err(y, model(view(g, x, NCHW))) <= RTOL64, g


@pytest.mark.parametrize("name", list(GROUPS))
def test_every_layer_is_equivariant(name):
    """Block i of f(g x) equals g acting on block i of f(x): pixels moved, group axis permuted."""
    torch.manual_seed(2)
    group = GROUPS[name]
    model = trained_like(make_model(name, 2, 3, num_classes=4)).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        feats = model.block_features(x)
        assert [f.shape[-1] for f in feats] == [16, 8, 4, 1]
        assert all(f.shape[2] == len(group) for f in feats)
        for g in group:
            moved = model.block_features(view(g, x, NCHW))
            for i, (a, b) in enumerate(zip(feats, moved, strict=True)):
                assert rel_err(transform_features(g, a, group), b) <= RTOL64, (g, i)
                if g != "identity" and i < 3:  # the group axis matters: pixels alone do not match
                    assert rel_err(view(g, a, NCHW), b) > 1e-3


def test_train_mode_batch_statistics_keep_the_symmetry():
    """BatchNorm statistics are shared across each channel's |G| copies: a batch and its flipped
    copy get the same statistics, so even train-mode logits agree."""
    torch.manual_seed(3)
    model = make_model("conv4-vflip", 2, 3, num_classes=3).double().train()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    assert rel_err(model(x), model(view("vflip", x, NCHW))) <= RTOL64


@pytest.mark.parametrize("width", [1, 4, 16, 64])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_parameter_counts_follow_the_formula(width, kernel):
    for name in GROUPS:
        if width == 64 and name == "conv4-d4":
            continue  # 12M parameters: the formula is checked at the smaller widths
        assert count_params(make_model(name, width, kernel, 10)) == param_count(name, width, kernel)
    # vs Conv-4: every layer after the first has |G| times the input channels
    g = 2
    conv4 = conv4_param_count(width, kernel)
    first = 3 * width * kernel**2
    assert param_count("conv4-vflip", width, kernel) - conv4 == (g - 1) * (
        conv4 - first - 3 * 15 * width - 80 * width - 10
    )


def test_reported_counts_and_matched_widths():
    assert param_count("conv4", 16) == 99_210
    assert param_count("conv4-vflip", 16) == 195_978
    assert param_count("conv4-d4", 16) == 776_586
    assert param_count("conv4", 64) == 1_558_026
    assert param_count("conv4-vflip", 64) == 3_106_314
    assert param_count("conv4-d4", 64) == 12_396_042
    assert (matched_width("conv4-vflip", 16), matched_width("conv4-d4", 16)) == (11, 6)
    assert (matched_width("conv4-vflip", 64), matched_width("conv4-d4", 64)) == (45, 23)
    for name in GROUPS:  # the matched width is the closest one
        target = param_count("conv4", 32)
        c = matched_width(name, 32)
        gap = abs(param_count(name, c) - target)
        assert gap <= abs(param_count(name, c - 1) - target)
        assert gap <= abs(param_count(name, c + 1) - target)


@pytest.mark.parametrize("name", list(GROUPS))
def test_symmetry_breaking_configs_are_refused(name):
    with pytest.raises(GenlabError, match="--kernel 4: must be odd"):
        make_model(name, 2, 4, 10)
    model = make_model(name, 2, 3, 10)
    with pytest.raises(
        GenlabError, match=rf"--model {name}: a 15x15 feature map .* divisible by 4"
    ):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(GenlabError, match=rf"--model {name}: a 32x9 feature map"):
        model(torch.randn(1, 3, 32, 9))


@pytest.mark.parametrize("group", [("identity", "vflip"), VIEWS])
def test_averaging_wrapper_is_exactly_invariant(group):
    """Views only move pixels and the |G| logits are sorted before summing: bit-for-bit equal."""
    torch.manual_seed(4)
    model = GroupAverage(Conv4(2, 3, num_classes=6), group).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        y = model(x)
        for g in group:
            assert torch.equal(y, model(view(g, x, NCHW))), g
    with pytest.raises(GenlabError, match="not a group"):
        GroupAverage(Conv4(2, 3), ("identity", "rot90"))


def test_models_run_channels_last():
    model = make_model("conv4-d4", 2, 3, 10).to(memory_format=torch.channels_last).eval()
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", list(GROUPS))
def test_a_training_step_keeps_the_model_invariant(name):
    """Backward through every layer (an in-place ReLU after a pool once broke it), and an SGD step
    on tied weights leaves the model invariant."""
    torch.manual_seed(5)
    model = make_model(name, 2, 3, num_classes=4).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x)
        for g in GROUPS[name]:
            assert rel_err(out, model(view(g, x, NCHW))) <= RTOL32, g
