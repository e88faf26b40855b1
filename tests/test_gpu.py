"""The CUDA path: uint8 data on the device, bf16 autocast, grouped training, CUDA-event timing.
Marked gpu (deselected by default; ``pytest -m gpu`` on a machine with CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genlab.cli import main
from genlab.data import make_synthetic
from genlab.models import Conv4
from genlab.runs import ENV
from genlab.training import Normalizer, epoch_generator, evaluate, train_epoch
from genlab.training.engine import Timer
from genlab.training.grouped import Member, fit_group
from genlab.training.loop import FitSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = torch.device("cuda")


def _data():
    data = make_synthetic(n_train=512, n_test=256, num_classes=4, seed=0)
    return data, Normalizer.from_stats([0.5] * 3, [0.25] * 3, CUDA)


def test_training_on_cuda_runs_bf16_on_uint8_resident_data_and_learns():
    data, norm = _data()
    assert norm.precision == "bf16"  # auto on CUDA
    x, y = data.train.images.to(CUDA), data.train.labels.to(CUDA)
    torch.manual_seed(0)
    model = Conv4(8, num_classes=4).to(CUDA, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = [
        train_epoch(model, opt, x, y, norm, batch_size=64, generator=epoch_generator(0, e))["loss"]
        for e in range(1, 9)
    ]
    assert x.dtype == torch.uint8 and x.device.type == "cuda"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, fp32 weights
    assert losses[-1] < 0.7 * losses[0]
    test = evaluate(model, data.test.images.to(CUDA), data.test.labels.to(CUDA), norm, 4)
    assert test["acc"] > 0.5


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("bf16", 3e-2)])
def test_cuda_evaluation_agrees_with_the_cpu(precision, tolerance):
    data, _ = _data()
    torch.manual_seed(0)
    model = Conv4(8, num_classes=4).to(memory_format=torch.channels_last).eval()
    cpu = evaluate(
        model,
        data.test.images,
        data.test.labels,
        Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu")),
        4,
    )
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, CUDA, precision=precision)
    gpu = evaluate(model.to(CUDA), data.test.images, data.test.labels, norm, 4)
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=tolerance)
    assert abs(gpu["acc"] - cpu["acc"]) <= 3 / 256


def test_grouped_training_on_cuda_equals_one_by_one_in_fp32():
    data, _ = _data()
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, CUDA, precision="fp32")
    x = data.train.images.to(CUDA)
    labels = [data.train.labels.roll(k).to(CUDA) for k in range(3)]

    def members():
        out = []
        for k in range(3):
            torch.manual_seed(k)
            model = Conv4(4, num_classes=4).to(CUDA, memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            out.append(Member(None, model, opt, x, labels[k], norm, {}, seed=k))
        return out

    make = lambda p: torch.optim.SGD(p, lr=0.05)  # noqa: E731
    together = members()
    fit_group(together, make, 4, FitSpec(2, 64, 0), log=lambda _: None)
    for member in members():
        fit_group([member], make, 4, FitSpec(2, 64, 0), log=lambda _: None)  # alone
        grouped = together[member.seed].model.state_dict()
        for name, tensor in member.model.state_dict().items():
            torch.testing.assert_close(grouped[name], tensor, rtol=1e-3, atol=1e-4)


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
    assert "NVIDIA" in env["device_name"] or env["device_name"]
