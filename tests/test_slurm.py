"""A real one-node Slurm cluster (``.ci/slurm.sh start``; these tests skip without one, and fail
in CI, where GENLAB_REQUIRE_SLURM=1): a sweep as a job array equals the same sweep run here; a
cancelled task is reported and re-running the command finishes it; a preempted task is requeued
and resumes; --no-wait and --list; Slurm and Dask on one sweep at once train each member once."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from launching import (
    assert_same_results,
    finish,
    folder_of,
    genlab,
    members,
    mid_training,
    run_local,
    sweep_args,
    trained_once,
    wait_for_sweep_folder,
)

from genlab.launchers import read_jobs
from genlab.launchers.slurm import slurm_up

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]
pytest.importorskip("submitit")

SETTINGS = ("--width", "4", "8", "--seeds", "2", "--epochs", "2")
# members of ~15 s on one thread: a cancelled one (Slurm's KillWait: 5 s) cannot finish first
LONG = ("--width", "8", "--seeds", "2", "--epochs", "20", "--train-subset", "1000")


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not slurm_up():
        why = "no Slurm controller answers with a node that takes jobs"
        if os.environ.get("GENLAB_REQUIRE_SLURM") == "1":
            pytest.fail(f"GENLAB_REQUIRE_SLURM=1 but {why} (bash .ci/slurm.sh start)")
        pytest.skip(f"{why}; start one with: bash .ci/slurm.sh start")


@pytest.fixture(autouse=True)
def _cancel_what_the_test_submitted(tmp_path):
    """Stop what a test started, also when it fails midway: its jobs are in jobs/ records."""
    yield
    jobs = [job for f in tmp_path.rglob("jobs") for job in read_jobs(f.parent, "slurm")]
    ids = {job["job_id"] for job in jobs}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], check=False)


def slurm_args(out, *settings: str) -> list[str]:
    return [
        *sweep_args(out, *settings),
        "--launcher",
        "slurm",
        "--slurm-time-min",
        "20",
        "--slurm-mem-gb",
        "1",
    ]


def task_of(folder, run_dir) -> str:
    """The array task id (``123_4``) whose range holds ``run_dir``, from jobs/ (newest)."""
    index = [p.name for p in members(folder)].index(run_dir.name)
    for job in reversed(read_jobs(folder, "slurm")):
        for task in job["tasks"]:
            if task["index"][0] <= index <= task["index"][1]:
                return task["id"]
    raise AssertionError(f"{run_dir.name} is in no task")


def test_a_sweep_as_a_job_array_equals_the_same_sweep_run_here(tmp_path):
    local = run_local(tmp_path / "local", *SETTINGS)
    rc, out, err = finish(genlab(*slurm_args(tmp_path / "slurm", *SETTINGS)))
    assert rc == 0, err
    folder = folder_of(tmp_path / "slurm")
    assert "(3 tasks)" in out and out.strip().endswith(f"results: {folder}")
    assert_same_results(local, folder)
    trained_once(folder)
    (job,) = read_jobs(folder)
    for run_dir in members(folder):  # env.json names the array task that trained it
        env = json.loads((run_dir / "env.json").read_text())
        assert env["slurm_job"] == task_of(folder, run_dir)
    for task in job["tasks"]:  # the logs are under the sweep folder
        assert folder / "slurm" in Path(task["log"]).parents


def test_a_cancelled_task_is_reported_and_re_running_finishes_it(tmp_path):
    local = run_local(tmp_path / "local", *LONG)
    args = slurm_args(tmp_path / "slurm", *LONG)
    proc = genlab(*args)
    folder = wait_for_sweep_folder(tmp_path / "slurm", proc)
    victim, _ = mid_training(folder, proc)
    task = task_of(folder, victim)
    subprocess.run(["scancel", task], check=True)
    rc, out, err = finish(proc)
    assert rc == 1
    assert f"{victim.name} failed (slurm task {task}" in err
    assert err.strip().splitlines()[-1].startswith("genlab: error: 1 of 2 members failed")
    # again: only the cancelled member is submitted, resumed from its checkpoint
    rc, out, err = finish(genlab(*args))
    assert rc == 0, err
    assert "slurm: submitted job " in out and "tasks)" not in out  # one task: a plain job
    assert_same_results(local, folder)
    assert "resumed" in json.loads((victim / "env.json").read_text())


def test_a_preempted_task_is_requeued_and_resumes(tmp_path):
    local = run_local(tmp_path / "local", *LONG)
    proc = genlab(*slurm_args(tmp_path / "slurm", *LONG))
    folder = wait_for_sweep_folder(tmp_path / "slurm", proc)
    victim, _ = mid_training(folder, proc)
    task = task_of(folder, victim)
    # what Slurm sends before a time limit or a preemption (submitit asks for USR2)
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert_same_results(local, folder)
    env = json.loads((victim / "env.json").read_text())
    assert [e["slurm_job"] for e in env["resumed"]] == [task]  # the same task, requeued


def test_no_wait_returns_and_list_shows_the_scheduler(tmp_path):
    args = slurm_args(tmp_path / "slurm", *SETTINGS)
    # held: the tasks stay queued until released, so --list and the join see them queued
    rc, out, err = finish(genlab(*args, "--slurm-extra", "hold", "--no-wait"))
    assert rc == 0, err
    assert "slurm: submitted job array" in out and "results:" not in out
    array = out.split("slurm: submitted job array ")[1].split()[0]
    rc, listing, err = finish(genlab(*args, "--list"))
    assert rc == 0, err
    lines = listing.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3"]
    assert all(line.split()[2] == "new" and f" slurm {array}_" in line for line in lines)
    assert all("PENDING" in line for line in lines), listing
    joined = genlab(*args, env={"PYTHONUNBUFFERED": "1"})  # joins the queued array
    seen = ""
    while "members:" not in seen:  # its first look at the queue, before the release
        line = joined.stdout.readline()
        assert line, joined.communicate()
        seen += line
    subprocess.run(["scontrol", "release", array], check=True)
    rc, out, err = finish(joined)
    out = seen + out
    assert rc == 0, err
    assert "submitted" not in out and "4 members: 4 finished" in out
    trained_once(folder_of(tmp_path / "slurm"))


def test_slurm_and_dask_on_one_sweep_at_once_train_each_member_once(tmp_path):
    settings = ("--width", "8", "--seeds", "4", "--epochs", "3")
    local = run_local(tmp_path / "local", *settings)
    out = tmp_path / "both"
    procs = [
        genlab(*slurm_args(out, *settings)),
        genlab(*sweep_args(out, *settings), "--launcher", "dask", "--threads", "2"),
    ]
    results = [finish(p) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0], results
    folder = folder_of(out)
    assert_same_results(local, folder)
    trained_once(folder)


def test_a_refused_submission_is_one_line_and_leaves_nothing(tmp_path):
    args = [*slurm_args(tmp_path, *SETTINGS), "--slurm-partition", "nosuch", "--quiet"]
    rc, out, err = finish(genlab(*args))
    assert rc == 1 and out == ""
    assert err.startswith("genlab: error: --launcher slurm: sbatch refused the job array: ")
    assert err.count("\n") == 1 and "nosuch" in err
    assert not (tmp_path / "robustness").exists()
