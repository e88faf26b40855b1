"""``genlab rerun RUN``: a run's config again with changes; ``--continue`` from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genlab import cli, rerun
from genlab.runs import CHECKPOINT, CONFIG, KEPT, METRICS, SUMMARY

BASE = ["--dataset", "synthetic", "--width", "2", "--momentum", "0.9", "--device", "cpu"]
TIMES = ("seconds", "eval_seconds", "cohort")  # how long, and the folder names it trained with


def train(capsys, *args: str) -> Path:
    code = cli.main(["run", "robustness", *BASE, "--quiet", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return Path(out.split()[-1])


def do_rerun(capsys, run: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main(["rerun", str(run), "--device", "cpu", *args])
    out, err = capsys.readouterr()
    return code, out, err


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (folders too), with each file's bytes."""
    return {str(p): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def records(run: Path) -> list[dict]:
    lines = (run / METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in lines]


def test_rerun_with_a_change_trains_a_new_folder_and_leaves_run_alone(tmp_path, capsys):
    run = train(capsys, "--epochs", "1", "--out", str(tmp_path))
    before = files(run)
    code, out, err = do_rerun(capsys, run, "--width", "3", "--quiet")
    assert code == 0, err
    new = Path(out.split()[-1])
    assert new.parent == run.parent and new != run
    record = json.loads((new / CONFIG).read_text())
    assert record["config"]["width"] == 3 and record["config"]["momentum"] == 0.9
    assert "continued_from" not in record  # trained from the start
    assert [r["epoch"] for r in records(new)] == [1] and (new / SUMMARY).exists()
    assert files(run) == before


def test_rerun_without_a_change_is_the_run_itself(tmp_path, capsys):
    run = train(capsys, "--epochs", "1", "--out", str(tmp_path))
    before = files(run)
    code, out, err = do_rerun(capsys, run)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"rerun of {run}: no change"
    assert lines[1] == "robustness config:"
    assert f"{run}: finished already (use --force to run it again)" in lines
    assert lines[-1] == f"results: {run}"
    assert files(run) == before


def test_continue_is_bit_for_bit_the_run_trained_straight(tmp_path, capsys):
    """The learning rate is constant (no schedule depends on --epochs), the data order of epoch
    e comes from (seed, e), and the checkpoint holds the momentum buffers: training 1 epoch and
    continuing to 3 is training 3."""
    straight = train(capsys, "--epochs", "3", "--out", str(tmp_path / "straight"))
    run = train(capsys, "--epochs", "1", "--keep-checkpoints", "0", "1", "--out", str(tmp_path))
    before = files(run)
    code, out, err = do_rerun(
        capsys, run, "--epochs", "3", "--keep-checkpoints", "0", "1", "--continue", "--quiet"
    )
    assert code == 0, err
    new = Path(out.split()[-1])
    assert new.parent == run.parent and new.name == straight.name  # the same run, elsewhere
    assert files(run) == before  # never changed
    ours, theirs = (torch.load(p / CHECKPOINT, weights_only=True) for p in (new, straight))
    assert ours["epoch"] == theirs["epoch"] == 3
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in ours["model"])
    momenta = [s["momentum_buffer"] for s in ours["optimizer"]["state"].values()]
    straight_momenta = [s["momentum_buffer"] for s in theirs["optimizer"]["state"].values()]
    assert all(map(torch.equal, momenta, straight_momenta)) and len(momenta) > 0
    assert records(new) == records(straight)
    summary, straight_summary = (json.loads((p / SUMMARY).read_text()) for p in (new, straight))
    for s in (summary, straight_summary):
        for key in ("seconds", "seconds_per_epoch"):
            s.pop(key)
    assert summary == straight_summary
    assert (new / KEPT / "epoch-1.pt").read_bytes() == (run / KEPT / "epoch-1.pt").read_bytes()
    record = json.loads((new / CONFIG).read_text())
    assert record["continued_from"] == {"run": str(run.absolute()), "epoch": 1}
    assert record["identity"] == json.loads((straight / CONFIG).read_text())["identity"]
    # the same command again: that run, finished already (Run.open's identity check passes)
    after = files(new)
    code, out, err = do_rerun(
        capsys, run, "--epochs", "3", "--continue", "--keep-checkpoints", "0", "1"
    )
    assert code == 0, err
    assert f"{new}: finished already (use --force to run it again)" in out
    assert files(new) == after


def test_continue_from_python(tmp_path, capsys):
    from genlab.training.runtime import Runtime

    run = train(capsys, "--epochs", "1", "--out", str(tmp_path))
    rt = Runtime.resolve(device="cpu", quiet=True)
    planned = rerun.plan(run, {"epochs": 2}, precision=rt.precision, from_checkpoint=True)
    assert (planned.epoch, planned.changes) == (1, {"epochs": 2})
    new = rerun.start(planned, rt)
    assert [r["epoch"] for r in records(new)] == [1, 2]
    assert records(new)[0] == records(run)[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--width", "3", "--continue"],
            "--width 3 (the run's: 2) changes the epochs already trained, which the checkpoint "
            "cannot carry; rerun without --continue to train it from the start",
        ),
        (
            ["--dataset", "digits", "--continue"],
            "--dataset digits (the run's: synthetic) changes the epochs already trained",
        ),
        (["--epochs", "1", "--continue"], "--epochs 1 is fewer than the 2 it has trained"),
        (["--continue"], "the new config is the run's own (no change to its identity"),
        (
            ["--epochs", "4", "--keep-checkpoints", "1", "--continue"],
            "--keep-checkpoints 1: the run kept no checkpoint of epoch 1 (kept: 0), and the "
            "continued run starts after epoch 2",
        ),
        (["--epochs", "0"], "--epochs 0: must be >= 1"),
    ],
)
def test_rerun_errors_create_nothing(tmp_path, capsys, args, message):
    run = train(capsys, "--epochs", "2", "--out", str(tmp_path))
    before = tree(tmp_path)
    code, out, err = do_rerun(capsys, run, *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("genlab: error: ")
    assert message in err
    if "--continue" in args:
        assert err.startswith(f"genlab: error: --continue from {run}: ")
    assert tree(tmp_path) == before


def test_a_misspelt_flag_of_the_run_s_study(tmp_path, capsys):
    run = train(capsys, "--epochs", "1", "--out", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["rerun", str(run), "--widht", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: genlab rerun {run}")
    assert err.splitlines()[-1] == (
        f"genlab: error: --widht: no such flag of genlab rerun {run} (did you mean --width?)"
    )


def test_rerun_help_shows_the_run_s_values(tmp_path, capsys):
    run = train(capsys, "--epochs", "1", "--out", str(tmp_path))
    with pytest.raises(SystemExit):
        cli.main(["rerun", str(run), "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--width WIDTH Conv-4 width c (channels c, 2c, 4c, 8c) (default: 2)" in shown
    assert "--continue" in shown


def test_not_a_run_and_a_study_that_cannot_continue(tmp_path, capsys):
    code, _, err = do_rerun(capsys, tmp_path / "nothing")
    assert (code, err) == (1, f"genlab: error: {tmp_path / 'nothing'}: no such run folder\n")
    code, _, err = do_rerun(capsys, tmp_path)
    assert (code, err) == (1, f"genlab: error: {tmp_path}: not a run folder (no config.json)\n")
    linreg = tmp_path / "linreg" / "r"
    linreg.mkdir(parents=True)
    (linreg / CONFIG).write_text('{"study": "linreg", "config": {}, "identity": {}}')
    code, _, err = do_rerun(capsys, linreg, "--epochs", "5", "--continue")
    assert code == 1 and err == (
        f"genlab: error: --continue from {linreg}: linreg runs cannot be continued (only "
        "robustness, random-labels); rerun it without --continue\n"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "linreg", "r"]
