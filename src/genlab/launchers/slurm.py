"""A sweep as one Slurm job array, submitted through submitit.

Each array task is one ``genlab.launchers`` task (``run_task``) wrapped as a submitit
``Checkpointable``: on its time limit or on preemption Slurm signals it (USR2, ``--signal``
set by submitit), submitit requeues it with the same arguments, and the requeued task resumes
its members from their checkpoints. Logs (one file per task, stderr in stdout) and submitit's
pickles go under ``<sweep>/slurm/<job id>/``. The scheduler is asked about the job array with
``squeue`` (submitit's own watcher needs ``sacct``, which clusters without accounting lack).
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.launchers import Outcome, TaskRuntime, missing, run_task

try:
    import submitit
    from submitit.core.utils import pickle_load
except ImportError:  # genlab[slurm] not installed: Slurm(...) says so in one line
    submitit = None

# squeue's states of a job that has ended (any other state is queued, running or on its way;
# PREEMPTED is neither: the task comes back PENDING when requeued, so it is waited for)
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
}
POLL_S = 5.0  # seconds between two squeue calls while waiting (a controller serves everyone)
SQUEUE_TRIES = 4  # a busy controller is asked again, 2, 4, 8 s later, before giving up
# sbatch options genlab or submitit set: the --slurm-* flags, or what requeueing relies on
MANAGED = {
    "partition": "--slurm-partition",
    "cpus_per_task": "--slurm-cpus-per-task",
    "mem": "--slurm-mem-gb",
    "gpus_per_task": "--slurm-gpus-per-task",
    "time": "--slurm-time-min",
    "array": "the sweep's tasks",
    "output": "the logs under the sweep folder",
    "error": "the logs under the sweep folder",
    "signal": "submitit's requeueing",
    "open_mode": "submitit's requeueing",
    "job_name": "genlab",
    "wrap": "genlab",
}


@dataclass(frozen=True)
class SlurmOptions:
    """The job array's resources (``--slurm-*``). The defaults fit one small CPU member."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 4.0
    time_min: int = 60
    array_parallelism: int = 256  # the most tasks running at once
    extra: dict[str, Any] = field(default_factory=dict)  # sbatch --KEY=VALUE (account, qos, ...)

    @property
    def wants_gpus(self) -> bool:
        """GPUs asked for, by --slurm-gpus-per-task or through --slurm-extra (gres, gpus)."""
        gres = "gpu" in str(self.extra.get("gres", ""))
        return bool(self.gpus_per_task) or gres or any(k.startswith("gpus") for k in self.extra)

    def __post_init__(self) -> None:
        if not isinstance(self.extra, dict):
            raise GenlabError("slurm extra: must map sbatch option names to values")
        for key in self.extra:
            if key in MANAGED:
                raise GenlabError(f"--slurm-extra {key}: set by {MANAGED[key]}; not here")
        numbers = ("gpus_per_task", "cpus_per_task", "time_min", "array_parallelism", "mem_gb")
        for name in numbers:
            if isinstance(getattr(self, name), bool) or not isinstance(
                getattr(self, name), int | float
            ):
                raise GenlabError(f"--slurm-{name.replace('_', '-')}: must be a number")
        for name, least in (("cpus_per_task", 1), ("time_min", 1), ("array_parallelism", 1)):
            if getattr(self, name) < least:
                raise GenlabError(f"--slurm-{name.replace('_', '-')} must be >= {least}")
        if self.gpus_per_task < 0:
            raise GenlabError("--slurm-gpus-per-task must be >= 0")
        if not (self.mem_gb > 0 and math.isfinite(self.mem_gb)):
            raise GenlabError("--slurm-mem-gb must be a number > 0")

    @classmethod
    def of(cls, options: dict[str, Any]) -> SlurmOptions:
        """From a mapping of its fields (the Python API's ``slurm=``); unknown keys refused."""
        if not isinstance(options, dict):
            raise GenlabError(f"slurm options: a dict of {', '.join(f.name for f in fields(cls))}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise GenlabError(f"slurm options {unknown}: not among {', '.join(names)}")
        return cls(**options)

    def parameters(self) -> dict[str, Any]:
        """submitit.SlurmExecutor parameters."""
        params: dict[str, Any] = {
            "cpus_per_task": self.cpus_per_task,
            "mem": f"{math.ceil(self.mem_gb * 1024)}M",
            "time": self.time_min,
            "array_parallelism": self.array_parallelism,
            "stderr_to_stdout": True,
            "additional_parameters": dict(self.extra),
        }
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_task:
            params["gpus_per_task"] = self.gpus_per_task
        return params


def parse_extra(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` (``account=lab``) or a bare ``KEY`` (``exclusive``) -> sbatch options."""
    extra: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not key or (eq and not value):
            raise GenlabError(f"--slurm-extra {item!r}: must be KEY=VALUE or KEY (e.g. qos=high)")
        extra[key] = value if eq else True
    return extra


if submitit is not None:

    class SweepTask(submitit.helpers.Checkpointable):
        """``run_task`` as a checkpointable callable: requeued with the same arguments after a
        time limit or preemption, it resumes its members from their run folders."""

        def __call__(self, folder: str, first: int, last: int, runtime: TaskRuntime) -> Any:
            return run_task(folder, first, last, runtime)


def squeue(job_ids: set[str]) -> dict[str, tuple[str, str]]:
    """Task id (``123_4``, or ``123`` for a job of one task) -> (state, reason) for the jobs in
    ``job_ids`` that the controller still knows, ended ones included (for ``MinJobAge``). A
    controller that does not answer is asked again a few times before this gives up."""
    if not job_ids:
        return {}
    command = ["squeue", "-h", "-r", "--me", "--states=all", "-o", "%i %T %r"]
    for attempt in range(SQUEUE_TRIES):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise GenlabError("squeue: not found; is this a Slurm login node?") from None
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        else:
            if out.returncode == 0:
                break
            why = out.stderr.strip() or f"exit status {out.returncode}"
        if attempt == SQUEUE_TRIES - 1:
            raise GenlabError(f"squeue: the Slurm controller did not answer: {why}")
        time.sleep(2 ** (attempt + 1))
    states = {}
    for line in out.stdout.splitlines():
        task, status, reason = (line.strip().split(" ", 2) + ["", ""])[:3]
        if task.partition("_")[0] in job_ids:
            states[task] = (status, reason)
    return states


def slurm_up() -> bool:
    """Whether a Slurm controller answers here with a node that takes jobs."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    usable = ("idle", "mixed", "allocated", "completing")
    return out.returncode == 0 and any(s.rstrip("*~#!%$@^-") in usable for s in out.stdout.split())


class Slurm:
    """The ``Engine`` of ``genlab.launchers.launch`` on a Slurm cluster."""

    name = "slurm"
    poll_s = POLL_S

    def __init__(self, sweep: Any, options: SlurmOptions) -> None:
        if submitit is None:
            raise missing("slurm", "submitit")
        self.sweep = replace(sweep, folder=sweep.folder.absolute())  # as every node sees it
        self.options = options
        self.folder = self.sweep.folder / "slurm"
        self.results: dict[str, Outcome] = {}  # tasks whose result was read

    def submit(self, ranges: list[range], runtime: TaskRuntime) -> tuple[str, dict[str, Any]]:
        executor = submitit.SlurmExecutor(folder=self.folder / "%j")
        executor.update_parameters(
            job_name=f"genlab-{self.sweep.study.name}", **self.options.parameters()
        )
        try:  # sbatch's complaint goes into the one error line, not onto the terminal too
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                jobs = [
                    executor.submit(SweepTask(), str(self.sweep.folder), r[0], r[-1], runtime)
                    for r in ranges
                ]
        except (OSError, subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as e:
            said = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            raise GenlabError(
                f"--launcher slurm: sbatch refused the job array: {said[0]}"
            ) from None
        tasks = [
            {
                "id": job.job_id,
                "index": [r[0], r[-1]],
                "log": str(job.paths.stdout),
                "result": str(job.paths.result_pickle),
            }
            for job, r in zip(jobs, ranges, strict=True)
        ]
        array = jobs[0].job_id.partition("_")[0]
        record = {
            "launcher": self.name,
            "job_id": array,
            "submitted": time.time(),
            "options": asdict(self.options),
            "runtime": asdict(runtime),
            "tasks": tasks,
        }
        what = f"job array {array} ({len(tasks)} tasks)" if len(tasks) > 1 else f"job {array}"
        return f"slurm: submitted {what}, logs in {self.folder}", record

    def poll(self, tasks: list[dict[str, Any]]) -> dict[str, Outcome]:
        """From squeue (live, or ended in a state other than COMPLETED) and the result pickles
        submitit writes (done or error); ended without a result: gone."""
        pending = [t for t in tasks if t["id"] not in self.results]
        states = squeue({t["id"].partition("_")[0] for t in pending})
        out = dict(self.results)
        for t in pending:
            status, reason = states.get(t["id"], ("", ""))
            result = Path(t.get("result", ""))
            if status and status not in ENDED:
                shown = f" ({reason})" if status == "PENDING" and reason else ""
                out[t["id"]] = Outcome("live", f"slurm {t['id']} {status}{shown}")
            elif result.is_file():
                out[t["id"]] = self.results[t["id"]] = _read_result(result)
            elif status and status not in ("COMPLETED", "PREEMPTED"):
                out[t["id"]] = Outcome("error", text=f"the task ended {status}")
            else:
                out[t["id"]] = Outcome("gone")
        return out

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def detach(self) -> None:
        pass  # the job array runs on without this command

    def close(self) -> None:
        pass


def _read_result(path: Path) -> Outcome:
    """submitit's result pickle: ("success", what run_task returned) or ("error", traceback)."""
    try:
        outcome, value = pickle_load(path)
    except Exception as e:  # a truncated or foreign file: say so, do not crash the wait
        return Outcome("error", text=f"{path}: unreadable result ({type(e).__name__}: {e})")
    if outcome == "success" and isinstance(value, dict):
        return Outcome("done", result=value)
    lines = str(value).strip().splitlines()
    return Outcome("error", text="\n".join(lines[-8:]) or f"the task ended with {outcome!r}")
