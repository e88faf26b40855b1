"""Every file of a run folder damaged in every way: resume, eval, figures and report each give
one line naming the file and how to recover (``--force``), or, for the report, list the run as
broken and go on. The damaged folders are built here from a real trained run."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from genlab import cli
from genlab.reporting.html import read_run
from genlab.runs import (
    CHECKPOINT,
    CONFIG,
    DATASET,
    ENV,
    FIGURES,
    INVARIANCE,
    METRICS,
    PREVIOUS,
    SUMMARY,
    VIEW_RESULTS,
)

COMMAND = ["robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "2", "--quiet"]


def genlab(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished run (with views.json and invariance.json), copied by each test."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["run", *COMMAND, "--out", str(out)]) == 0
    (run,) = (out / "robustness").iterdir()
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "runs" / "robustness" / trained.name
    shutil.copytree(trained, copy)
    return copy


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/genlab-pwned",))


def _checkpoint(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        path.write_bytes(_torch_bytes(edit(state)))

    return damage


def _wrong_shapes(state: dict) -> dict:
    key = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][key] = torch.zeros(3, 3, 3, 3)
    return state


def _wrong_momentum(state: dict) -> dict:
    state["optimizer"]["state"] = {0: {"momentum_buffer": torch.zeros(7)}}
    state["optimizer"]["param_groups"][0]["momentum"] = 0.9
    return state


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "nowhere")


def _self_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "empty": lambda p: p.write_bytes(b""),
    "cut": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)]),
    "garbage": lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x9c"),
    "a folder": _folder,
    "a dangling link": _dangling,
    "a link to itself": _self_link,
}
JSON_DAMAGES = {**DAMAGES, "a JSON list": lambda p: p.write_text("[1, 2, 3]")}
CHECKPOINT_DAMAGES = {
    **DAMAGES,
    "code in a pickle": lambda p: p.write_bytes(_torch_bytes({"epoch": 1, "x": _Evil()})),
    "a plain pickle": lambda p: p.write_bytes(pickle.dumps({"epoch": 2})),
    "not a dict": lambda p: p.write_bytes(_torch_bytes([1, 2])),
    "no model": _checkpoint(lambda s: {k: v for k, v in s.items() if k != "model"}),
    "missing keys": _checkpoint(lambda s: {**s, "model": dict(list(s["model"].items())[1:])}),
    "wrong shapes": _checkpoint(_wrong_shapes),
    "optimizer of other shapes": _checkpoint(_wrong_momentum),
    "a later epoch": _checkpoint(lambda s: {**s, "epoch": 9}),
}


def _metrics(edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    return lambda p: p.write_text("".join(f"{line}\n" for line in edit(p.read_text().splitlines())))


METRICS_DAMAGES = {
    **DAMAGES,
    "a garbage line": _metrics(lambda lines: [lines[0], "{not json", *lines[1:]]),
    "a line that is no object": _metrics(lambda lines: [lines[0], "[1]", *lines[1:]]),
    "epochs out of order": _metrics(lambda lines: lines[::-1]),
    "a lost record": _metrics(lambda lines: lines[1:]),
}


def _cases() -> list[tuple[str, str, Callable[[Path], None]]]:
    cases = [(CHECKPOINT, name, d) for name, d in CHECKPOINT_DAMAGES.items()]
    cases += [(METRICS, name, d) for name, d in METRICS_DAMAGES.items()]
    for file in (CONFIG, SUMMARY, ENV, DATASET, VIEW_RESULTS, INVARIANCE):
        cases += [(file, name, d) for name, d in JSON_DAMAGES.items()]
    cases.append((DATASET, "no classes", lambda p: p.write_text('{"name": "x"}')))
    cases.append((CONFIG, "no identity", lambda p: p.write_text('{"study": "robustness"}')))
    cases.append((CONFIG, "an unknown study", _unknown_study))
    return cases


def _unknown_study(path: Path) -> None:
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "study": "alchemy"}))


def _one_line(code: int, err: str, file: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genlab: error: "), err
    assert file in lines[0], err
    assert "weights_only" not in err and "Traceback" not in err, err


def _reads(command: str, file: str, damage: str) -> bool:
    """Whether ``command`` reads ``file`` (so must fail on it)."""
    if file == CHECKPOINT:  # eval loads the weights only, whatever the epoch
        later = damage in ("optimizer of other shapes", "a later epoch")
        return command == "resume" or (command == "eval" and not later)
    if file == METRICS and damage in ("empty", "cut", "garbage", "a lost record"):
        # what a kill can leave (a cut last line is dropped), or readable records: only
        # resuming finds them short of the checkpoint
        return command == "resume"
    if command == "eval" and file in (SUMMARY, ENV, VIEW_RESULTS, INVARIANCE, METRICS):
        return True  # checked, though eval does not need all: a damaged run is not measured
    return True


CASES = _cases()
IDS = [f"{file}: {name}" for file, name, _ in CASES]


@pytest.mark.parametrize(("file", "name", "damage"), CASES, ids=IDS)
def test_resume_names_the_damaged_file(run, capsys, file, name, damage):
    (run / SUMMARY).unlink()  # unfinished: the command resumes it
    shutil.rmtree(run / FIGURES)
    if file != SUMMARY:
        damage(run / file)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_symlink()}
    code, _, err = genlab(capsys, "run", *COMMAND, "--out", str(run.parent.parent))
    if file == SUMMARY:
        assert code == 0, err  # no summary to damage: it resumed and finished
        return
    if not _reads("resume", file, name):
        assert code == 0, err
        return
    _one_line(code, err, file)
    assert "delete" in err or "--force" in err  # how to recover
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_symlink()}
    if ENV in before and file != ENV:  # the attempt is recorded under "resumed", nothing else
        old, new = json.loads(before.pop(ENV)), json.loads(after.pop(ENV))
        if new != old:
            assert new.pop("resumed")[-1]["pid"] == os.getpid() and new == old
    assert after == before  # nothing else of it was changed
    assert not list(run.parent.glob(".*.lock"))


@pytest.mark.parametrize(("file", "name", "damage"), CASES, ids=IDS)
def test_eval_and_figures_name_the_damaged_file(run, capsys, file, name, damage):
    damage(run / file)
    for command in ("eval", "figures"):
        shutil.rmtree(run / FIGURES, ignore_errors=True)
        code, _, err = genlab(capsys, command, str(run))
        if file == CONFIG and name in ("a dangling link", "a link to itself", "a folder"):
            assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
            continue  # no config.json: not a run folder, as the line says
        if not _reads(command, file, name) or (command == "figures" and file == CHECKPOINT):
            assert code == 0, err
            continue
        _one_line(code, err, file if name != "an unknown study" else "alchemy")


@pytest.mark.parametrize(("file", "name", "damage"), CASES, ids=IDS)
def test_report_lists_a_damaged_run_and_goes_on(run, trained, tmp_path, capsys, file, name, damage):
    damage(run / file)
    code, out, err = genlab(capsys, "report", str(run), str(trained), "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert trained.name in page  # the good run is there
    state = read_run(run, draw_missing=False).state
    if file == CONFIG and name in ("a dangling link", "a link to itself", "a folder"):
        assert state == "broken" and run.name in page
    elif file == CHECKPOINT or not _reads("report", file, name) or name == "an unknown study":
        assert state == "finished"  # no checkpoint read; another study: a section of its own
    else:
        assert state == "broken" and run.name in page


def test_a_cut_last_line_is_what_a_kill_leaves_and_resumes(run, capsys):
    (run / SUMMARY).unlink()
    text = (run / METRICS).read_text()
    (run / METRICS).write_text(text + text.splitlines()[-1][:17])  # a third record, cut
    code, _, err = genlab(capsys, "run", *COMMAND, "--out", str(run.parent.parent))
    assert code == 0, err
    assert (run / METRICS).read_text() == text  # the cut line dropped, nothing else changed


def test_no_code_runs_from_a_checkpoint(run, capsys):
    Path("/tmp/genlab-pwned").unlink(missing_ok=True)
    for name in (CHECKPOINT, PREVIOUS):
        CHECKPOINT_DAMAGES["code in a pickle"](run / name)
    (run / SUMMARY).unlink()
    code, _, err = genlab(capsys, "run", *COMMAND, "--out", str(run.parent.parent))
    _one_line(code, err, CHECKPOINT)
    assert "refuses" in err and not Path("/tmp/genlab-pwned").exists()


def test_the_real_command_prints_one_line(run):
    """The same through a real process: exit 1, one line on stderr, no traceback."""
    CHECKPOINT_DAMAGES["wrong shapes"](run / CHECKPOINT)
    (run / SUMMARY).unlink()
    done = subprocess.run(
        [sys.executable, "-m", "genlab", "run", *COMMAND, "--out", str(run.parent.parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    _one_line(done.returncode, done.stderr, CHECKPOINT)
    assert "does not fit" in done.stderr
