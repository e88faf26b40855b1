"""A sweep as ``dask.distributed`` tasks, on an existing cluster (``--scheduler``) or on a
``LocalCluster`` started on this machine (one single-threaded worker per member lane).

Each task is one ``genlab.launchers`` task (``run_task``). A worker lost while it trains (killed,
its machine gone) is noticed by the scheduler, which runs its task again on another worker
(``distributed.scheduler.allowed-failures`` times, 3 by default); the task resumes its members
from their checkpoints, so a lost worker costs only the epochs since. Each task's log is
``<sweep>/dask/task-I-J.log``. Workers run one task at a time (``--nthreads 1``): two tasks in
one process would share PyTorch's one thread setting.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, replace
from typing import Any

from genlab.errors import GenlabError
from genlab.launchers import Outcome, TaskRuntime, missing, run_task

try:
    import dask
    import distributed
except ImportError:  # genlab[dask] not installed: Dask(...) says so in one line
    distributed = None

CONNECT_TIMEOUT_S = 30
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which made a width-8 Conv-4
# train 1.6x slower in a worker (300 steps: 1.60-1.66 s against 0.92-1.06 s without it)
SLOW_MALLOC = "MALLOC_TRIM_THRESHOLD_"
POLL_S = 1.0  # the longest wait between two looks; a finished task ends the wait at once


class Dask:
    """The ``Engine`` of ``genlab.launchers.launch`` on a Dask cluster."""

    name = "dask"
    poll_s = POLL_S

    def __init__(self, sweep: Any, scheduler: str | None, workers: int = 1) -> None:
        if distributed is None:
            raise missing("dask", "dask.distributed")
        self.sweep = replace(sweep, folder=sweep.folder.absolute())  # as every node sees it
        self.folder = self.sweep.folder / "dask"
        self.local = scheduler is None
        self.cluster = None
        self.client = None
        self.futures: dict[str, Any] = {}  # task id (the key) -> its future, this command's
        where = f"--scheduler {scheduler}" if scheduler else "the local Dask cluster"
        try:
            if scheduler is None:
                with dask.config.set({"distributed.nanny.pre-spawn-environ": _environ()}):
                    self.cluster = distributed.LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    )
                self.client = distributed.Client(self.cluster)
            else:
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, RuntimeError) as e:
            self.close()
            raise GenlabError(f"{where}: no Dask scheduler answered ({e})") from None
        self.address = str(self.client.scheduler.address)
        threads = self._ask(self.client.nthreads)
        self.warnings = []
        if self._ask(self.client.run, _slow_malloc) != dict.fromkeys(threads, False):
            self.warnings.append(
                f"dask: workers run with {SLOW_MALLOC} set (the nanny's default), measured 1.6x "
                "slower training; start them with --no-nanny, or drop it from the config "
                "distributed.nanny.pre-spawn-environ"
            )
        many = sorted(w for w, n in threads.items() if n > 1)
        if many:
            self.close()
            raise GenlabError(
                f"{where}: workers {', '.join(many)} run several tasks at once; start them "
                "with --nthreads 1 (one genlab task per worker process)"
            )

    def _ask(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A call to the scheduler; a scheduler gone away is a one-line error."""
        try:
            return call(*args, **kwargs)
        except (OSError, TimeoutError, distributed.comm.CommClosedError) as e:
            raise GenlabError(f"the Dask scheduler at {self.address} went away ({e})") from None

    def device(self, device: str) -> str:
        """``auto`` fixed for every task: here for a local cluster, else what every worker has
        (CUDA or not); workers that differ are refused."""
        if device != "auto":
            return device
        if self.local:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        has = self._ask(self.client.run, _has_cuda)
        kinds = set(has.values())
        if len(kinds) > 1:
            raise GenlabError(
                "--device auto: some Dask workers have CUDA and some do not; give --device"
            )
        return "cuda" if kinds == {True} else "cpu"

    def submit(self, ranges: list[range], runtime: TaskRuntime) -> tuple[str, dict[str, Any]]:
        tasks = []
        for r in ranges:
            log = self.folder / f"task-{r[0]}-{r[-1]}.log"
            key = f"genlab-{self.sweep.folder.name}-{r[0]}-{r[-1]}-{uuid.uuid4().hex[:8]}"
            future = self._ask(
                self.client.submit,
                run_task,
                str(self.sweep.folder),
                r[0],
                r[-1],
                runtime,
                str(log),
                key=key,
                pure=False,
            )
            self.futures[key] = future
            tasks.append({"id": key, "index": [r[0], r[-1]], "log": str(log)})
        record = {
            "launcher": self.name,
            "scheduler": self.address,
            "submitted": time.time(),
            "runtime": asdict(runtime),
            "tasks": tasks,
        }
        return (
            f"dask: submitted {len(tasks)} tasks to {self.address}, logs in {self.folder}",
            record,
        )

    def poll(self, tasks: list[dict[str, Any]]) -> dict[str, Outcome]:
        """This command's tasks from their futures; those of earlier commands (``--no-wait``)
        from the scheduler, which forgets a task once it is done: gone, then."""
        out: dict[str, Outcome] = {}
        others = [t["id"] for t in tasks if t["id"] not in self.futures]

        # a nested function is pickled by value: the scheduler need not have genlab installed
        def states_of(keys: list[str], dask_scheduler: Any = None) -> dict[str, str]:
            return {k: dask_scheduler.tasks[k].state for k in keys if k in dask_scheduler.tasks}

        known = self._ask(self.client.run_on_scheduler, states_of, others) if others else {}
        for t in tasks:
            future = self.futures.get(t["id"])
            if future is None:
                status = known.get(t["id"])
                live = status is not None and status not in ("memory", "erred", "forgotten")
                out[t["id"]] = Outcome("live", f"dask {status}") if live else Outcome("gone")
            elif not future.done():
                out[t["id"]] = Outcome("live", f"dask {future.status}")
            elif future.status == "finished":
                out[t["id"]] = Outcome("done", result=self._ask(future.result))
            elif future.status == "error":
                error = self._ask(future.exception)
                out[t["id"]] = Outcome("error", text=f"{type(error).__name__}: {error}")
            else:
                out[t["id"]] = Outcome("error", text=f"the task was {future.status}")
        return out

    def wait(self, seconds: float) -> None:
        pending = [f for f in self.futures.values() if not f.done()]
        if not pending:
            time.sleep(seconds)
            return
        try:
            distributed.wait(pending, timeout=seconds, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        except (OSError, distributed.comm.CommClosedError) as e:
            raise GenlabError(f"the Dask scheduler at {self.address} went away ({e})") from None

    def detach(self) -> None:
        distributed.fire_and_forget(list(self.futures.values()))

    def close(self) -> None:
        for part in (self.client, self.cluster):
            if part is not None:
                part.close()


def _environ() -> dict[str, Any]:
    """Dask's environment for new worker processes, without the slow malloc setting."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop(SLOW_MALLOC, None)
    return environ


def _slow_malloc() -> bool:
    """On a worker: whether it runs with the malloc setting that slows training."""
    import os

    return SLOW_MALLOC in os.environ


def _has_cuda() -> bool:
    """On a worker: whether it has CUDA."""
    import torch

    return torch.cuda.is_available()
