"""Bad input at its extremes and every place genlab writes: one line (``genlab: error: ...``),
exit 1, nothing earlier damaged, nothing half-made; a full disk, SIGTERM and a failed start
leave what the next command resumes from."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genlab import cli
from genlab.errors import GenlabError
from genlab.fileio import temp_prefix
from genlab.runs import CHECKPOINT, FIGURE_LIST, FIGURES, METRICS, SUMMARY, Run
from genlab.studies import STUDIES

ROBUSTNESS = ["run", "robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "2"]


def genlab(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genlab: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def leftovers(folder: Path) -> list[Path]:
    """Run folders, locks and temporary files under ``folder``."""
    if not folder.exists():
        return []
    found = [p for p in folder.rglob("*") if p.name.endswith((".lock", ".tmp", ".part"))]
    return found + [p.parent for p in folder.rglob("config.json")]


# -- every numeric setting at its extremes -----------------------------------------------------
EXTREMES = [
    ("robustness", "seed", 2**64, "--seed"),
    ("robustness", "seed", -1, "--seed"),
    ("robustness", "momentum", -0.5, "--momentum"),
    ("robustness", "momentum", 1.0, "--momentum"),
    ("robustness", "weight_decay", float("inf"), "--weight-decay"),
    ("robustness", "weight_decay", -1.0, "--weight-decay"),
    ("robustness", "lr", float("inf"), "--lr"),
    ("robustness", "lr", float("nan"), "--lr"),
    ("robustness", "epochs", 2**70, "--epochs"),
    ("robustness", "batch_size", 0, "--batch-size"),
    ("robustness", "width", 2**63, "--width"),
    ("robustness", "width", 0, "--width"),
    ("random-labels", "label_noise", float("nan"), "--label-noise"),
    ("random-labels", "label_noise", 1.5, "--label-noise"),
    ("random-labels", "seed", 2**63, "--seed"),
    ("memorization-map", "stop_at_train_acc", float("inf"), "--stop-at-train-acc"),
    ("memorization-map", "noise_levels", (0.0, float("nan")), "--noise-levels"),
    ("memorization-map", "widths", (1, 2**64), "--widths"),
    ("memorization-map", "n", 2**64, "--n"),
    ("linreg", "seed", 2**63, "--seed"),
    ("linreg", "r", float("inf"), "--r"),
    ("linreg", "sigma", float("nan"), "--sigma"),
    ("linreg", "n", 2**64, "--n"),
    ("linreg", "lr", "inf", "--lr"),
]


def _typed(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, tuple) else [str(value)]


@pytest.mark.parametrize(("study", "field", "value", "flag"), EXTREMES)
def test_a_setting_at_its_extremes_is_one_line(tmp_path, capsys, study, field, value, flag):
    with pytest.raises(GenlabError, match=flag):
        STUDIES[study].config(**{field: value})
    out = tmp_path / "runs"
    code, _, err = genlab(capsys, "run", study, flag, *_typed(value), "--out", str(out))
    one_line(code, err, flag)
    assert leftovers(out) == []


@pytest.mark.parametrize(("field", "value"), [("width", "8"), ("lr", "0.1"), ("seed", 1.5)])
def test_a_value_of_the_wrong_type_from_python_is_one_error(field, value):
    with pytest.raises(GenlabError, match=f"--{field}"):
        STUDIES["robustness"].config(**{field: value})


# -- every place genlab writes -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_out_that_is_a_file(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "runs"
    code, _, err = genlab(capsys, *ROBUSTNESS, "--out", str(out))
    one_line(code, err, str(blocker), "not a folder")
    assert blocker.read_text() == "keep me"
    code, _, err = genlab(capsys, "sweep", "robustness", "--seeds", "2", "--out", str(out))
    one_line(code, err, str(blocker))


def test_a_report_out_that_is_a_file(tmp_path, capsys):
    assert genlab(capsys, *ROBUSTNESS, "--quiet", "--out", str(tmp_path / "runs"))[0] == 0
    blocker = tmp_path / "report"
    blocker.write_text("keep me")
    code, _, err = genlab(capsys, "report", str(tmp_path / "runs"), "--out", str(blocker))
    one_line(code, err, str(blocker))
    assert blocker.read_text() == "keep me"


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` at ``folder`` (mount needs root and CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def test_a_read_only_file_system(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "64m") as disk:
        out = disk / "runs"
        assert genlab(capsys, *ROBUSTNESS, "--quiet", "--out", str(out))[0] == 0
        (run,) = (out / "robustness").iterdir()
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        shutil.rmtree(run / FIGURES)
        remount(disk, "ro")
        try:
            for args in (
                [*ROBUSTNESS, "--out", str(out)],  # finished: its figures are drawn again
                [*ROBUSTNESS, "--seed", "1", "--out", str(out)],  # a new run
                ["eval", str(run), "--views", "vflip"],
                ["figures", str(run)],
                ["report", str(out), "--out", str(disk / "report")],
            ):
                code, _, err = (
                    genlab(capsys, *args, "--quiet") if args[0] == "run" else genlab(capsys, *args)
                )
                one_line(code, err, str(disk), "Read-only file system")
        finally:
            remount(disk, "rw")
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        assert after == {p: b for p, b in before.items() if FIGURES not in p.parts}


def _wait_for(condition, process: subprocess.Popen, what: str) -> None:
    """Until ``condition()`` (an event in the run folder); the process must still be running.
    The deadline only keeps a broken run from hanging the suite."""
    deadline = time.monotonic() + 600
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} in 600 s")
        time.sleep(0.01)


def _records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


DIGITS = ["run", "robustness", "--width", "4", "--epochs", "6", "--views", "vflip", "--quiet"]
TIMING = ("seconds", "eval_seconds", "seconds_per_epoch")


def _genlab_process(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "GENLAB_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "genlab", *DIGITS, *extra, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted digits run that the interrupted ones must equal."""
    out = tmp_path_factory.mktemp("reference")
    done = subprocess.run(
        [sys.executable, "-m", "genlab", *DIGITS, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "GENLAB_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    (run,) = (out / "robustness").iterdir()
    return run


def _same_run(run: Path, reference: Path) -> None:
    ours = torch.load(run / CHECKPOINT, weights_only=True)
    theirs = torch.load(reference / CHECKPOINT, weights_only=True)
    assert ours["epoch"] == theirs["epoch"]
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key

    def untimed(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in records]

    assert untimed(_records(run / METRICS)) == untimed(_records(reference / METRICS))
    assert sorted(p.name for p in (run / FIGURES).iterdir()) == sorted(
        p.name for p in (reference / FIGURES).iterdir()
    )
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_mid_run_is_one_line_and_resumes_to_the_same_run(tmp_path, reference):
    with tmpfs(tmp_path / "disk", "32m") as disk:
        out = disk / "runs"
        process = _genlab_process(out)
        metrics = out / "robustness" / reference.name / METRICS
        _wait_for(lambda: len(_records(metrics)) >= 2, process, "a second epoch")
        process.send_signal(signal.SIGSTOP)  # filled while it waits: it meets a full disk
        filler = _fill(disk)
        process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=600)
        one_line(process.returncode, err, "No space left on device", "re-run")
        run = out / "robustness" / reference.name
        state = torch.load(run / CHECKPOINT, weights_only=True)  # the last good one
        records = _records(run / METRICS)
        # (each epoch's checkpoint frees the space of the one before last: a full disk can
        # let training go on and fail at the figures; wherever it failed, this holds)
        assert 1 <= state["epoch"] <= len(records) <= state["epoch"] + 1
        filler.unlink()
        again = _genlab_process(out)
        _, err = again.communicate(timeout=600)
        assert again.returncode == 0, err
        _same_run(run, reference)


def test_sigterm_stops_like_ctrl_c_and_resumes_to_the_same_run(tmp_path, reference):
    out = tmp_path / "runs"
    process = _genlab_process(out)
    run = out / "robustness" / reference.name
    _wait_for(lambda: len(_records(run / METRICS)) >= 1, process, "a first epoch")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    if process.returncode == 0:
        pytest.fail("the run finished before SIGTERM reached it")
    assert process.returncode == 143, err
    assert err.strip().splitlines() == ["genlab: terminated; re-run the same command to resume"]
    torch.load(run / CHECKPOINT, weights_only=True)  # intact
    assert not list(run.parent.glob(".*.lock")) and not list(run.glob("*.tmp"))
    again = _genlab_process(out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    _same_run(run, reference)


# -- a failed start leaves nothing -------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--dataset", "/no/such/folder"], "/no/such/folder"),
        (["--device", "cuda:7"], "--device"),
        (["--dataset", "cifar10"], "download failed"),  # no network: a refused proxy
        (["--dataset", "cifar10", "--data-dir", "/no/such"], "--data-dir"),
    ],
)
def test_a_failed_start_leaves_no_run_folder_and_no_lock(tmp_path, args, fragment):
    out = tmp_path / "runs"
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "genlab", "run", "robustness", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    one_line(done.returncode, done.stderr, fragment)
    assert leftovers(out) == []
    report = subprocess.run(
        [sys.executable, "-m", "genlab", "report", str(out)], capture_output=True, text=True
    )
    assert report.returncode == 1 and "no run folders found" in report.stderr


def test_an_interrupted_start_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    """Ctrl-C (or SIGTERM) while the data loads, before any epoch: nothing to resume stays."""
    import genlab.studies.common as common

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "load_dataset", interrupted)
    out = tmp_path / "runs"
    code, _, err = genlab(capsys, *ROBUSTNESS, "--out", str(out))
    assert code == 130 and "re-run" in err
    assert leftovers(out) == []


# -- figures cut while drawing -----------------------------------------------------------------
def test_figures_cut_while_drawing_are_all_there_after_the_next_command(tmp_path, capsys):
    out = tmp_path / "runs"
    assert genlab(capsys, *ROBUSTNESS, "--quiet", "--out", str(out))[0] == 0
    (run,) = (out / "robustness").iterdir()
    drawn = sorted(p.name for p in (run / FIGURES).iterdir())
    # what a kill (or a full disk) leaves while drawing: no list yet, some figures missing, a
    # temporary file of the dead writer (and one of a live writer, ours, not to be touched)
    (run / FIGURES / FIGURE_LIST).unlink()
    for png in sorted((run / FIGURES).glob("*.png"))[1:]:
        png.unlink()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    )
    dead_pid = int(dead.stdout)
    stale = (
        run
        / FIGURES
        / temp_prefix(run / FIGURES / "accuracy.png").replace(f"-{os.getpid()}.", f"-{dead_pid}.")
    )
    stale = stale.with_name(stale.name + "abc.tmp")
    stale.write_bytes(b"half a png")
    live = run / f"{temp_prefix(run / SUMMARY)}xyz.tmp"
    live.write_bytes(b"being written")
    assert genlab(capsys, *ROBUSTNESS, "--quiet", "--out", str(out))[0] == 0
    assert sorted(p.name for p in (run / FIGURES).iterdir()) == drawn
    assert not stale.exists() and live.exists()


# -- a cohort cut between its members' writes --------------------------------------------------
SWEEP = ["sweep", "robustness", "--dataset", "synthetic", "--width", "4", "--epochs", "3"]


def _sweep_runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob(SUMMARY))


def _cut_after(run: Path, epoch: int) -> None:
    """The files a kill leaves in a member that had not yet saved epoch ``epoch + 1``."""
    previous = torch.load(run / "previous.pt", weights_only=True)
    assert previous["epoch"] == epoch
    os.replace(run / "previous.pt", run / CHECKPOINT)
    lines = (run / METRICS).read_text().splitlines()[:epoch]
    (run / METRICS).write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.parametrize("previous", [True, False])
def test_a_cohort_cut_between_members_trains_the_epoch_again_together(
    tmp_path, capsys, monkeypatch, previous
):
    """Four seeds of width 4 train as one grouped cohort (one thread: one lane, a chunk of 4).
    A kill after the first member saved epoch 3 but before the others did: the first goes back
    to epoch 2 and the four train epoch 3 together again, bit for bit the uninterrupted sweep.
    Without previous.pt that cannot be done, and the records say how it was computed instead."""
    reference, cut = tmp_path / "reference", tmp_path / "cut"
    assert genlab(capsys, *SWEEP, "--seeds", "4", "--quiet", "--out", str(reference))[0] == 0
    runs = _sweep_runs(reference)
    assert [json.loads(line)["group_size"] for line in (runs[0] / METRICS).open()] == [4, 4, 4]

    def killed(*_args, **_kwargs):  # a kill after every member trained, before any summary
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Run, "write_summary", killed)
        assert genlab(capsys, *SWEEP, "--seeds", "4", "--quiet", "--out", str(cut))[0] == 130
    first, *others = sorted(p.parent for p in cut.rglob(CHECKPOINT))
    for run in others:
        _cut_after(run, 2)
    if not previous:
        (first / "previous.pt").unlink()
    code, out, err = genlab(capsys, *SWEEP, "--seeds", "4", "--out", str(cut))
    assert code == 0, err
    assert (f"{first}: its cohort-mate" in out) and (("back to epoch 2" in out) == previous)
    for ours, theirs in zip(_sweep_runs(cut), runs, strict=True):
        a = torch.load(ours / CHECKPOINT, weights_only=True)["model"]
        b = torch.load(theirs / CHECKPOINT, weights_only=True)["model"]
        last = json.loads((ours / METRICS).read_text().splitlines()[-1])
        if previous:
            assert all(torch.equal(a[k], b[k]) for k in b), ours.name
            assert last["group_size"] == 4 and len(last["cohort"]) == 4
        elif ours != first:
            assert last["group_size"] == 3 and len(last["cohort"]) == 3  # recorded: it changed
