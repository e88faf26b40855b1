"""A crash campaign (issue 14): real genlab processes killed with SIGKILL at random moments resume
to what an uninterrupted run writes, bit for bit, and leave no file truncated or half-written.

Three small commands (a digits robustness run, a random-labels grid, a memorization map) each run
once uninterrupted: the reference. Its file events are recorded as they are seen on disk (a
metrics.jsonl line, a checkpoint.pt replaced, a temporary file of an atomic write, summary.json, a
figure), in three phases: training, results (summary, views, aggregate) and figures. A trial
starts the command afresh, waits for one of those events (drawn at random, the phases taken in
turn so kills land in training, between a metrics line and its checkpoint, in the results and
while figures are drawn), waits a random delay shorter than the reference's gap to the next
event, and kills the process group with SIGKILL; every third trial kills the resumed process once
more. Then the command runs to the end and must exit 0, and its folder must equal the
reference's: the same files (no temporary ``.NAME.*.tmp`` or ``.part`` file left), every JSON and
JSONL file whole and equal but for wall-clock keys (any key holding "seconds"), checkpoints equal
tensor for tensor (but "rng": the state of the process's own generator, which PyTorch seeds at
random in every process, so two uninterrupted runs differ there too), every PNG whole. A trial whose process ended before its kill is drawn again.

Time only spreads the kills; what is asserted never depends on it. The campaign seed is printed
and fixes every draw: replay a failure with

    GENLAB_CRASH_SEED=<seed> .venv/bin/python -m pytest -q -m slow tests/test_crash_campaign.py -s

(``GENLAB_CRASH_COMMANDS=memorization-map`` keeps only the named commands, comma-separated).
About 3 minutes on 2 quiet CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

COMMON = ["--device", "cpu", "--quiet"]
COMMANDS: dict[str, list[str]] = {  # name -> genlab arguments; each about 10 s on one thread
    "robustness": "run robustness --width 4 --epochs 4".split(),
    "random-labels-grid": (
        "run random-labels --grid --width 4 --epochs 3 --train-subset 300 --test-subset 200"
    ).split(),
    "memorization-map": (
        "run memorization-map --n 200 --widths 2 4 --noise-levels 0 1 --epochs 3"
    ).split(),
}
TRIALS = {"robustness": 4, "random-labels-grid": 4, "memorization-map": 5}
PHASES = ("training", "figures", "training", "results")  # trial i kills in PHASES[i % 4]
ATTEMPTS = 5  # draws per trial before its kill lands; the last kills right after a training event
POLL_S = 0.002
WAIT_S = 600  # the longest a process is waited for (a loaded machine), never a pass condition
# genlab.fileio's temporary files, ".<target>[.<host>-<pid>].<random>.tmp", and downloads' ".part"
TEMPORARY = re.compile(r"^\.(?P<target>.+?)(\.[^.]+-\d+)?\.[^.]+\.tmp$|\.part$")
RESULTS = {"summary.json", "views.json", "invariance.json", "aggregate.json", "aggregate.csv"}
PNG_END = b"IEND\xaeB`\x82"


# -- watching a folder's files ----------------------------------------------------------------


@dataclass
class Event:
    name: str  # "robustness/RUN/metrics.jsonl+3": 3 lines; "RUN/checkpoint.pt#2": 2nd version
    seconds: float  # since the process started

    @property
    def phase(self) -> str:
        path = self.name.rsplit("#", 1)[0].rsplit("+", 1)[0]
        parts = path.removesuffix(" (temporary)").split("/")
        if "figures" in parts[:-1]:
            return "figures"
        return "results" if parts[-1] in RESULTS else "training"


class Watch:
    """Polls a folder: every file that appears or changes is an event, named by its path and
    what it holds (lines of a .jsonl, the version of anything else, each temporary file once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats: dict[str, tuple[int, int, int]] = {}
        self.versions: dict[str, int] = {}
        self.start = time.monotonic()
        self.events: list[Event] = []

    def poll(self) -> list[Event]:
        new = []
        for dirpath, _, files in os.walk(self.root):
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                rel = os.path.relpath(path, self.root)
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                if self.stats.get(rel) == key:
                    continue
                first = rel not in self.stats
                self.stats[rel] = key
                name = self._name(rel, path, first)
                if name is not None:
                    new.append(Event(name, time.monotonic() - self.start))
        self.events += new
        return new

    def _name(self, rel: str, path: str, first: bool) -> str | None:
        folder, base = os.path.split(rel)
        tmp = TEMPORARY.search(base)
        if tmp:  # each temporary file once, numbered per target
            if not first:
                return None
            target = os.path.join(folder, f"{tmp['target'] or base} (temporary)")
            self.versions[target] = self.versions.get(target, 0) + 1
            return f"{target}#{self.versions[target]}"
        if base.endswith(".jsonl"):
            try:
                lines = Path(path).read_bytes().count(b"\n")
            except FileNotFoundError:
                return None
            if self.versions.get(rel) == lines:
                return None
            self.versions[rel] = lines
            return f"{rel}+{lines}"
        self.versions[rel] = self.versions.get(rel, 0) + 1
        return f"{rel}#{self.versions[rel]}"


def genlab(args: list[str], out: Path, log: Path) -> subprocess.Popen:
    """``genlab ARGS --out OUT`` as a process group of its own (a kill takes any children)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "genlab", *args, *COMMON, "--out", str(out)],
            env={**os.environ, "GENLAB_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def watch_to_end(args: list[str], out: Path, log: Path) -> tuple[int, Watch]:
    proc, watch = genlab(args, out, log), Watch(out)
    deadline = time.monotonic() + WAIT_S
    while proc.poll() is None:
        watch.poll()
        assert time.monotonic() < deadline, f"{args} ran over {WAIT_S} s"
        time.sleep(POLL_S)
    watch.poll()
    return proc.returncode, watch


@dataclass
class Kill:
    """Kill after ``event`` (or any event the reference saw after it) plus ``delay_s``; or,
    with ``after_events``, after that many events of this process."""

    event: str | None
    later: frozenset[str]
    delay_s: float
    after_events: int = 0

    def __str__(self) -> str:
        what = (
            self.event if self.after_events == 0 else f"its own file event no. {self.after_events}"
        )
        return f"after {what} + {self.delay_s * 1000:.0f} ms"


def kill_at(args: list[str], out: Path, log: Path, kill: Kill) -> tuple[str, str]:
    """Start the command and kill it as ``kill`` says; returns "killed", "finished" (exit 0
    before the kill) or "failed" (another exit of its own), and what was seen. Files already in
    ``out`` (left by an earlier kill) are not events."""
    watch = Watch(out)
    watch.poll()
    watch.events.clear()
    proc = genlab(args, out, log)
    deadline = time.monotonic() + WAIT_S
    fired = None
    while fired is None and proc.poll() is None:
        for e in watch.poll():
            if kill.after_events and len(watch.events) >= kill.after_events:
                fired = e.name
            elif e.name == kill.event or e.name in kill.later:
                fired = e.name
            if fired:
                break
        assert time.monotonic() < deadline, f"{args} ran over {WAIT_S} s"
        time.sleep(POLL_S)
    if fired is None:
        return ("finished" if proc.returncode == 0 else "failed"), (
            f"exited {proc.returncode} before its kill event"
        )
    time.sleep(kill.delay_s)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # a process that just exited is a zombie: still there
    if proc.wait() != -signal.SIGKILL:
        state = "finished" if proc.returncode == 0 else "failed"
        return state, f"saw {fired}, exited {proc.returncode} before its kill"
    last = [e.name for e in watch.poll()]
    seen = f"fired on {fired}" + (f"; then saw {', '.join(last)}" if last else "")
    return "killed", seen


# -- comparing two output folders -------------------------------------------------------------


def without_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if "seconds" not in str(k)}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``b`` differs from the reference ``a``: key paths with both values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{where}: {type(a).__name__} vs {type(b).__name__}"]
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"]
        if torch.equal(a, b):
            return []
        if a.is_floating_point():
            gap = (a.double() - b.double()).abs().max().item()
            return [f"{where}: tensors differ, max |diff| {gap:.3g}"]
        return [f"{where}: tensors differ in {int((a != b).sum())} of {a.numel()} entries"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: missing" for k in a if k not in b]
        out += [f"{where}.{k}: extra ({b[k]!r:.80})" for k in b if k not in a]
        for k in a:
            if k in b:
                out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{where}[{i}]")
        ]
    if a != b or type(a) is not type(b):
        return [f"{where}: {a!r:.80} vs {b!r:.80}"]
    return []


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def read_whole(path: Path) -> tuple[Any, str | None]:
    """The content of a result file and why it is not whole (None when it is)."""
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text()), None
        except ValueError as e:
            return None, f"not whole JSON ({e})"
    if path.suffix == ".jsonl":
        text, rows = path.read_text(), []
        if text and not text.endswith("\n"):
            return None, "last line cut"
        for i, line in enumerate(text.splitlines()):
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                return None, f"line {i + 1} not whole JSON ({e})"
        return rows, None
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: v for k, v in r.items() if "seconds" not in str(k)} for r in rows], None
    if path.suffix == ".pt":  # without "rng": a record of the process's own, randomly seeded
        try:
            state = torch.load(path, weights_only=True)
            return {k: v for k, v in state.items() if k != "rng"}, None
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same finding
            return None, f"unreadable checkpoint ({type(e).__name__}: {e})"
    if path.suffix == ".png":
        data = path.read_bytes()
        return None, None if data.endswith(PNG_END) else f"PNG cut at {len(data)} bytes"
    return path.read_bytes(), None


def compare(ref: Path, got: Path) -> list[str]:
    """Everything in ``got`` that differs from the reference folder ``ref``."""
    a, b = files(ref), files(got)
    out = [f"{p}: missing" for p in sorted(a - b)]
    for p in sorted(b - a):
        temporary = TEMPORARY.search(Path(p).name)
        out.append(f"{p}: temporary file left" if temporary else f"{p}: extra file")
    for p in sorted(b):
        mine, broken = read_whole(got / p)
        if broken:
            out.append(f"{p}: {broken}")
            continue
        if p not in a or Path(p).name == "env.json" or p.endswith(".png"):
            continue  # env.json records pids and resumptions; figures: present and whole
        theirs, _ = read_whole(ref / p)
        if isinstance(theirs, bytes):
            if theirs != mine:
                out.append(f"{p}: bytes differ")
            continue
        out += [f"{p}{d}" for d in differences(without_timing(theirs), without_timing(mine))]
    return out


# -- the campaign -----------------------------------------------------------------------------


@dataclass
class Trial:
    command: str
    index: int
    seed: str  # the random.Random seed of its draws
    kills: list[str] = field(default_factory=list)
    finished_first: int = 0
    outcome: str = ""
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{self.command} trial {self.index} (draws seeded {self.seed!r})"
        kills = "; ".join(self.kills) or "no kill landed"
        return f"{head}: {self.outcome.upper()} — {kills}" + "".join(
            f"\n      {d}" for d in self.details
        )


def draw(rng: random.Random, ref: list[Event], end_s: float, phase: str, last: bool) -> Kill:
    """A kill in ``phase`` of the reference's events; on the last attempt, right after a
    training event (always followed by more work, so it lands)."""
    phase = "training" if last else phase
    candidates = [i for i, e in enumerate(ref) if e.phase == phase] or list(range(len(ref)))
    k = rng.choice(candidates)
    gap = (ref[k + 1].seconds if k + 1 < len(ref) else end_s) - ref[k].seconds
    delay = 0.0 if last or rng.random() < 0.3 else rng.uniform(0, min(gap, 1.0))
    return Kill(ref[k].name, frozenset(e.name for e in ref[k + 1 :]), delay)


def run_trial(
    trial: Trial, args: list[str], ref_out: Path, ref: list[Event], end_s: float, base: Path
) -> None:
    double = trial.index % 3 == 2
    for attempt in range(ATTEMPTS):
        rng = random.Random(f"{trial.seed}:{attempt}")
        kill = draw(rng, ref, end_s, PHASES[trial.index % len(PHASES)], attempt == ATTEMPTS - 1)
        out = base / f"attempt{attempt}"
        log = base / f"attempt{attempt}.log"
        state, seen = kill_at(args, out, log, kill)
        if state == "failed":
            return unrecoverable(trial, f"the first run {seen}", log)
        if state == "finished":
            trial.finished_first += 1
            print(f"  {trial.command} trial {trial.index}: {kill}: {seen}; drawn again", flush=True)
            continue
        trial.kills.append(f"kill 1 {kill} ({seen})")
        if double:
            # somewhere in the resumed run: after a few of its file events, up to half a run later
            again = Kill(None, frozenset(), rng.uniform(0, end_s / 2), rng.randint(1, 6))
            state, seen = kill_at(args, out, log, again)
            if state == "failed":
                return unrecoverable(trial, f"the first resumption {seen}", log)
            trial.kills.append(
                f"kill 2 {again} ({seen})" if state == "killed" else f"no kill 2: {seen}"
            )
        resumed = genlab(args, out, log)
        try:
            rc = resumed.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(resumed.pid, signal.SIGKILL)
            rc = resumed.wait()
        if rc != 0:
            return unrecoverable(trial, f"the resumed command exited {rc}", log)
        trial.details = compare(ref_out, out)
        trial.outcome = "different" if trial.details else "equal"
        return
    trial.outcome = "no kill"  # every attempt ended before its kill


def unrecoverable(trial: Trial, why: str, log: Path) -> None:
    trial.outcome = "unrecoverable"
    trial.details = [why, *log.read_text(errors="replace").strip().splitlines()[-6:]]


def selected_commands() -> list[str]:
    wanted = os.environ.get("GENLAB_CRASH_COMMANDS", "").strip()
    names = [n.strip() for n in wanted.split(",") if n.strip()] or list(COMMANDS)
    unknown = set(names) - set(COMMANDS)
    assert not unknown, f"GENLAB_CRASH_COMMANDS: unknown {sorted(unknown)}; know {list(COMMANDS)}"
    return names


def table(trials: list[Trial]) -> str:
    rows = [("command", "trials", "equal", "different", "unrecoverable", "finished first")]
    for name in dict.fromkeys(t.command for t in trials):
        mine = [t for t in trials if t.command == name]
        count = lambda o, mine=mine: sum(t.outcome == o for t in mine)  # noqa: E731
        rows.append(
            (
                name,
                str(sum(t.outcome != "no kill" for t in mine)),
                str(count("equal")),
                str(count("different")),
                str(count("unrecoverable")),
                str(sum(t.finished_first for t in mine)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    seed = os.environ.get("GENLAB_CRASH_SEED") or str(secrets.randbelow(1_000_000))
    replay = f"GENLAB_CRASH_SEED={seed} pytest -m slow tests/test_crash_campaign.py"
    print(f"\ncrash campaign seed {seed} (replay: {replay})", flush=True)
    started = time.monotonic()
    trials: list[Trial] = []
    for name in selected_commands():
        args, ref_out = COMMANDS[name], tmp_path / name / "reference"
        rc, watch = watch_to_end(args, ref_out, tmp_path / name / "reference.log")
        assert rc == 0, (tmp_path / name / "reference.log").read_text()
        end_s = time.monotonic() - watch.start
        phases = {p: sum(e.phase == p for e in watch.events) for p in set(PHASES)}
        print(f"{name}: reference {end_s:.1f} s, {len(watch.events)} file events {phases}")
        for i in range(TRIALS[name]):
            trial = Trial(name, i, f"{seed}:{name}:{i}")
            run_trial(trial, args, ref_out, watch.events, end_s, tmp_path / name / f"trial{i}")
            trials.append(trial)
            print(f"  {trial}", flush=True)
    summary = table(trials)
    print(f"\ncrash campaign seed {seed}, {time.monotonic() - started:.0f} s\n{summary}")
    failed = [t for t in trials if t.outcome not in ("equal", "no kill")]
    landed = sum(len([k for k in t.kills if k.startswith("kill")]) for t in trials)
    report = f"seed {seed} ({replay})\n{summary}\n" + "\n".join(map(str, failed))
    assert not failed, f"{len(failed)} killed runs did not resume to the reference\n{report}"
    if set(selected_commands()) == set(COMMANDS):
        assert landed >= 10, f"only {landed} kills landed\n{report}"
