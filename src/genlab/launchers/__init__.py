"""Sweeps handed to an engine: a Slurm job array (``genlab.launchers.slurm``, through submitit)
or a Dask cluster (``genlab.launchers.dask``). genlab schedules nothing itself.

A sweep is cut into **tasks**, contiguous ranges of members: members equal but for their seed
that ``fit`` would train side by side (``genlab.training.grouped.plan`` on the task's device and
threads) form one task of up to ``claim_size`` members; every other member is a task of its own.
A task is ``genlab sweep ... --index I-J`` on some node: it reads the sweep from ``sweep.json``
in the sweep folder (a path every node sees), trains its members that are not finished with the
runtime fixed at submission (so the same computation whichever node runs it), skipping members
another process holds (the run locks), and resumes each from its checkpoint when run again.

The command that submits waits with one progress line counted from the run folders (members
finished / running / pending / failed) until no task is left, then aggregates and draws the
sweep, like a local one. Submissions are recorded in ``jobs.json`` so that running the command
again joins the tasks still queued or running and submits only the members no task covers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from genlab import sweeps
from genlab.errors import GenlabError, MembersFailed
from genlab.fileio import read_json, write_json
from genlab.launch import run_members
from genlab.models import Conv4
from genlab.studies.common import cohort_width
from genlab.training.grouped import Plan, claim_size, plan
from genlab.training.runtime import Runtime

LAUNCHERS = ("local", "slurm", "dask")
JOBS = "jobs"  # the sweep folder's folder of submission records, one file each
TAIL_LINES = 15  # lines of a failed task's log shown


@dataclass(frozen=True)
class TaskRuntime:
    """The runtime every task of a submission runs with, fixed when it is submitted so that a
    task computes the same whichever node runs it (and as ``--index`` with these settings)."""

    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False
    threads: int = 1
    tensorboard: bool = False


def missing(extra: str, module: str) -> GenlabError:
    return GenlabError(
        f"--launcher {extra} needs {module}, which is not installed: pip install 'genlab[{extra}]'"
    )


def tasks(sweep: Any, device: torch.device, threads: int, *, compile: bool = False) -> list[range]:
    """The sweep's members cut into tasks (see the module docstring), in order."""
    configs = sweep.configs
    out: list[range] = []
    i = 0
    while i < len(configs):
        width = cohort_width(configs[i]) if sweep.study.trains and not compile else None
        j = i + 1
        if width is not None:
            key = _without_seed(configs[i])
            while j < len(configs) and _without_seed(configs[j]) == key:
                j += 1
            if plan(Conv4(width), device, j - i, threads) == Plan():
                j = i + 1  # one after another anyway: spread over the cluster instead
            else:
                j = min(j, i + claim_size(device, threads))
        out.append(range(i, j))
        i = j
    return out


def _without_seed(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(cfg).items() if k != "seed"}


def run_task(
    folder: str, first: int, last: int, runtime: TaskRuntime, log: str | None = None
) -> dict[str, Any]:
    """One task: train members ``first..last`` of the sweep in ``folder`` (what a Slurm array
    task or a Dask task calls, on its node). ``log``: a file the progress is appended to (else
    stdout, which Slurm keeps). Returns what happened, for the submitter and the benchmark."""
    started = time.time()
    write = _appender(Path(log)) if log else _printer
    sweep = sweeps.load(Path(folder))
    rt = Runtime.resolve(**asdict(runtime), log=write)
    members = [(cfg, path) for _, cfg, path in sweep.members(range(first, last + 1))]
    write(f"task {first}-{last} on {socket.gethostname()}:{os.getpid()}, {rt.threads} threads")
    failed: dict[str, str] = {}
    try:
        run_members(sweep.study, members, rt, skip_locked=True)
    except MembersFailed as e:
        failed = {Path(p).name: str(error) for p, error in e.failures}
        for name, message in failed.items():
            write(f"{name}: failed: {message}")
    return {
        "index": [first, last],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
        "finished": time.time(),
        "failed": failed,
    }


def _printer(message: str) -> None:
    print(message, flush=True)


def _appender(path: Path) -> Callable[[str], None]:
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(message: str) -> None:
        with path.open("a") as f:
            f.write(message + "\n")

    return write


# -- submissions ---------------------------------------------------------------------------------


def read_jobs(folder: Path, launcher: str | None = None) -> list[dict[str, Any]]:
    """The submissions recorded in ``folder/jobs/`` (one file each, oldest first), those of
    ``launcher`` only if given. Each is checked: a damaged one is a one-line error."""
    jobs = []
    for target in sorted((folder / JOBS).glob("*.json")):
        job = read_json(target)
        tasks_ = job.get("tasks") if isinstance(job, dict) else None
        ok = isinstance(tasks_, list) and all(
            isinstance(t, dict)
            and isinstance(t.get("id"), str)
            and isinstance(t.get("log"), str)
            and isinstance(t.get("index"), list)
            and len(t["index"]) == 2
            and all(isinstance(v, int) for v in t["index"])
            for t in tasks_
        )
        if not ok:
            raise GenlabError(f"{target}: not a genlab submission record; remove it to forget it")
        if launcher is None or job.get("launcher") == launcher:
            jobs.append(job)
    jobs.sort(key=lambda j: j.get("submitted", 0))
    return jobs


def record_job(folder: Path, job: dict[str, Any]) -> None:
    """One file per submission: two launchers on one sweep never write the same file."""
    name = f"{job['launcher']}-{time.time_ns()}-{os.getpid()}.json"
    write_json(folder / JOBS / name, job)


def task_range(task: dict[str, Any]) -> range:
    return range(task["index"][0], task["index"][1] + 1)


# -- the engines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What an engine knows of one task: ``live`` (queued or running; ``label`` says how),
    ``done`` (``result``: what ``run_task`` returned), ``error`` (``text``: why it ended), or
    ``gone`` (ended without a result anyone can see yet)."""

    status: str
    label: str = ""
    result: dict[str, Any] | None = None
    text: str = ""


class Engine(Protocol):
    """What ``launch`` needs of a scheduler."""

    name: str  # "slurm", "dask": the launcher, as recorded in jobs/
    poll_s: float  # seconds between two looks at the scheduler

    def submit(self, ranges: list[range], runtime: TaskRuntime) -> tuple[str, dict[str, Any]]:
        """Submit one task per range; returns the line to print and the submission record
        (``launcher``, ``tasks``: each ``id``, ``index`` [first, last], ``log``, ...)."""
        ...

    def poll(self, tasks: list[dict[str, Any]]) -> dict[str, Outcome]:
        """The outcome of each recorded task, by id."""
        ...

    def wait(self, seconds: float) -> None: ...

    def detach(self) -> None:
        """Leave the submitted tasks running after this command ends (``--no-wait``)."""
        ...

    def close(self) -> None: ...


def check_options(
    launcher: str,
    *,
    slurm: bool = False,
    scheduler: str | None = None,
    wait: bool = True,
    index: object = None,
    force: bool = False,
) -> None:
    """The combinations of launcher options that make no sense, as one-line errors (the CLI and
    the Python API alike; ``slurm``: Slurm options were given)."""
    if launcher not in LAUNCHERS:
        raise GenlabError(f"--launcher {launcher!r}: not one of {', '.join(LAUNCHERS)}")
    if slurm and launcher != "slurm":
        raise GenlabError("--slurm-*: only with --launcher slurm")
    if scheduler is not None and launcher != "dask":
        raise GenlabError("--scheduler: only with --launcher dask")
    if not wait and launcher == "local":
        raise GenlabError("--no-wait: only with --launcher slurm or dask")
    if not wait and launcher == "dask" and scheduler is None:
        raise GenlabError(
            "--no-wait with --launcher dask needs --scheduler (a local cluster ends with this "
            "command)"
        )
    if launcher != "local" and index is not None:
        raise GenlabError("--index: what one task runs; with --launcher the whole sweep is sent")
    if launcher != "local" and force:
        raise GenlabError("--force: not with --launcher (delete the sweep folder to start again)")


def open_engine(
    sweep: Any,
    launcher: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    tensorboard: bool = False,
    slurm: Any = None,
    scheduler: str | None = None,
    cores: int = 1,
) -> tuple[Engine, TaskRuntime]:
    """The engine of ``launcher`` ("slurm" or "dask") and the runtime of its tasks, fixed here:
    - slurm: ``slurm`` (a ``SlurmOptions``) sizes each task; a task trains on ``threads`` or
      ``--slurm-cpus-per-task`` threads, on ``device`` (auto: CUDA when it asks for GPUs).
    - dask: on the cluster at ``scheduler`` each task trains on ``threads`` (default 1; workers
      must run one task at a time: ``--nthreads 1``), on ``device`` (auto: CUDA when every
      worker has it); without ``scheduler`` a ``LocalCluster`` of ``cores`` single-threaded
      workers (one per member lane) starts on this machine."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise GenlabError(f"--device {device!r}: not one of auto, cpu, cuda, cuda:N")
    if launcher == "slurm":
        from genlab.launchers.slurm import Slurm, SlurmOptions

        options = slurm or SlurmOptions()
        if device == "auto":
            device = "cuda" if options.wants_gpus else "cpu"
        threads = threads or options.cpus_per_task
        return Slurm(sweep, options), TaskRuntime(device, precision, compile, threads, tensorboard)
    if launcher == "dask":
        from genlab.launchers.dask import Dask

        engine = Dask(sweep, scheduler, workers=max(1, cores))
        try:
            device = engine.device(device)
        except BaseException:
            engine.close()
            raise
        threads = 1 if scheduler is None else threads or 1
        return engine, TaskRuntime(device, precision, compile, threads, tensorboard)
    raise GenlabError(f"--launcher {launcher!r}: not one of slurm, dask")


def send(
    sweep: Any,
    launcher: str,
    rt: Runtime,
    *,
    wait: bool = True,
    announce: Callable[[], None] | None = None,
    **options: Any,
) -> Path:
    """Hand ``sweep`` to ``launcher`` (``open_engine``'s ``options``) and, with ``wait``, wait
    for it and aggregate it (``launch``); returns the sweep folder. ``announce`` is called once
    the engine is reached (the command line prints the members then)."""
    engine, runtime = open_engine(sweep, launcher, cores=rt.threads, **options)
    try:
        if announce is not None:
            announce()
        launch(sweep, engine, runtime, rt, wait=wait)
        if not wait:
            engine.detach()
    finally:
        engine.close()
    return sweep.folder


def listing(sweep: Any, launcher: str, rt: Runtime, **options: Any) -> list[str]:
    """One line per member: index, run id, state in its folder, its task in the scheduler."""
    labels: dict[int, str] = {}
    if launcher != "dask" or options.get("scheduler"):  # a local Dask cluster ended already
        engine, _ = open_engine(sweep, launcher, cores=rt.threads, **options)
        try:
            watch = Watch(sweep, engine)
            watch.look()
            labels = watch.live
        finally:
            engine.close()
    return [
        f"{i:>4}  {path.name}  {sweeps.member_state(path)}  {labels.get(i, '')}".rstrip()
        for i, _, path in sweep.members()
    ]


# -- waiting -------------------------------------------------------------------------------------

ROUNDS = 3  # submissions at most: the first, and two of members skipped while another held them
GRACE_S = 30.0  # a task gone without a result is failed after this long (a slow network disk)


def launch(
    sweep: Any, engine: Engine, runtime: TaskRuntime, rt: Runtime, *, wait: bool = True
) -> Path:
    """Submit the sweep's unfinished members to ``engine`` (joining the tasks of earlier
    commands still queued or running), wait for them with one progress line, then aggregate and
    draw the sweep. Members another process trains are waited for. A member that a task skipped
    because another process held it, and that is unfinished when that one lets go, is
    submitted again (``ROUNDS`` submissions in all). Members of tasks that failed, were
    cancelled or vanished are printed with their logs and raise one ``GenlabError``; running
    the command again submits them again."""
    fresh = not sweep.folder.exists()
    sweeps.write_record(sweep)
    device = torch.device("cpu" if runtime.device == "auto" else runtime.device)
    ranges = tasks(sweep, device, runtime.threads, compile=runtime.compile)
    watch = Watch(sweep, engine)
    progress = Progress(len(sweep.configs), rt.log, rt.quiet)
    rounds = 0
    try:
        while True:
            watch.look()
            if watch.todo(ranges) and (rounds == 0 or watch.idle) and rounds < ROUNDS:
                message = _submit(sweep, engine, watch, watch.todo(ranges), runtime, fresh)
                rounds += 1
                if wait:
                    progress.note(message)
                else:
                    print(message)  # the job id, even with --quiet
                continue
            if not wait:
                if rounds == 0:
                    print(f"nothing to submit: {progress.line(watch.counts())}")
                return sweep.folder
            rounds = max(rounds, 1)  # joined: later submissions only of skipped members
            progress.show(watch.counts())
            if watch.idle:
                break
            engine.wait(engine.poll_s)
    finally:
        progress.close()
    sweeps.finish(sweep)
    if watch.failures:
        report_failures(sweep, watch.failures)
    left = [i for i, s in watch.states.items() if s != "finished"]
    if left:
        raise GenlabError(
            f"members {', '.join(map(str, left))} are unfinished after {rounds} submissions "
            "(held by processes that stopped?); re-run the same command to retry them"
        )
    return sweep.folder


class Watch:
    """What one look at the run folders and the scheduler shows: each member's state, the
    tasks (this command's and earlier ones still live when it started watching), the members in
    live tasks and the members that failed."""

    def __init__(self, sweep: Any, engine: Engine) -> None:
        self.sweep, self.engine = sweep, engine
        self.watched: dict[str, dict[str, Any]] = {}  # task id -> its record
        self.gone_since: dict[str, float] = {}
        self.states: dict[int, str] = {}
        self.live: dict[int, str] = {}
        self.failures: dict[int, tuple[str, str]] = {}

    def look(self) -> None:
        recorded = {
            t["id"]: t
            for job in read_jobs(self.sweep.folder, self.engine.name)
            for t in job["tasks"]
        }
        outcomes = self.engine.poll(list(recorded.values()))
        for tid, outcome in outcomes.items():
            if outcome.status == "live":
                self.watched.setdefault(tid, recorded[tid])
        self.states = {i: _state(path) for i, _, path in self.sweep.members()}
        now = time.monotonic()
        self.live, self.failures = {}, {}
        for tid, task in self.watched.items():
            outcome = outcomes.get(tid, Outcome("gone"))
            if outcome.status == "gone":
                since = self.gone_since.setdefault(tid, now)
                if now - since < GRACE_S:  # its result may not be visible yet
                    outcome = Outcome("live", f"{self.engine.name} {tid} ending")
            else:
                self.gone_since.pop(tid, None)
            if outcome.status == "live":
                self.live.update(dict.fromkeys(task_range(task), outcome.label))
            else:
                self.failures.update(self._failed(task, outcome))

    def _failed(self, task: dict[str, Any], outcome: Outcome) -> dict[int, tuple[str, str]]:
        """The unfinished members of an ended task, with why."""
        where = f"{self.engine.name} task {task['id']}, log {task['log']}"
        log = tail(Path(task["log"]))
        unfinished = [i for i in task_range(task) if self.states[i] != "finished"]
        if outcome.status == "done":
            said = (outcome.result or {}).get("failed", {})
            names = {i: self.sweep.run_ids[i] for i in unfinished}
            return {i: (where, f"{said[n]}\n{log}") for i, n in names.items() if n in said}
        text = outcome.text or "the task ended without a result (cancelled, killed, out of memory?)"
        return {i: (where, f"{text}\n{log}") for i in unfinished}

    @property
    def idle(self) -> bool:
        return not self.live and "running" not in self.states.values()

    def todo(self, ranges: list[range]) -> list[range]:
        """The tasks with a member not finished, not trained by anyone, not in a live task and
        not failed in this command: what to submit."""
        skip = set(self.live) | set(self.failures)
        return [r for r in ranges if any(i not in skip and self.states[i] == "new" for i in r)]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("finished", "running", "pending", "failed"), 0)
        for i, s in self.states.items():
            counts[s if s != "new" else "failed" if i in self.failures else "pending"] += 1
        return counts


def _state(path: Path) -> str:
    """finished, running (someone holds its lock) or new (to train: never started or partial)."""
    s = sweeps.member_state(path)
    return {"finished": "finished", "locked": "running"}.get(s, "new")


def _submit(
    sweep: Any, engine: Engine, watch: Watch, todo: list[range], runtime: TaskRuntime, fresh: bool
) -> str:
    """Submit ``todo``, record it in jobs/ and watch it; a sweep folder made for a submission
    that failed is removed again (nothing half-made)."""
    try:
        message, job = engine.submit(todo, runtime)
    except BaseException:
        if fresh:
            shutil.rmtree(sweep.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                sweep.folder.parent.rmdir()  # the study's folder, if nothing else is in it
        raise
    record_job(sweep.folder, job)
    watch.watched.update({t["id"]: t for t in job["tasks"]})
    return message


class Progress:
    """The one progress line: members finished / running / pending / failed, written when it
    changes (rewritten in place on a terminal)."""

    def __init__(self, size: int, log: Callable[[str], None], quiet: bool) -> None:
        self.size, self.log, self.quiet = size, log, quiet
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.open = False  # a line on the terminal that the next one overwrites

    def line(self, counts: dict[str, int]) -> str:
        return f"{self.size} members: " + ", ".join(f"{n} {what}" for what, n in counts.items())

    def show(self, counts: dict[str, int]) -> None:
        line = self.line(counts)
        if line != self.last and not self.quiet:
            if self.tty:
                print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
                self.open = True
            else:
                self.log(line)
        self.last = line

    def note(self, message: str) -> None:
        """A line of its own (a submission), not written over the progress line."""
        self.close()
        self.log(message)

    def close(self) -> None:
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or f"({path} is empty)"


def report_failures(sweep: Any, failures: dict[int, tuple[str, str]]) -> None:
    """Print the failed members, grouped by task (run ids, where it ran, why, the last lines of
    its log), and raise the one error line that says how to retry."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in sorted(failures):
        groups.setdefault(failures[i], []).append(i)
    for (where, text), members in groups.items():
        names = ", ".join(f"[{i}] {sweep.run_ids[i]}" for i in members)
        print(f"member {names} failed ({where}):", file=sys.stderr)
        print("    " + text.replace("\n", "\n    "), file=sys.stderr)
    raise GenlabError(
        f"{len(failures)} of {len(sweep.configs)} members failed; re-run the same command "
        "to retry only what is unfinished"
    )


__all__ = [
    "LAUNCHERS",
    "Engine",
    "Outcome",
    "TaskRuntime",
    "check_options",
    "launch",
    "run_task",
    "send",
    "tasks",
]
