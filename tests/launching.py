"""What the launcher tests share: a small digits sweep, running it here and through a launcher,
comparing two sweep folders member by member, and waiting for a member to be mid-training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from genlab.cli import main
from genlab.locks import lock_state

# digits members of about a second per epoch on one thread at width 8
DIGITS = ["--dataset", "digits", "--train-subset", "300", "--batch-size", "32", "--views", "none"]
TIMING = {"seconds", "eval_seconds", "seconds_per_epoch"}  # wall clock: differs run to run
WAIT_S = 600  # the longest any event is waited for (a loaded CI machine), never a pass condition


def sweep_args(out: Path, *settings: str) -> list[str]:
    return ["sweep", "robustness", *DIGITS, *settings, "--out", str(out)]


def run_local(out: Path, *settings: str) -> Path:
    """The same sweep trained in this process, on one thread (what each launcher task uses)."""
    assert main([*sweep_args(out, *settings), "--quiet"]) == 0
    return folder_of(out)


def folder_of(out: Path) -> Path:
    (folder,) = (p for p in (out / "robustness").iterdir() if p.name.startswith("sweep-"))
    return folder


def genlab(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``genlab ARGS`` as its own process (what a user types), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "genlab", *args],
        env={**os.environ, "GENLAB_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=WAIT_S)
    return proc.returncode, out, err


def members(folder: Path) -> list[Path]:
    return [
        folder / m["run_id"] for m in json.loads((folder / "sweep.json").read_text())["members"]
    ]


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_results(a: Path, b: Path) -> None:
    """Two sweep folders hold the same members with equal metrics, summaries and final
    weights (bitwise), and the same aggregate."""
    runs_a, runs_b = members(a), members(b)
    assert [p.name for p in runs_a] == [p.name for p in runs_b]
    for x, y in zip(runs_a, runs_b, strict=True):
        assert records(x) == records(y), x.name
        sx, sy = (_without_timing(json.loads((p / "summary.json").read_text())) for p in (x, y))
        assert sx == sy, x.name
        wx, wy = (torch.load(p / "checkpoint.pt", weights_only=True)["model"] for p in (x, y))
        assert wx.keys() == wy.keys()
        for key in wx:
            assert torch.equal(wx[key], wy[key]), (x.name, key)
    agg = [json.loads((f / "aggregate.json").read_text()) for f in (a, b)]
    assert _without_timing(agg[0]) == _without_timing(agg[1])


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


def trained_once(folder: Path) -> None:
    """Each member was started by one process and never resumed, and holds each epoch once."""
    for run_dir in members(folder):
        env = json.loads((run_dir / "env.json").read_text())
        assert "resumed" not in env, (run_dir.name, env.get("resumed"))
        epochs = [r["epoch"] for r in records(run_dir)]
        assert epochs == list(range(1, len(epochs) + 1))


def mid_training(folder: Path, proc: subprocess.Popen | None = None) -> tuple[Path, dict]:
    """Wait for a member that is being trained (its lock held) and has at least one epoch on
    disk but is not finished; returns it and its lock's record (host, pid)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended first: {proc.communicate()}")
        if (folder / "sweep.json").exists():
            for run_dir in members(folder):
                holder = lock_state(run_dir)
                metrics = run_dir / "metrics.jsonl"
                done = (run_dir / "summary.json").exists()
                if holder and not done and metrics.exists() and metrics.read_text().strip():
                    return run_dir, holder
        time.sleep(0.05)
    raise AssertionError(f"no member of {folder} was seen mid-training")


def wait_for_sweep_folder(out: Path, proc: subprocess.Popen | None = None) -> Path:
    """Wait for the one robustness sweep folder under ``out`` to appear; returns it."""
    parent = out / "robustness"
    deadline = time.monotonic() + WAIT_S
    while not (parent.exists() and any(p.name.startswith("sweep-") for p in parent.iterdir())):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended first: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no sweep folder appeared under {out}"
        time.sleep(0.05)
    return folder_of(out)
