"""genlab sweep: expansion, the sweep folder, --list/--index/--dry-run, resume and skip, many
processes on one sweep, locked runs, and aggregation over seeds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlab import sweeps
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.locks import RunLock
from genlab.studies import STUDIES

ROBUSTNESS = STUDIES["robustness"]
# tiny robustness members: synthetic data, width 2, no views after training (fast)
FAST = ["--dataset", "synthetic", "--epochs", "2", "--batch-size", "32", "--views", "none"]


@pytest.fixture
def no_figures(monkeypatch):
    """Figures are tested in tests/test_report.py; drawing them here would only cost time."""
    monkeypatch.setattr("genlab.reporting.plot_run", lambda path: [])
    monkeypatch.setattr("genlab.reporting.plot_sweep", lambda folder: [])


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def sweep_folder(out: Path, study: str = "robustness") -> Path:
    (folder,) = (p for p in (out / study).iterdir() if p.name.startswith("sweep-"))
    return folder


def test_expansion_is_the_product_in_field_order_with_seeds():
    values = {"width": [2, 4], "augment": ["none", "double"], "seed": [0, 1, 2]}
    cfgs = sweeps.expand(ROBUSTNESS, None, values)
    assert len(cfgs) == 12
    assert [(c.width, c.augment, c.seed) for c in cfgs[:4]] == [
        (2, "none", 0),
        (2, "none", 1),
        (2, "none", 2),
        (2, "double", 0),
    ]
    assert len({(c.width, c.augment, c.seed) for c in cfgs}) == 12
    assert sweeps.seeds_values(3, None) == [0, 1, 2]
    assert sweeps.seeds_values(None, [3, 7]) == [3, 7]
    with pytest.raises(GenlabError, match="--seeds N and --seed"):
        sweeps.seeds_values(2, [1])
    with pytest.raises(GenlabError, match="--seeds 0"):
        sweeps.seeds_values(0, None)


def test_a_preset_sits_under_the_swept_values():
    cfgs = sweeps.expand(STUDIES["random-labels"], "under", {"label_noise": [0.0, 1.0]})
    assert [(c.width, c.optimizer, c.label_noise) for c in cfgs] == [
        (4, "sgd", 0.0),
        (4, "sgd", 1.0),
    ]


def test_named_sweeps_are_the_reports_grid_and_the_compare():
    grid = sweeps.named(STUDIES["random-labels"], "report", {"epochs": 3})
    assert [(c.width, c.label_noise, c.epochs) for c in grid] == [
        (w, p, 3) for w in (4, 64) for p in (0.0, 0.5, 1.0)
    ]
    compare = sweeps.named(ROBUSTNESS, "compare", {"width": 8})
    assert [c.augment for c in compare[:3]] == ["none", "double", "random"]
    with pytest.raises(GenlabError, match="no such sweep"):
        sweeps.named(ROBUSTNESS, "report", {})


def test_repeated_members_and_bad_indices_are_refused(tmp_path):
    cfgs = sweeps.expand(ROBUSTNESS, None, {"width": [2, 2]})
    with pytest.raises(GenlabError, match="members 0 and 1 of the sweep are the same run"):
        sweeps.make_sweep(ROBUSTNESS, cfgs, tmp_path)
    assert sweeps.parse_index("3", 5) == range(3, 4)
    assert sweeps.parse_index("1-4", 5) == range(1, 5)
    for bad in ("5", "3-1", "x", "-1", "1-9", "1-"):
        with pytest.raises(GenlabError, match="--index"):
            sweeps.parse_index(bad, 5)


def test_sweep_json_lists_the_members_and_the_folder_is_named_by_them(tmp_path, capsys):
    args = ["sweep", "robustness", *FAST, "--width", "2", "4", "--seeds", "2", "--dry-run"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 members" in out and out.count("--width") == 4
    assert not (tmp_path / "robustness").exists()  # a dry run writes nothing
    cfgs = sweeps.expand(ROBUSTNESS, None, {"dataset": ["synthetic"], "width": [2, 4]})
    a = sweeps.make_sweep(ROBUSTNESS, cfgs, tmp_path)
    b = sweeps.make_sweep(ROBUSTNESS, list(reversed(cfgs)), tmp_path)
    assert a.folder != b.folder and a.folder.name.startswith("sweep-")
    sweeps.write_record(a)
    record = json.loads((a.folder / "sweep.json").read_text())
    assert record["study"] == "robustness" and record["swept"] == ["width"]
    assert [m["index"] for m in record["members"]] == [0, 1]
    assert [m["run_id"] for m in record["members"]] == a.run_ids
    rebuilt = [ROBUSTNESS.config(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in m["config"].items()
    }) for m in record["members"]]  # fmt: skip
    assert rebuilt == cfgs  # the round trip gives the very configs


def test_list_index_resume_and_skip(no_figures, tmp_path, capsys):
    args = ["sweep", "robustness", *FAST, "--width", "2", "--seeds", "3", "--out", str(tmp_path)]
    assert main([*args, "--index", "1", "--quiet"]) == 0
    folder = sweep_folder(tmp_path)
    capsys.readouterr()
    assert main([*args, "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2"]
    assert [line.split()[-1] for line in lines] == ["new", "finished", "new"]
    member = folder / lines[1].split()[1]
    before = (member / "metrics.jsonl").read_text()

    assert main([*args, "--quiet"]) == 0  # the rest; member 1 is skipped
    assert (member / "metrics.jsonl").read_text() == before
    capsys.readouterr()
    assert main([*args, "--list"]) == 0
    states = [line.split()[-1] for line in capsys.readouterr().out.strip().splitlines()]
    assert states == ["finished"] * 3
    for run_dir in folder.iterdir():
        if (run_dir / "config.json").exists():
            assert [r["epoch"] for r in records(run_dir)] == [1, 2]


def test_a_killed_member_is_partial_and_resumes(no_figures, tmp_path, capsys):
    args = ["sweep", "robustness", *FAST, "--width", "2", "--seeds", "2", "--out", str(tmp_path)]
    assert main([*args, "--quiet"]) == 0
    folder = sweep_folder(tmp_path)
    member = sorted(p for p in folder.iterdir() if (p / "summary.json").exists())[0]
    (member / "summary.json").unlink()  # as if killed after its last checkpoint
    capsys.readouterr()
    assert main([*args, "--list"]) == 0
    assert "partial" in capsys.readouterr().out
    assert main([*args]) == 0
    assert f"resuming {member}" in capsys.readouterr().out
    assert (member / "summary.json").exists()


def test_aggregate_json_holds_the_t_interval_of_the_members(tmp_path):
    """Aggregated over seeds against the numbers computed by hand from the members' summaries."""
    args = ["sweep", "robustness", *FAST, "--width", "2", "--seeds", "3", "--lr", "0.05", "0.1"]
    assert main([*args, "--quiet", "--out", str(tmp_path)]) == 0
    folder = sweep_folder(tmp_path)
    entries = json.loads((folder / "aggregate.json").read_text())["entries"]
    assert [(e["settings"]["lr"], e["n"], e["seeds"]) for e in entries] == [
        (0.05, 3, [0, 1, 2]),
        (0.1, 3, [0, 1, 2]),
    ]
    t_2 = 4.302652729749464  # Student t, 97.5% quantile, 2 degrees of freedom
    for entry in entries:
        values = []
        for member in json.loads((folder / "sweep.json").read_text())["members"]:
            if member["config"]["lr"] == entry["settings"]["lr"]:
                summary = json.loads((folder / member["run_id"] / "summary.json").read_text())
                values.append(summary["final_acc"]["test_vflip"])
        mean = sum(values) / 3
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        got = entry["metrics"]["final_acc.test_vflip"]
        assert got["mean"] == pytest.approx(mean, abs=1e-12)
        assert got["std"] == pytest.approx(std, abs=1e-12)
        half = t_2 * std / math.sqrt(3)
        assert got["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-12)
        assert "per_class_acc.test_vflip.class0" in entry["metrics"]
    header = (folder / "aggregate.csv").read_text().splitlines()[0].split(",")
    assert "final_acc.test.ci95_low" in header and "n" in header


def test_mixed_settings_in_one_sweep_train_together_where_the_plan_says(no_figures, tmp_path):
    """Width 2 members of the sweep share cohorts (lanes or grouped chunks); those with random
    flips (drawn per batch) train alone; every member still holds exactly its epochs."""
    args = ["sweep", "robustness", *FAST, "--augment", "none", "random", "--width", "2"]
    args += ["--epochs", "1", "--seeds", "2", "--threads", "2", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    folder = sweep_folder(tmp_path)
    sizes = {}
    for member in json.loads((folder / "sweep.json").read_text())["members"]:
        rows = records(folder / member["run_id"])
        assert [r["epoch"] for r in rows] == [1]
        sizes[member["config"]["augment"]] = {(r["group_size"], r["lanes"]) for r in rows}
    assert sizes["random"] == {(1, 1)}
    assert sizes["none"] == {(1, 2)}  # two width-2 members: one lane each (plan)


def _sweep_process(out: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "genlab", "sweep", "robustness", *FAST, "--out", str(out)]
    env = {**os.environ, "GENLAB_THREADS": "1"}
    return subprocess.Popen(
        [*cmd, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_processes_on_one_new_sweep_train_each_member_once(tmp_path):
    extra = ["--width", "2", "--seeds", "4"]
    procs = [_sweep_process(tmp_path, extra) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folder = sweep_folder(tmp_path)
    members = json.loads((folder / "sweep.json").read_text())["members"]
    assert len(members) == 4
    for member in members:
        run_dir = folder / member["run_id"]
        assert [r["epoch"] for r in records(run_dir)] == [1, 2]  # once: not 1, 1, 2, 2
        env = json.loads((run_dir / "env.json").read_text())
        assert "resumed" not in env  # one process started it and finished it
    # every member was trained by exactly one of the two: its "started" lines add up to 4
    trained = sum(out.count("epoch   2/2") for out, _ in outputs)
    assert trained == 4
    assert not list(folder.glob(".*.lock"))


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = (
        "import sys; from pathlib import Path; from genlab.locks import RunLock\n"
        f"lock = RunLock(Path({str(run_dir)!r})).acquire()\n"
        "print('held', flush=True); sys.stdin.read(); lock.release()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_genlab_run_on_a_locked_run_exits_non_zero_with_one_line(no_figures, tmp_path, capsys):
    args = ["run", "robustness", *FAST, "--width", "2", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1", "--quiet"]) == 0
    (run_dir,) = (p for p in (tmp_path / "robustness").iterdir() if p.is_dir())
    (run_dir / "summary.json").unlink()
    holder = _hold_lock(run_dir)
    try:
        capsys.readouterr()
        assert main([*args, "--epochs", "1"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"genlab: error: {run_dir}: being trained by " in err
        assert f":{holder.pid} since " in err
        assert not (run_dir / "summary.json").exists()  # left to its holder
    finally:
        holder.communicate("", timeout=60)
    assert main([*args, "--epochs", "1", "--quiet"]) == 0  # released: it runs now
    assert (run_dir / "summary.json").exists()


def test_a_sweep_skips_a_locked_member_and_trains_the_others(no_figures, tmp_path, capsys):
    args = ["sweep", "robustness", *FAST, "--width", "2", "--seeds", "2", "--out", str(tmp_path)]
    cfgs = sweeps.expand(
        ROBUSTNESS,
        None,
        {"dataset": ["synthetic"], "epochs": [2], "batch_size": [32], "width": [2],
         "views": [("none",)], "seed": [0, 1]},
    )  # fmt: skip
    sweep = sweeps.make_sweep(ROBUSTNESS, cfgs, tmp_path)
    locked = sweep.folder / sweep.run_ids[0]
    holder = _hold_lock(locked)
    try:
        assert main([*args, "--list"]) == 0
        assert capsys.readouterr().out.split()[2] == "locked"
        assert main(args) == 0
        out = capsys.readouterr().out
        assert f"{locked}: being trained by" in out
        assert not locked.exists()  # never opened by this process
        assert (sweep.folder / sweep.run_ids[1] / "summary.json").exists()
    finally:
        holder.communicate("", timeout=60)


def test_a_lock_whose_holder_was_killed_does_not_block(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    holder = _hold_lock(run_dir)
    holder.kill()
    holder.wait()
    with RunLock(run_dir) as lock:  # the kernel dropped the dead holder's lock
        assert lock.holder()["pid"] == os.getpid()


def test_a_named_sweep_with_several_values_is_refused(tmp_path, capsys):
    args = ["sweep", "random-labels", "--name", "report", "--width", "2", "4"]
    assert main([*args, "--out", str(tmp_path)]) == 1
    assert "--name report: takes one value per setting" in capsys.readouterr().err
    assert not tmp_path.joinpath("random-labels").exists()


def test_boolean_and_none_values_sweep_and_print_as_typed(tmp_path, capsys):
    args = ["sweep", "random-labels", "--dataset", "synthetic", "--train-subset", "none", "100"]
    args += ["--corrupt-test", "true", "false", "--dry-run", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 members" in out
    assert "--train-subset none --corrupt-test true" in out
    assert "--train-subset 100 --corrupt-test false" in out
    cfgs = sweeps.expand(
        STUDIES["random-labels"], None, {"train_subset": [None, 100], "corrupt_test": [True, False]}
    )
    assert [(c.train_subset, c.corrupt_test) for c in cfgs] == [
        (None, True), (None, False), (100, True), (100, False),
    ]  # fmt: skip


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for command in (["sweep", "robustness", *FAST, "--seeds", "2"], ["run", "robustness", *FAST]):
        for extra in ([], ["--dry-run"]) if command[0] == "sweep" else ([],):
            assert main([*command, *extra, "--out", str(tmp_path / "file" / "runs")]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "is a file, not a folder" in err


def test_a_broken_sweep_json_is_one_line(tmp_path, capsys):
    args = ["sweep", "robustness", *FAST, "--seeds", "2", "--out", str(tmp_path)]
    cfgs = sweeps.build(ROBUSTNESS, {"dataset": ["synthetic"]}, tmp_path, seeds=1).folder
    sweep = sweeps.build(
        ROBUSTNESS,
        {"dataset": ["synthetic"], "epochs": [2], "batch_size": [32], "views": [("none",)]},
        tmp_path,
        seeds=2,
    )
    assert cfgs != sweep.folder
    sweep.folder.mkdir(parents=True)
    (sweep.folder / "sweep.json").write_text('{"members": 5}')
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a sweep record" in err


def test_a_member_that_fails_does_not_stop_the_others(no_figures, tmp_path, capsys):
    """A diverging member (lr 1e20) and one whose data cannot be had (a subset larger than the
    training split) fail with one line naming them; the healthy member trains and finishes,
    and the member that failed before its first checkpoint leaves no run folder."""
    args = ["sweep", "robustness", *FAST, "--width", "2", "--lr", "0.05", "1e20", "--out"]
    assert main([*args, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 members failed" in err
    assert "training loss is nan" in err or "training loss is inf" in err
    folder = sweep_folder(tmp_path)
    states = {}
    for member in json.loads((folder / "sweep.json").read_text())["members"]:
        states[member["config"]["lr"]] = sweeps.member_state(folder / member["run_id"])
    assert states == {0.05: "finished", 1e20: "new"}  # diverged in epoch 1: nothing kept
    entries = json.loads((folder / "aggregate.json").read_text())["entries"]
    assert [(e["settings"]["lr"], e["n"]) for e in entries] == [(0.05, 1)]  # what finished

    args = ["sweep", "robustness", *FAST, "--train-subset", "100", "100000", "--out"]
    assert main([*args, str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train-subset 100000: must be between" in err
    folder = sweep_folder(tmp_path / "b")
    runs = [p for p in folder.iterdir() if (p / "config.json").exists()]
    assert len(runs) == 1 and (runs[0] / "summary.json").exists()

    assert (
        main(["run", "robustness", *FAST, "--train-subset", "0", "--out", str(tmp_path / "c")]) == 1
    )
    assert "--train-subset 0" in capsys.readouterr().err
    assert not any((tmp_path / "c" / "robustness").iterdir())  # a failed start leaves nothing


def test_members_are_claimed_a_batch_at_a_time(no_figures, tmp_path, monkeypatch):
    """With room for two members side by side, a sweep of five claims (locks) two, trains and
    releases them before it claims the next: other processes can take what is not claimed."""
    from genlab import launch

    monkeypatch.setattr(launch, "claim_size", lambda device: 2)
    real_run, batches = ROBUSTNESS.run, []

    def spy(members, rt):
        batches.append([run.path for _, run in members])
        locked = sorted(p.name for p in members[0][1].path.parent.glob(".*.lock"))
        assert locked == sorted(f".{run.path.name}.lock" for _, run in members)
        return real_run(members, rt)

    monkeypatch.setattr(launch.Study, "run", property(lambda self: spy), raising=False)
    args = ["sweep", "robustness", *FAST, "--width", "2", "--seeds", "5", "--quiet"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert [len(b) for b in batches] == [2, 2, 1]
    assert len({p for b in batches for p in b}) == 5


def test_a_sequence_setting_is_one_value_in_python_unless_a_list_of_lists(tmp_path):
    import genlab

    tiny = {"dataset": "synthetic", "n": 32, "image_size": 8, "epochs": 1, "noise_levels": [0.0]}
    one = genlab.sweep("memorization-map", out=tmp_path, quiet=True, widths=[1, 2], **tiny)
    record = json.loads((one / "sweep.json").read_text())
    assert [m["config"]["widths"] for m in record["members"]] == [[1, 2]]
    two = genlab.sweep("memorization-map", out=tmp_path, quiet=True, widths=[[1], [2]], **tiny)
    record = json.loads((two / "sweep.json").read_text())
    assert [m["config"]["widths"] for m in record["members"]] == [[1], [2]]


def test_a_failing_member_of_a_study_run_member_by_member_is_the_only_one_named(
    no_figures, tmp_path, capsys
):
    args = ["sweep", "memorization-map", "--dataset", "synthetic", "--n", "100000", "20"]
    args += ["--widths", "2", "--noise-levels", "0", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 members failed" in err
    assert err.count("--n 100000: the training split has only") == 1
    folder = sweep_folder(tmp_path, "memorization-map")
    finished = [p for p in folder.iterdir() if (p / "summary.json").exists()]
    assert (
        len(finished) == 1
        and json.loads((finished[0] / "config.json").read_text())["config"]["n"] == 20
    )
