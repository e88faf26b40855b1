"""Progress: a tqdm bar on a terminal, one plain line per epoch otherwise, nothing with --quiet."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from genlab import cli
from genlab.errors import GenlabError
from genlab.runs import METRICS, TENSORBOARD
from genlab.training.progress import EpochProgress

RECORDS = [
    {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "test_acc": 0.9, "seconds": 1.0}
    for e in (1, 2, 3)
]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_shows_run_epoch_loss_accuracy_and_time_left():
    out, lines = io.StringIO(), []
    with EpochProgress("my-run", 3, 1, lines.append, bar=True, file=out) as progress:
        progress.update(RECORDS[1], "epoch 2 line")
    text = out.getvalue()
    assert "my-run: epoch 2/3" in text and "loss 0.5000 acc 0.500 test 0.900" in text
    assert "<" in text and lines == []  # [elapsed<remaining]; no plain lines beside the bar


def test_plain_lines_when_not_a_terminal(capsys):
    lines: list[str] = []
    progress = EpochProgress("r", 3, 0, lines.append)
    for record in RECORDS:
        progress.update(record, f"epoch {record['epoch']}")
    progress.close()
    assert lines == ["epoch 1", "epoch 2", "epoch 3"]
    progress = EpochProgress("r", 3, 0, print)  # print, but stdout is captured: not a terminal
    progress.update(RECORDS[0], "epoch 1")
    progress.close()
    assert capsys.readouterr() == ("epoch 1\n", "")


def test_bar_only_when_printing_to_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    progress = EpochProgress("r", 3, 0, print)
    progress.update(RECORDS[0], "epoch 1")
    progress.close()
    assert sys.stdout.getvalue() == "" and "r: epoch 1/3" in sys.stderr.getvalue()
    silent = EpochProgress("r", 3, 0, lambda _msg: None)  # --quiet: no bar even on a terminal
    assert silent.bar is None


def test_cli_logs_one_line_per_epoch_and_quiet_silences(tmp_path, capsys):
    args = ["run", "robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "2"]
    args += ["--device", "cpu", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"] and err == ""
    assert cli.main([*args, "--force", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("results: ") and out.count("\n") == 1 and err == ""


def test_tensorboard_scalars_read_back_equal_to_metrics(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["run", "robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "2"]
    assert cli.main([*args, "--device", "cpu", "--out", str(tmp_path), "--tensorboard"]) == 0
    run = Path(capsys.readouterr().out.splitlines()[-1].removeprefix("results: "))
    metrics = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    events = EventAccumulator(str(run / TENSORBOARD))
    events.Reload()
    assert {"train_loss", "train_acc", "test_acc", "test_vflip_acc"} <= set(
        events.Tags()["scalars"]
    )
    for key in ("train_loss", "test_vflip_acc"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert got == [(m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in metrics]


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(GenlabError, match=r"pip install 'genlab\[tensorboard\]'"):
        EpochProgress("r", 3, 0, print, tensorboard=tmp_path / "tb")
