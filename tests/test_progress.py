"""Progress: a tqdm bar on a terminal, one plain line per epoch otherwise, nothing with --quiet."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from genlab import cli
from genlab.errors import GenlabError
from genlab.runs import DATASET, METRICS, TENSORBOARD
from genlab.training.progress import EpochProgress

RECORDS = [
    {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "test_acc": 0.9, "seconds": 1.0}
    for e in (1, 2, 3)
]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _frames(text: str) -> list[str]:
    """The lines a terminal showed, one per redraw (tqdm redraws after a carriage return)."""
    return [f.rstrip("\n").rstrip() for f in text.split("\r") if f.strip()]


def test_bar_shows_epoch_batch_loss_accuracies_and_time_left():
    out, lines = io.StringIO(), []
    with EpochProgress("my-run", 3, 1, lines.append, bar=True, file=out, columns=120) as progress:
        progress.update(RECORDS[1], "epoch 2 line")
        progress.batch(5, 10)
    last = _frames(out.getvalue())[-1]
    assert last.startswith("epoch 3/3 |") and "ETA " in last  # epoch 3 of 3 is under way
    assert "batch 5/10 loss 0.5 test 0.900 train 0.500 my-run" in last
    assert lines == []  # no plain lines beside the bar


def test_the_bar_moves_inside_an_epoch_and_fits_80_columns(monkeypatch):
    from genlab.training import progress as module

    monkeypatch.setattr(module, "REDRAW_S", 0.0)  # every step redrawn, to see each of them
    out = io.StringIO()
    record = {
        "epoch": 11,
        "train_loss": 0.31234,
        "train_acc": 0.8,
        "test_acc": 0.9,
        "test_vflip_acc": 0.4,
    }
    with EpochProgress("digits-conv4-w16-none-e80-s0-55f9a75b", 80, 10, print, bar=True,
                       file=out, columns=80) as bar:  # fmt: skip
        bar.update(record, "")
        for step in range(1, 783):
            bar.batch(step, 782)
    frames = _frames(out.getvalue())
    steps = [f for f in frames if " batch " in f]
    assert {f.split(" batch ")[1].split()[0] for f in steps} == {f"{i}/782" for i in range(1, 783)}
    assert all(len(f) <= 80 for f in frames), max(frames, key=len)
    # the key numbers stay visible at 80 columns: the loss, test and flipped-test accuracy
    assert "batch 782/782 loss 0.312 test 0.900 vflip 0.400" in steps[-1]
    assert bar.bar.n == 12  # epoch 11 recorded, and every step of epoch 12 run


def test_the_bar_redraws_at_most_every_few_steps_but_always_the_last(monkeypatch):
    from genlab.training import progress as module

    clock = iter(0.125 * i for i in range(1, 10_000))  # a fake clock: 1/8 s per step, exact
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(module, "REDRAW_S", 0.25)
    out = io.StringIO()
    with EpochProgress("r", 2, 0, print, bar=True, file=out, columns=100) as bar:
        for step in range(1, 1000):
            bar.batch(step, 999)
    drawn = [f.split(" batch ")[1].split()[0] for f in _frames(out.getvalue()) if " batch " in f]
    # every second step (a quarter second apart), and the last step whenever it comes (closing
    # the bar draws its last frame once more)
    assert list(dict.fromkeys(drawn)) == [f"{i}/999" for i in range(2, 999, 2)] + ["999/999"]
    assert len(drawn) == 499 + 1 + 1


def test_without_a_bar_steps_draw_nothing_and_each_epoch_is_one_line():
    out, lines = io.StringIO(), []
    with EpochProgress("r", 3, 0, lines.append, bar=False, file=out) as progress:
        for record in RECORDS:
            for step in range(1, 11):
                progress.batch(step, 10)
            progress.update(record, f"epoch {record['epoch']}/3")
    assert lines == ["epoch 1/3", "epoch 2/3", "epoch 3/3"] and out.getvalue() == ""


def test_the_width_comes_from_columns_and_80_when_unknown(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # what shutil.get_terminal_size reads first
    record = {**RECORDS[0], "test_vflip_acc": 0.5, "train_noisy_acc": 0.25}
    out = io.StringIO()
    with EpochProgress("a-run-name-" + "x" * 60, 5, 0, print, bar=True, file=out) as bar:
        bar.update(record, "")
        bar.batch(782, 782)
    assert bar.columns == 80
    frames = _frames(out.getvalue())
    assert frames and all(len(f) <= 80 for f in frames), max(frames, key=len)
    monkeypatch.setenv("COLUMNS", "0")  # a terminal that reports no size
    with EpochProgress("r", 5, 0, print, bar=True, file=io.StringIO()) as bar:
        assert bar.columns == 80


def test_a_terminal_of_no_size_still_shows_the_bar(monkeypatch):
    """A pseudo-terminal never sized (`script`, `docker run -t`) reports 0 x 0: tqdm took 0
    rows as no room for its bar and drew nothing (seen under `script`)."""
    import os
    import shutil

    import tqdm.std

    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    # what tqdm reads of such a terminal: its size less one, (-1, -1)
    monkeypatch.setattr(tqdm.std, "_screen_shape_wrapper", lambda: lambda _fp: (-1, -1))
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *_: os.terminal_size((0, 0)))
    with EpochProgress("r", 3, 0, print) as progress:
        progress.batch(1, 1)
    frames = _frames(sys.stderr.getvalue())
    assert "epoch 1/3 |" in frames[-1] and "batch 1/1" in frames[-2]
    assert all(len(f) <= 80 for f in frames)


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
    assert sys.stdout.getvalue() == "" and "epoch 2/3 |" in sys.stderr.getvalue()
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
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/acc", "test/loss", "test_vflip/acc"} <= tags
    classes = json.loads((run / DATASET).read_text())["classes"]  # named by dataset.json
    assert {f"per_class/test_vflip/{c}" for c in classes} <= tags and len(classes) == 4
    assert not {t for t in tags if "cohort" in t or "lanes" in t or "/" not in t}
    for key, name in (("train_loss", "train/loss"), ("test_vflip_acc", "test_vflip/acc")):
        got = [(e.step, e.value) for e in events.Scalars(name)]
        assert got == [(m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in metrics]
    got = [e.value for e in events.Scalars(f"per_class/test/{classes[3]}")]
    assert got == [pytest.approx(m["test_per_class_acc"][3], rel=1e-6) for m in metrics]
    hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"width" in hparams and b"augment" in hparams  # the run's settings


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(GenlabError, match=r"pip install 'genlab\[tensorboard\]'"):
        EpochProgress("r", 3, 0, print, tensorboard=tmp_path)
