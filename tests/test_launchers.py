"""Launchers: how a sweep is cut into tasks, the one-line errors, and a real Dask cluster (a
scheduler and two worker processes started with the ``dask`` commands on loopback): a sweep
through it equals the same sweep run here, also when a worker is SIGKILLed mid-training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launching import (
    WAIT_S,
    assert_same_results,
    finish,
    folder_of,
    genlab,
    mid_training,
    run_local,
    sweep_args,
    trained_once,
    wait_for_sweep_folder,
)

import genlab as genlab_api
from genlab import launchers, sweeps
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.studies import STUDIES

distributed = pytest.importorskip("distributed")

CPU = torch.device("cpu")


def sweep_of(study: str, values: dict, out: Path, seeds: int | None = None) -> sweeps.Sweep:
    return sweeps.build(STUDIES[study], values, out, seeds=seeds)


def test_members_that_train_together_form_one_task(tmp_path):
    # width 4 seeds train as one grouped chunk on a thread (plan); width 8 seeds one by one
    sweep = sweep_of("robustness", {"width": [4, 8], "epochs": [2]}, tmp_path, seeds=3)
    assert launchers.tasks(sweep, CPU, 1) == [range(0, 3), range(3, 4), range(4, 5), range(5, 6)]
    # a task holds at most claim_size members: 4 per thread on the CPU
    many = sweep_of("robustness", {"width": [4]}, tmp_path, seeds=6)
    assert launchers.tasks(many, CPU, 1) == [range(0, 4), range(4, 6)]
    # members that differ in more than the seed, and compiled ones, are tasks of their own
    mixed = sweep_of("robustness", {"width": [4], "lr": [0.1, 0.05]}, tmp_path)
    assert launchers.tasks(mixed, CPU, 1) == [range(0, 1), range(1, 2)]
    assert launchers.tasks(sweep, CPU, 1, compile=True) == [range(i, i + 1) for i in range(6)]
    flips = sweep_of("robustness", {"width": [4], "augment": ["random"]}, tmp_path, seeds=2)
    assert launchers.tasks(flips, CPU, 1) == [range(0, 1), range(1, 2)]
    # on CUDA widths <= 16 train as one grouped model, wider ones one by one
    wide = sweep_of("robustness", {"width": [16, 64]}, tmp_path, seeds=2)
    assert launchers.tasks(wide, torch.device("cuda"), 1) == [range(0, 2), range(2, 3), range(3, 4)]
    # studies that do not train through fit: one member a task
    linreg = sweep_of("linreg", {}, tmp_path, seeds=3)
    assert launchers.tasks(linreg, CPU, 1) == [range(0, 1), range(1, 2), range(2, 3)]


def test_every_member_is_in_exactly_one_task(tmp_path):
    sweep = sweep_of("random-labels", {"width": [2, 4, 8], "label_noise": [0.0, 1.0]}, tmp_path, 3)
    for threads in (1, 2, 4):
        covered = [i for r in launchers.tasks(sweep, CPU, threads) for i in r]
        assert covered == list(range(len(sweep.configs)))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--slurm-cpus-per-task", "2"], "--slurm-cpus-per-task: only with --launcher slurm"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler: only with --launcher dask"),
        (["--no-wait"], "--no-wait: only with --launcher slurm or dask"),
        (["--launcher", "dask", "--no-wait"], "needs --scheduler"),
        (["--launcher", "dask", "--index", "0"], "--index: what one task runs"),
        (["--launcher", "slurm", "--slurm-mem-gb", "0"], "--slurm-mem-gb must be a number > 0"),
        (["--launcher", "slurm", "--slurm-extra", "qos="], "--slurm-extra 'qos=': must be"),
    ],
)
def test_launcher_flags_misused_are_one_line(tmp_path, capsys, flags, message):
    assert main([*sweep_args(tmp_path, "--epochs", "1"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("genlab: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "robustness").exists()  # nothing half-made


@pytest.mark.parametrize(("launcher", "module"), [("slurm", "submitit"), ("dask", "distributed")])
def test_without_the_extra_installed_the_launcher_is_one_line(tmp_path, launcher, module):
    # a real failed import: the module is made unimportable in a fresh interpreter
    code = (
        f"import sys; sys.modules[{module!r}] = None; from genlab.cli import main; "
        f"sys.exit(main({sweep_args(tmp_path, '--epochs', '1', '--launcher', launcher)!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"pip install 'genlab[{launcher}]'" in proc.stderr


def test_a_scheduler_that_does_not_answer_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("genlab.launchers.dask.CONNECT_TIMEOUT_S", 2)
    port = _free_port()
    args = [*sweep_args(tmp_path, "--epochs", "1"), "--launcher", "dask"]
    assert main([*args, "--scheduler", f"tcp://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"genlab: error: --scheduler tcp://127.0.0.1:{port}: no Dask scheduler")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real Dask cluster -------------------------------------------------------------------------


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder = folder
        self.file = folder / "scheduler.json"
        env = {**os.environ, "GENLAB_THREADS": "1"}
        dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
        common = {"env": env, "cwd": folder, "stdout": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [*dask, "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(self.file),
             "--no-dashboard"],
            stderr=(folder / "scheduler.log").open("w"), **common,
        )  # fmt: skip
        deadline = time.monotonic() + WAIT_S
        while not self.file.exists():
            assert self.scheduler.poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)
        worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
        self.workers = [
            subprocess.Popen(
                [
                    *worker,
                    "--scheduler-file",
                    str(self.file),
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                stderr=(folder / f"worker-{i}.log").open("w"),
                **common,
            )  # fmt: skip
            for i in range(workers)
        ]
        with distributed.Client(scheduler_file=str(self.file), timeout=WAIT_S) as client:
            client.wait_for_workers(workers, timeout=WAIT_S)
            self.address = client.scheduler.address

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def dask_cluster(tmp_path_factory):
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield cluster
    cluster.stop()


SETTINGS = ("--width", "4", "8", "--seeds", "2", "--epochs", "2")


@pytest.mark.cluster
def test_a_sweep_through_dask_equals_the_same_sweep_run_here(tmp_path, dask_cluster):
    local = run_local(tmp_path / "local", *SETTINGS)
    args = [*sweep_args(tmp_path / "dask", *SETTINGS), "--launcher", "dask"]
    rc, out, err = finish(genlab(*args, "--scheduler", dask_cluster.address))
    assert rc == 0, err
    folder = folder_of(tmp_path / "dask")
    assert out.strip().endswith(f"results: {folder}")
    assert_same_results(local, folder)
    trained_once(folder)
    assert "4 members: 4 finished, 0 running, 0 pending, 0 failed" in out
    # the three tasks (width 4 seeds together; each width 8 seed alone) ran on the workers
    assert sorted(p.name for p in (folder / "dask").iterdir()) == [
        "task-0-1.log",
        "task-2-2.log",
        "task-3-3.log",
    ]
    # running it again finds everything finished and submits nothing
    rc, out, err = finish(genlab(*args, "--scheduler", dask_cluster.address))
    assert rc == 0 and "submitted" not in out, err


@pytest.mark.cluster
def test_a_local_dask_cluster_from_python_gives_the_same_sweep(tmp_path):
    settings = ("--width", "8", "--seeds", "2", "--epochs", "2")
    local = run_local(tmp_path / "local", *settings)
    folder = genlab_api.sweep(
        "robustness",
        out=tmp_path / "dask",
        dataset="digits",
        train_subset=300,
        batch_size=32,
        views=["none"],
        width=8,
        epochs=2,
        seeds=2,
        launcher="dask",
        threads=2,  # two single-threaded workers, one per lane
        quiet=True,
    )
    assert folder == folder_of(tmp_path / "dask")
    assert_same_results(local, folder)


def test_slurm_options_and_extras_are_checked():
    from genlab.launchers.slurm import SlurmOptions, parse_extra

    assert parse_extra(["account=lab", "--qos=high", "exclusive"]) == {
        "account": "lab",
        "qos": "high",
        "exclusive": True,
    }
    assert SlurmOptions.of({"cpus_per_task": 4}).parameters()["cpus_per_task"] == 4
    with pytest.raises(GenlabError, match="slurm options \\['bogus'\\]"):
        SlurmOptions.of({"bogus": 1})
    with pytest.raises(GenlabError, match="--slurm-time-min must be >= 1"):
        SlurmOptions(time_min=0)
    with pytest.raises(GenlabError, match="--slurm-cpus-per-task: must be a number"):
        SlurmOptions.of({"cpus_per_task": "2"})
    # what genlab and submitit set is refused; GPUs asked for through gres count as GPUs
    with pytest.raises(GenlabError, match="--slurm-extra time: set by --slurm-time-min"):
        SlurmOptions(extra=parse_extra(["time=10"]))
    assert SlurmOptions(extra=parse_extra(["gres=gpu:a100:1"])).wants_gpus
    assert not SlurmOptions(extra={"account": "lab"}).wants_gpus
    with pytest.raises(GenlabError, match="launcher 'pbs'"):
        genlab_api.sweep("robustness", launcher="pbs", epochs=1)


@pytest.mark.cluster
def test_a_worker_killed_mid_training_costs_only_its_progress(tmp_path, dask_cluster):
    settings = ("--width", "8", "--seeds", "2", "--epochs", "6", "--train-subset", "600")
    local = run_local(tmp_path / "local", *settings)
    args = [*sweep_args(tmp_path / "dask", *settings), "--launcher", "dask"]
    proc = genlab(*args, "--scheduler", dask_cluster.address)
    victim, holder = mid_training(wait_for_sweep_folder(tmp_path / "dask", proc), proc)
    pids = {p.pid for p in dask_cluster.workers}
    assert holder["pid"] in pids  # a worker trains it
    os.kill(holder["pid"], signal.SIGKILL)
    rc, _, err = finish(proc)
    assert rc == 0, err
    folder = folder_of(tmp_path / "dask")
    assert_same_results(local, folder)
    env = (victim / "env.json").read_text()
    assert '"resumed"' in env  # the other worker resumed it from its checkpoint
