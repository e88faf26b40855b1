"""K members through the one ``fit`` (grouped chunks, lanes) give what training them one by one
gives."""

from __future__ import annotations

import signal
import threading
from functools import partial

import pytest
import torch

from genlab import seeding
from genlab.data import make_synthetic
from genlab.models import Conv4
from genlab.models.grouped import GroupedConv4
from genlab.runs import Run
from genlab.training import FitSpec, Member, Normalizer, Runtime, View, fit, make_optimizer
from genlab.training.engine import Stopped, epoch_generator, train_epoch
from genlab.training.grouped import Plan, in_lanes, plan

RT = Runtime(torch.device("cpu"), "fp32", log=lambda _: None)

SEEDS = (0, 1, 2)
ALL_GROUPED = Plan(chunk=len(SEEDS))


def members_like_single_runs(seeds, width=2, num_classes=4, dtype=torch.float32):
    models = []
    for seed in seeds:
        with seeding.init(seed):  # as studies.common.prepare seeds a single run
            model = Conv4(width, 3, num_classes).to(dtype)
        models.append(model.to(memory_format=torch.channels_last))
    return models


def test_grouped_forward_equals_each_member():
    models = members_like_single_runs(SEEDS, width=3, num_classes=10)
    grouped = GroupedConv4(models)
    gen = torch.Generator().manual_seed(0)  # fixed inputs: tolerances are for these
    x = [torch.randn(5, 3, 32, 32, generator=gen) for _ in SEEDS]
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


def test_a_grouped_chunk_with_few_channels_takes_genlabs_batchnorm_and_equals_its_members():
    """Two width-4 members: 8 channels in the first layer, where genlab's BatchNorm path runs
    (float32, channels_last); outputs and gradients equal the members'."""
    models = members_like_single_runs((0, 1), width=4, num_classes=10)
    grouped = GroupedConv4(models).to(memory_format=torch.channels_last)
    assert grouped.features[1]._wide_path(
        torch.zeros(2, 8, 4, 4).to(memory_format=torch.channels_last)
    )
    gen = torch.Generator().manual_seed(0)  # fixed inputs: tolerances are for these
    x = [
        torch.randn(16, 3, 32, 32, generator=gen).to(memory_format=torch.channels_last)
        for _ in range(2)
    ]
    out = grouped(torch.cat(x, 1).contiguous(memory_format=torch.channels_last))
    out.square().sum().backward()
    for k, m in enumerate(models):
        mine = m(x[k])
        torch.testing.assert_close(out[:, k], mine, rtol=1e-4, atol=1e-5)
        mine.square().sum().backward()
        weights = dict(m.named_parameters())
        for (name, p), g in zip(m.named_parameters(), grouped.parameters(), strict=True):
            part = grouped.member_view(name, g.grad)[k].reshape(p.shape)
            paired = weights.get(name.replace(".bias", ".weight"))
            if name.endswith(".bias") and paired is not None and paired.ndim == 4:
                # a conv bias feeding BatchNorm has a gradient of exactly zero in exact
                # arithmetic: both sides hold rounding noise (see the Adam test below)
                assert part.abs().max() < 1e-3 and p.grad.abs().max() < 1e-3
                continue
            torch.testing.assert_close(part, p.grad, rtol=1e-3, atol=1e-4)


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
        one = Member(
            runs[k], models[k], opts[k], View(images, labels[k]), views, norm, 4,
            FitSpec(epochs, 16, seed),
        )  # fmt: skip
        (history,) = fit([one], RT)
        out.append((models[k], history))
    return out


def _train_together(tmp_path, optimizer, epochs, *, how, dtype=torch.float32, stops=None):
    """The three members through one fit: (models, runs, histories, norm, views)."""
    images, labels, views, norm, models, opts, runs = _setup(tmp_path, optimizer, "group", dtype)
    stops = stops or [None] * len(SEEDS)
    members = [
        Member(
            runs[k],
            models[k],
            opts[k],
            View(images, labels[k]),
            views,
            norm,
            4,
            FitSpec(epochs, 16, seed),
            stops[k],
        )  # fmt: skip
        for k, seed in enumerate(SEEDS)
    ]
    histories = fit(members, RT, how=how)
    return models, runs, histories, norm, views


@pytest.mark.parametrize(
    ("how", "sizes"),
    [(ALL_GROUPED, [[3, 3, 2], [3, 3], [3, 3, 2]]), (Plan(2, 2), [[2, 2, 2], [2, 2], [1, 1, 2]])],
)
def test_grouped_sgd_equals_training_one_by_one(tmp_path, how, sizes):
    """In float64, so that what is compared is the grouping, not float32 rounding: PyTorch's
    channels_last batch norm (which a grouped model uses from 9 channels on) was 30-100x less
    accurate than the NCHW kernel and genlab's own (tests/test_batchnorm.py) on one thread,
    enough to move float32 weights by 5e-3 in these 18 steps. One group, or chunks in lanes."""
    alone = _train_alone(tmp_path, "sgd", 3, torch.float64)
    # member 1 stops after epoch 2: it leaves the group, the others go on without it
    stops = [None, lambda r: r["epoch"] == 2, None]
    models, runs, histories, _, _ = _train_together(
        tmp_path, "sgd", 3, how=how, dtype=torch.float64, stops=stops
    )
    assert [len(h) for h in histories] == [3, 2, 3]
    assert [[r["group_size"] for r in h] for h in histories] == sizes
    assert {r["lanes"] for h in histories for r in h} == {how.lanes}
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
    models, _, _, norm, views = _train_together(tmp_path, "adam", 1, how=ALL_GROUPED)
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

    def members(runs, models, opts, epochs):
        return [
            Member(
                run,
                models[k],
                opts[k],
                View(images, labels[k]),
                views,
                norm,
                4,
                FitSpec(epochs, 16, s),
            )  # fmt: skip
            for k, (run, s) in enumerate(zip(runs, SEEDS, strict=True))
        ]

    fit(members(runs, models, opts, 2)[:1], RT, how=ALL_GROUPED)
    # a fresh process: new objects, the same run folders
    _, _, _, _, models2, opts2, _ = _setup(tmp_path / "unused", "sgd", "x")
    resumed = members([Run(r.path, "resume") for r in runs], models2, opts2, 3)
    histories = fit(resumed, RT, how=ALL_GROUPED)
    assert [[r["epoch"] for r in h] for h in histories] == [[1, 2, 3]] * 3

    ref_images, ref_labels, ref_views, _, ref_models, ref_opts, ref_runs = _setup(
        tmp_path, "sgd", "ref"
    )
    ref = Member(
        ref_runs[0], ref_models[0], ref_opts[0], View(ref_images, ref_labels[0]), ref_views,
        norm, 4, FitSpec(3, 16, SEEDS[0]),
    )  # fmt: skip
    fit([ref], RT)
    for name, tensor in ref_models[0].state_dict().items():
        torch.testing.assert_close(models2[0].state_dict()[name], tensor, rtol=1e-4, atol=1e-5)


@pytest.fixture
def two_threads():
    """The test session runs on one thread (conftest); lanes share out more."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _fresh_thread_count() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_members_in_lanes_equal_single_runs_on_one_thread_exactly(tmp_path, two_threads):
    """Each lane trains its members through the very code a single run uses, on one intra-op
    thread: the results are bit-identical to ``fit`` on one thread, whichever lane ran them."""
    torch.set_num_threads(1)
    alone = _train_alone(tmp_path, "sgd", 2)
    torch.set_num_threads(2)
    models, _, histories, _, _ = _train_together(tmp_path, "sgd", 2, how=Plan(chunk=1, lanes=2))
    for k, (model, history) in enumerate(alone):
        for name, tensor in model.state_dict().items():
            assert torch.equal(models[k].state_dict()[name], tensor), name
        for mine, ref in zip(histories[k], history, strict=True):
            assert mine.pop("group_size") == 1 and mine.pop("lanes") == 2
            assert ref.pop("group_size") == 1 and ref.pop("lanes") == 1
            assert len(mine.pop("cohort")) == len(histories) and len(ref.pop("cohort")) == 1
            assert {n: v for n, v in mine.items() if "seconds" not in n} == {
                n: v for n, v in ref.items() if "seconds" not in n
            }


def test_grouped_chunks_in_lanes_equal_training_one_by_one(tmp_path):
    """Chunks [2, 1] in two lanes, in float64: the grouped chunk and the member alone both
    follow their single runs."""
    alone = _train_alone(tmp_path, "sgd", 2, torch.float64)
    models, _, _, _, _ = _train_together(
        tmp_path, "sgd", 2, how=Plan(chunk=2, lanes=2), dtype=torch.float64
    )
    for k, (model, _) in enumerate(alone):
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(models[k].state_dict()[name], tensor, rtol=1e-9, atol=1e-11)


def test_in_lanes_shares_out_the_threads_and_restores_them(two_threads):
    main = threading.get_ident()

    def job(i, stop):
        return i * i, torch.get_num_threads(), threading.get_ident()

    out = in_lanes([partial(job, i) for i in range(7)], 2)
    assert [r[0] for r in out] == [i * i for i in range(7)]  # in job order
    assert {r[1] for r in out} == {1}  # 2 threads, 2 lanes: one each
    assert main not in {r[2] for r in out} and len({r[2] for r in out}) <= 2
    assert torch.get_num_threads() == 2 and _fresh_thread_count() == 2  # the process's, too
    assert in_lanes([partial(job, 3)], 1) == [(9, 2, main)]  # one lane: here, on all threads


def test_in_lanes_stops_the_other_lanes_at_the_first_error(two_threads):
    """A lane's error stops the running lanes at their next step and drops the queued jobs;
    the error raised is the real one, not the others' Stopped."""
    waited = []

    def waiting(stop):
        waited.append(stop.wait(timeout=60))  # False only if nobody asked it to stop
        raise Stopped

    def failing(stop):
        raise ValueError("lane error")

    with pytest.raises(ValueError, match="lane error"):
        in_lanes([waiting, failing] + [waiting] * 5, 2)
    assert waited and all(waited) and len(waited) <= 3  # the queued jobs mostly never ran
    assert _fresh_thread_count() == 2


def test_ctrl_c_stops_the_lanes():
    main = threading.main_thread().ident
    waited = []

    def interrupted(stop):
        signal.pthread_kill(main, signal.SIGINT)
        waited.append(stop.wait(timeout=60))

    with pytest.raises(KeyboardInterrupt):
        in_lanes([interrupted, lambda stop: waited.append(stop.wait(timeout=60))], 2)
    for thread in threading.enumerate():  # one caught starting by the Ctrl-C may still run
        if thread.name.startswith("genlab-lane"):
            thread.join(timeout=60)
    assert waited and all(waited)  # the lanes that ran were asked to stop, and did


def test_a_set_stop_ends_an_epoch_between_steps():
    data = make_synthetic(n_train=64, n_test=8, num_classes=4, seed=0)
    model = members_like_single_runs([0])[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        train_epoch(
            model,
            make_optimizer("sgd", model.parameters(), 0.1),
            data.train.images,
            data.train.labels,
            norm,
            batch_size=16,
            generator=epoch_generator(0, 1),
            stop=stop,
        )
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_the_plan():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert plan(Conv4(4), cpu, 8) == Plan(chunk=4, lanes=2)
        assert plan(Conv4(4), cpu, 16) == Plan(chunk=4, lanes=2)
        assert plan(Conv4(4), cpu, 3) == Plan(chunk=2, lanes=2)
        assert plan(Conv4(8), cpu, 8) == Plan(chunk=1, lanes=2)
        assert plan(Conv4(8), cpu, 3) == Plan()
        assert plan(Conv4(16), cpu, 3) == plan(Conv4(64), cpu, 3) == Plan()
        assert plan(Conv4(4), cpu, 1) == Plan()
        torch.set_num_threads(1)
        assert plan(Conv4(4), cpu, 8) == Plan(chunk=4, lanes=1)
    finally:
        torch.set_num_threads(threads)
    assert plan(Conv4(4), cuda, 3) == Plan(chunk=3) and plan(Conv4(16), cuda, 8) == Plan(chunk=8)
    assert plan(Conv4(64), cuda, 3) == Plan()
