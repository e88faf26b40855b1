"""The CUDA path: uint8 data on the device, bf16 autocast, grouped training, CUDA-event timing.
Marked gpu (deselected by default; ``pytest -m gpu`` on a machine with CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genlab import seeding
from genlab.cli import main
from genlab.data import make_synthetic
from genlab.models import Conv4
from genlab.runs import ENV
from genlab.training import (
    FitSpec,
    Member,
    Normalizer,
    Runtime,
    View,
    epoch_generator,
    evaluate,
    fit,
    make_optimizer,
    train_epoch,
)
from genlab.training.engine import Timer, resolve_precision
from genlab.training.grouped import Plan

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = torch.device("cuda")
RT = Runtime(CUDA, "fp32", log=lambda _: None)  # float64 members: what is compared is exact


def _data():
    data = make_synthetic(n_train=512, n_test=256, num_classes=4, seed=0)
    return data, Normalizer.from_stats([0.5] * 3, [0.25] * 3, CUDA)


def test_training_on_cuda_runs_bf16_on_uint8_resident_data_and_learns():
    data, norm = _data()
    precision = resolve_precision("auto", CUDA)
    assert precision == "bf16"  # auto on CUDA
    x, y = data.train.images.to(CUDA), data.train.labels.to(CUDA)
    with seeding.init(0):
        model = Conv4(8, num_classes=4).to(CUDA, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = [
        train_epoch(
            model, opt, x, y, norm, batch_size=64, generator=epoch_generator(0, e),
            precision=precision,
        )["loss"]
        for e in range(1, 9)
    ]  # fmt: skip
    assert x.dtype == torch.uint8 and x.device.type == "cuda"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, fp32 weights
    assert losses[-1] < 0.7 * losses[0]
    test = evaluate(
        model, data.test.images.to(CUDA), data.test.labels.to(CUDA), norm, 4, precision=precision
    )
    assert test["acc"] > 0.5


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("bf16", 3e-2)])
def test_cuda_evaluation_agrees_with_the_cpu(precision, tolerance):
    data, _ = _data()
    with seeding.init(0):
        model = Conv4(8, num_classes=4).to(memory_format=torch.channels_last).eval()
    cpu = evaluate(
        model,
        data.test.images,
        data.test.labels,
        Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu")),
        4,
    )
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, CUDA)
    gpu = evaluate(model.to(CUDA), data.test.images, data.test.labels, norm, 4, precision=precision)
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=tolerance)
    assert abs(gpu["acc"] - cpu["acc"]) <= 3 / 256


def _members(x, labels, norm, optimizer="sgd", dtype=torch.float64):
    """One member per label set, member k seeded k (initialization and data order)."""
    out = []
    for k in range(len(labels)):
        with seeding.init(k):
            model = Conv4(4, num_classes=4).to(CUDA, dtype, memory_format=torch.channels_last)
        opt = make_optimizer(optimizer, model.parameters(), 0.05 if optimizer == "sgd" else 1e-3)
        spec = FitSpec(2, 64, k)
        out.append(Member(None, model, opt, View(x, labels[k]), {}, norm, 4, spec))
    return out


def _float64_setup():
    """float64: TF32 (PyTorch's default for float32 convolutions on CUDA) rounds grouped and
    plain convolutions differently, enough to move weights by 7e-3 in 16 steps (measured)."""
    data, _ = _data()
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, CUDA, dtype=torch.float64)
    x = data.train.images.to(CUDA)
    return x, [data.train.labels.roll(k).to(CUDA) for k in range(3)], norm


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_grouped_training_on_cuda_equals_one_by_one(optimizer):
    x, labels, norm = _float64_setup()
    together = _members(x, labels, norm, optimizer)
    histories = fit(together, RT, how=Plan(chunk=3))
    assert [r["group_size"] for h in histories for r in h] == [3] * 6
    for grouped_member, member in zip(together, _members(x, labels, norm, optimizer), strict=True):
        fit([member], RT)  # alone
        grouped = grouped_member.model.state_dict()
        for name, tensor in member.model.state_dict().items():
            if optimizer == "adam" and name.endswith("bias") and tensor.ndim == 1:
                continue  # conv biases before BatchNorm: see tests/test_grouped.py
            torch.testing.assert_close(grouped[name], tensor, rtol=1e-7, atol=1e-9)


class _CountingGraph(torch.cuda.CUDAGraph):
    replays = 0

    def replay(self):
        type(self).replays += 1
        return super().replay()


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_graph_steps_equal_eager_steps(monkeypatch, grouped, optimizer):
    x, labels, norm = _float64_setup()
    states, losses = {}, {}
    for graphs in ("0", "1"):
        monkeypatch.setenv("GENLAB_CUDA_GRAPHS", graphs)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", _CountingGraph)
        _CountingGraph.replays = 0
        members = _members(x, labels if grouped else labels[:1], norm, optimizer)
        histories = fit(members, RT, how=Plan(chunk=3))
        # 512 images: 8 batches an epoch, 3 eager, 5 replayed; grouped or not, one graph a pass
        assert _CountingGraph.replays == (10 if graphs == "1" else 0)
        states[graphs] = [m.model.state_dict() for m in members]
        losses[graphs] = [r["train_loss"] for h in histories for r in h]
    assert losses["1"] == pytest.approx(losses["0"], rel=1e-9)
    for eager, graphed in zip(states["0"], states["1"], strict=True):
        for name, tensor in eager.items():
            torch.testing.assert_close(graphed[name], tensor, rtol=1e-9, atol=1e-11)


def test_bf16_training_with_cuda_graphs_matches_eager_closely(monkeypatch):
    data, norm = _data()  # bf16 autocast, float32 weights: what a study runs on CUDA
    x, y = data.train.images.to(CUDA), data.train.labels.to(CUDA)
    results = {}
    for graphs in ("0", "1"):
        monkeypatch.setenv("GENLAB_CUDA_GRAPHS", graphs)
        with seeding.init(0):
            model = Conv4(8, num_classes=4).to(CUDA, memory_format=torch.channels_last)
        opt = make_optimizer("adam", model.parameters(), 1e-3)
        results[graphs] = [
            train_epoch(
                model, opt, x, y, norm, batch_size=64, generator=epoch_generator(0, e),
                precision="bf16",
            )
            for e in (1, 2)
        ]  # fmt: skip
    for eager, graphed in zip(results["0"], results["1"], strict=True):
        assert graphed["loss"] == pytest.approx(eager["loss"], rel=1e-2)


def test_cuda_timer_times_the_device_not_the_host():
    a = torch.randn(4096, 4096, device=CUDA)
    with Timer(CUDA) as t:
        for _ in range(20):
            a = a @ a / 64.0
    assert t.seconds > 0
    torch.cuda.synchronize()


def test_a_run_on_cuda_records_device_and_precision(tmp_path: Path, capsys):
    code = main(
        ["run", "robustness", "--dataset", "synthetic", "--width", "4", "--epochs", "2"]
        + ["--device", "cuda", "--views", "none", "--out", str(tmp_path)]
    )
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results: "))
    env = json.loads((run_dir / ENV).read_text())
    assert env["device"].startswith("cuda") and env["precision"] == "bf16"
    assert env["device_name"] == torch.cuda.get_device_name() and env["cuda_graphs"] is True


def test_analyses_keep_activations_and_statistics_on_the_device(tmp_path):
    """Similarity on CUDA: the HSIC sums and PWCCA moments live on the GPU, and the numbers
    are the CPU's up to float summation order."""
    import genlab
    from genlab.analysis import similarity
    from genlab.analysis.trained import load

    folder = genlab.sweep(
        "random-labels", out=tmp_path, dataset="digits", train_subset=120, width=4, epochs=2,
        label_noise=[0.0, 1.0], seeds=2, quiet=True, device="cpu",
    )  # fmt: skip
    found = {}
    for device in ("cpu", "cuda"):
        rt = Runtime.resolve(device=device, precision="fp32", quiet=True)
        trained, groups = load([folder], rt)
        assert trained[0].setup.member.normalize.scale.device.type == device
        found[device] = similarity.measure(trained, groups, similarity.Config(probe=200), rt)
    cpu, gpu = (torch.tensor(found[d]["cka"]["matrix"], dtype=torch.float64) for d in found)
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-4)
