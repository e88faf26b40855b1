"""K models in one grouped pass give what training them one by one gives."""

from __future__ import annotations

import pytest
import torch

from genlab.data import make_synthetic
from genlab.models import Conv4
from genlab.models.grouped import GroupedConv4
from genlab.runs import Run
from genlab.training import FitSpec, Normalizer, View, fit, make_optimizer
from genlab.training.grouped import Member, fit_group, worth_grouping

SEEDS = (0, 1, 2)


def members_like_single_runs(seeds, width=2, num_classes=4, dtype=torch.float32):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)  # as studies.common.prepare seeds a single run
        model = Conv4(width, 3, num_classes).to(dtype)
        models.append(model.to(memory_format=torch.channels_last))
    return models


def test_grouped_forward_equals_each_member():
    models = members_like_single_runs(SEEDS, width=3, num_classes=10)
    grouped = GroupedConv4(models)
    x = [torch.randn(5, 3, 32, 32) for _ in SEEDS]
    for mode in ("train", "eval"):
        for m in [grouped, *models]:
            m.train(mode == "train")
        out = grouped(torch.cat(x, 1))  # (B, K, classes)
        for k, m in enumerate(models):
            torch.testing.assert_close(out[:, k], m(x[k]), rtol=1e-5, atol=1e-5)
    for k, m in enumerate(models):
        state = grouped.member_state(k)
        for name, tensor in m.state_dict().items():
            torch.testing.assert_close(state[name], tensor)


def _setup(tmp_path, optimizer, tag, dtype=torch.float32):
    data = make_synthetic(n_train=96, n_test=40, num_classes=4, seed=0)
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"), dtype=dtype)
    images = data.train.images
    labels = [data.train.labels.roll(k) for k in range(len(SEEDS))]  # each member its own labels
    views = {"test": View(data.test.images, data.test.labels)}
    models = members_like_single_runs(SEEDS, dtype=dtype)
    opts = [make_optimizer(optimizer, m.parameters(), 0.01) for m in models]
    runs = [Run.open(tmp_path / f"{tag}{k}", {"identity": k}) for k in range(len(SEEDS))]
    return images, labels, views, norm, models, opts, runs


def _train_alone(tmp_path, optimizer, epochs, dtype=torch.float32):
    images, labels, views, norm, models, opts, runs = _setup(tmp_path, optimizer, "alone", dtype)
    out = []
    for k, seed in enumerate(SEEDS):
        history = fit(
            runs[k],
            models[k],
            opts[k],
            View(images, labels[k]),
            views,
            norm,
            4,
            FitSpec(epochs, 16, seed),
            log=lambda _: None,
        )
        out.append((models[k], history))
    return out


def _train_together(tmp_path, optimizer, epochs, *, grouped, dtype=torch.float32, stops=None):
    """The three members through fit_group: (models, runs, histories, norm, views)."""
    images, labels, views, norm, models, opts, runs = _setup(tmp_path, optimizer, "group", dtype)
    stops = stops or [None] * len(SEEDS)
    members = [
        Member(runs[k], models[k], opts[k], images, labels[k], norm, views, seed, stops[k])
        for k, seed in enumerate(SEEDS)
    ]
    make = lambda p: make_optimizer(optimizer, p, 0.01)  # noqa: E731
    spec = FitSpec(epochs, 16, 0)
    histories = fit_group(members, make, 4, spec, log=lambda _: None, grouped=grouped)
    return models, runs, histories, norm, views


def test_grouped_sgd_equals_training_one_by_one(tmp_path):
    """In float64, so that what is compared is the grouping, not float32 rounding: PyTorch's
    channels_last batch norm (which the grouped model uses) was 30-100x less accurate than the
    NCHW kernel and genlab's own (tests/test_batchnorm.py) on one thread, enough to move float32
    weights by 5e-3 in these 18 steps."""
    alone = _train_alone(tmp_path, "sgd", 3, torch.float64)
    # member 1 stops after epoch 2: it leaves the group, the others go on without it
    stops = [None, lambda r: r["epoch"] == 2, None]
    models, runs, histories, _, _ = _train_together(
        tmp_path, "sgd", 3, grouped=True, dtype=torch.float64, stops=stops
    )
    assert [len(h) for h in histories] == [3, 2, 3]
    for k in (0, 2):
        model, history = alone[k]
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(models[k].state_dict()[name], tensor, rtol=1e-9, atol=1e-11)
        for mine, ref in zip(histories[k], history, strict=True):
            assert mine["epoch"] == ref["epoch"]
            assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-9)
            assert mine["test_acc"] == pytest.approx(ref["test_acc"], abs=1 / 40 + 1e-9)
    # the member that stopped holds the weights of epoch 2 and is not trained further
    ckpt = runs[1].load_checkpoint()
    assert ckpt["epoch"] == 2 and histories[1][-1]["stopped"]


def test_grouped_adam_equals_training_one_by_one_where_the_gradient_is_not_zero(tmp_path):
    """Adam divides by sqrt(v): a conv bias feeding BatchNorm has a gradient of exactly zero in
    exact arithmetic, so its computed gradient is rounding noise and Adam turns that noise into
    steps of about lr, different for any change of summation order (grouped or not, another
    thread count). Those biases, and the running means that absorb them, cancel in the output;
    every other weight and the logits agree to float tolerance after one epoch."""
    alone = _train_alone(tmp_path, "adam", 1)
    models, _, _, norm, views = _train_together(tmp_path, "adam", 1, grouped=True)
    x = norm(views["test"].images)
    for k, (model, _) in enumerate(alone):
        for name, tensor in model.state_dict().items():
            weight = model.state_dict().get(name.replace(".bias", ".weight"))
            conv_bias = name.endswith(".bias") and weight is not None and weight.ndim == 4
            if conv_bias or name.endswith("running_mean"):
                continue
            torch.testing.assert_close(models[k].state_dict()[name], tensor, rtol=1e-3, atol=2e-4)
        with torch.no_grad():
            # with batch statistics the biases cancel exactly; running means lag them
            torch.testing.assert_close(models[k].train()(x), model.train()(x), rtol=1e-2, atol=5e-3)


def test_a_group_resumes_members_at_different_epochs(tmp_path):
    images, labels, views, norm, models, opts, runs = _setup(tmp_path, "sgd", "g")
    make = lambda p: make_optimizer("sgd", p, 0.01)  # noqa: E731
    members = [
        Member(runs[k], models[k], opts[k], images, labels[k], norm, views, s)
        for k, s in enumerate(SEEDS)
    ]
    fit_group(members[:1], make, 4, FitSpec(2, 16, 0), log=lambda _: None, grouped=True)
    # a fresh process: new objects, the same run folders
    _, _, _, _, models2, opts2, _ = _setup(tmp_path / "unused", "sgd", "x")
    resumed = [
        Member(Run(runs[k].path, "resume"), models2[k], opts2[k], images, labels[k], norm, views, s)
        for k, s in enumerate(SEEDS)
    ]
    histories = fit_group(resumed, make, 4, FitSpec(3, 16, 0), log=lambda _: None, grouped=True)
    assert [[r["epoch"] for r in h] for h in histories] == [[1, 2, 3]] * 3

    ref_images, ref_labels, ref_views, _, ref_models, ref_opts, ref_runs = _setup(
        tmp_path, "sgd", "ref"
    )
    fit(
        ref_runs[0],
        ref_models[0],
        ref_opts[0],
        View(ref_images, ref_labels[0]),
        ref_views,
        norm,
        4,
        FitSpec(3, 16, SEEDS[0]),
        log=lambda _: None,
    )
    for name, tensor in ref_models[0].state_dict().items():
        torch.testing.assert_close(models2[0].state_dict()[name], tensor, rtol=1e-4, atol=1e-5)


def test_on_the_cpu_members_train_one_by_one_and_equal_single_runs_exactly(tmp_path, monkeypatch):
    """Grouping is chosen by measurement (worth_grouping): on the CPU three members train member
    by member, through the very code a single run uses, so results are bit-identical to ``fit``."""
    from genlab.training import grouped as grouped_module

    def refuse(*args, **kwargs):
        raise AssertionError("grouped on the CPU")

    monkeypatch.setattr(grouped_module, "train_epoch_grouped", refuse)
    alone = _train_alone(tmp_path, "sgd", 2)
    models, _, _, _, _ = _train_together(tmp_path, "sgd", 2, grouped=None)
    for k, (model, _) in enumerate(alone):
        for name, tensor in model.state_dict().items():
            assert torch.equal(models[k].state_dict()[name], tensor), name


def test_grouping_policy():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not worth_grouping(Conv4(4), cpu, 3) and not worth_grouping(Conv4(8), cpu, 16)
    assert worth_grouping(Conv4(4), cpu, 8) and worth_grouping(Conv4(4), cpu, 16)
    assert worth_grouping(Conv4(4), cuda, 3) and worth_grouping(Conv4(16), cuda, 3)
    assert not worth_grouping(Conv4(64), cuda, 3)
