"""Linear mode connectivity: exact ends of the path, a zero barrier of a network with itself,
children spawned from the parent's exact state that differ only in data order, a killed run
resumed bit for bit, one-line errors for bad flags, the figures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from genlab import cli
from genlab.fileio import read_json, write_json
from genlab.launch import run_dir_for, run_members
from genlab.reporting import connectivity as report
from genlab.reporting import plot_run
from genlab.runs import CHECKPOINT, CHILDREN, CONFIG, INTERPOLATION, METRICS, SUMMARY, Run
from genlab.studies import STUDIES
from genlab.studies.common import SharedData
from genlab.studies.connectivity import (
    Config,
    alphas,
    child_member,
    child_seed,
    interpolate,
    measure_at,
    path,
    setup,
    spawn,
)
from genlab.training import fit
from genlab.training.loop import resume
from genlab.training.runtime import Runtime

STUDY = STUDIES["connectivity"]
TINY = {
    "train_subset": 120,
    "test_subset": 100,
    "width": 4,
    "epochs": 3,
    "spawn_epochs": (0, 1),
    "children": 2,
    "points": 3,
}


def runtime() -> Runtime:
    return Runtime.resolve(device="cpu", threads=1, quiet=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """One finished tiny run (its parent also keeps epoch 2, for the next-epoch check)."""
    cfg = Config(**TINY, keep_checkpoints=(0, 2))
    out = tmp_path_factory.mktemp("connectivity")
    folder = run_dir_for(STUDY, cfg, out)
    run_members(STUDY, [(cfg, folder)], runtime())
    return cfg, folder


def states(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(folder / CHILDREN / name / CHECKPOINT, weights_only=True)["model"]


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def equal_states(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            if not (isinstance(y, dict) and equal_states(x, y)):
                return False
        elif torch.is_tensor(x):
            if not (torch.is_tensor(y) and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def test_the_ends_of_the_path_are_the_children_exactly(tiny):
    cfg, folder = tiny
    rt, shared = runtime(), SharedData()
    s = setup(cfg, None, rt, shared)
    first, second = states(folder, "k1-c0"), states(folder, "k1-c1")
    for alpha, end in ((0.0, first), (1.0, second)):
        mixed = interpolate(first, second, alpha)
        assert all(torch.equal(mixed[k], end[k]) for k in end)
    model = child_member(cfg, s, None, 0, rt, shared).model
    views = {"train": s.member.train, **{v: s.member.views[v] for v in ("test", "test_vflip")}}
    found = read_json(folder / INTERPOLATION)["spawn_epochs"][1]
    assert found["epoch"] == 1 and found["pairs"][0]["children"] == [0, 1]
    curves = found["pairs"][0]["path"]
    for index, end in ((0, first), (-1, second)):  # each end measured on its own, the same way
        alone = measure_at(model, end, s.member.train, views, s.member, rt.precision)
        for v, metrics in alone.items():
            assert curves[v]["acc"][index] == metrics["acc"]
            assert curves[v]["loss"][index] == metrics["loss"]
    # the midpoint is a different network: recomputed statistics, a different error
    assert alphas(3) == [0.0, 0.5, 1.0]
    summary = read_json(folder / SUMMARY)
    assert summary["barrier"]["test"]["k1"]["mean"] == found["pairs"][0]["barrier"]["test"]


def test_the_barrier_of_a_network_with_itself_is_zero(tiny):
    cfg, folder = tiny
    rt, shared = runtime(), SharedData()
    s = setup(cfg, None, rt, shared)
    model = child_member(cfg, s, None, 0, rt, shared).model
    state = states(folder, "k0-c0")
    found = path(model, state, state, alphas(4), s.member, rt.precision)
    for v in ("train", "test", "test_vflip"):
        assert found["barrier"][v] == 0.0 and found["loss_barrier"][v] == 0.0
        assert len(set(found["path"][v]["acc"])) == 1


def test_children_start_from_the_parents_state_and_differ_only_in_data_order(tiny, tmp_path):
    cfg, folder = tiny
    rt, shared = runtime(), SharedData()
    parent = Run(folder, "finished")
    s = setup(cfg, None, rt, shared)
    kept = parent.load_kept(1)
    assert kept["optimizer"]["state"], "momentum buffers: the optimizer state is not empty"
    members = {}
    for name, seed in (("a", child_seed(cfg.seed, 1, 0)), ("b", child_seed(cfg.seed, 1, 1))):
        child = spawn(parent, tmp_path / name, 1)
        m = child_member(cfg, s, child, seed, rt, shared)
        epoch, history = resume(child, m.model, m.optimizer, print, cfg.epochs)
        assert epoch == 1 and history == parent.metrics()[:1]
        assert equal_states(m.model.state_dict(), kept["model"])
        assert equal_states(m.optimizer.state_dict(), kept["optimizer"])
        members[name] = replace(m, spec=replace(m.spec, epochs=2))
    # the same config but for the seed of the data order
    assert replace(members["a"].spec, seed=0) == replace(members["b"].spec, seed=0)
    assert members["a"].spec.seed != members["b"].spec.seed
    # a child with the parent's own seed: the parent's next epoch, bit for bit
    twin = spawn(parent, tmp_path / "twin", 1)
    m = child_member(cfg, s, twin, cfg.seed, rt, shared)
    members["twin"] = replace(m, spec=replace(m.spec, epochs=2))
    for m in members.values():
        fit([m], rt)  # each alone, as the parent trained
    a, b = (members[n].model.state_dict() for n in "ab")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    next_epoch = parent.load_kept(2)
    assert equal_states(members["twin"].model.state_dict(), next_epoch["model"])
    assert equal_states(members["twin"].optimizer.state_dict(), next_epoch["optimizer"])
    ignore = ("seconds", "eval_seconds", "cohort")
    same = lambda r: {k: v for k, v in r.items() if k not in ignore}  # noqa: E731
    assert same(Run(tmp_path / "twin", "resume").metrics()[1]) == same(parent.metrics()[1])


ARGS = [
    "run",
    "connectivity",
    "--dataset",
    "digits",
    "--train-subset",
    "120",
    "--test-subset",
    "100",
    "--width",
    "4",
    "--epochs",
    "6",
    "--spawn-epochs",
    "0",
    "1",
    "--points",
    "3",
    "--device",
    "cpu",
]


def genlab(out: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "genlab", *ARGS, "--out", str(out)],
        env={**os.environ, "GENLAB_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kw,
    )


def test_a_run_killed_while_its_children_train_resumes_bit_for_bit(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = genlab(killed)
    deadline = time.monotonic() + 120
    seen = None
    while seen is None and proc.poll() is None and time.monotonic() < deadline:
        for f in killed.glob(f"connectivity/*/{CHILDREN}/k0-c*/{METRICS}"):
            if f.read_text().count("\n") >= 1:  # a k = 0 child saved its first epoch's record
                seen = f
        time.sleep(0.005)
    assert seen is not None, proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = seen.parents[2]
    assert not (run_dir / SUMMARY).exists() and not (run_dir / INTERPOLATION).exists()
    epochs = [
        torch.load(c / CHECKPOINT, weights_only=True)["epoch"]
        for c in (run_dir / CHILDREN).iterdir()
        if (c / CHECKPOINT).exists()
    ]
    assert min(epochs) < 6, "killed while the children trained"

    for out in (killed, clean):
        done = genlab(out)
        assert done.wait(timeout=300) == 0, done.stderr.read().decode()
    twin = clean / run_dir.relative_to(killed)
    for child in sorted((twin / CHILDREN).iterdir()):
        got = run_dir / CHILDREN / child.name
        a = torch.load(got / CHECKPOINT, weights_only=True)
        b = torch.load(child / CHECKPOINT, weights_only=True)
        assert a["epoch"] == b["epoch"] == 6
        assert equal_states(a["model"], b["model"]) and equal_states(a["optimizer"], b["optimizer"])
        records = lambda d: without_timing(Run(d, "resume").metrics())  # noqa: E731
        assert records(got) == records(child)
    assert read_json(run_dir / INTERPOLATION) == read_json(twin / INTERPOLATION)
    assert without_timing(read_json(run_dir / SUMMARY)) == without_timing(read_json(twin / SUMMARY))


@pytest.mark.parametrize(
    ("flags", "start"),
    [
        (["--spawn-epochs", "0", "9"], "--spawn-epochs 9: must be below --epochs 4"),
        (["--spawn-epochs", "-1"], "--spawn-epochs -1: must be >= 0"),
        (["--children", "1"], "--children 1: must be >= 2"),
        (["--points", "1"], "--points 1: must be >= 2"),
        (
            ["--spawn-epochs", "0", "--stop-at-train-acc", "1"],
            "--stop-at-train-acc 1.0: not with connectivity",
        ),
    ],
)
def test_bad_flags_are_one_line_and_leave_no_folder(tmp_path, capsys, flags, start):
    rc = cli.main(["run", "connectivity", "--epochs", "4", *flags, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith(f"genlab: error: {start}")
    assert not any(tmp_path.iterdir())


def test_the_figures_are_drawn(tiny, tmp_path, monkeypatch):
    _, folder = tiny
    assert {f.name for f in plot_run(folder)} == {"barrier.png", "paths.png"}
    # a sweep of two parent seeds at two label noises, made from copies of the run
    sweep = tmp_path / "sweep"
    dirs = []
    for p in (0.0, 1.0):
        for seed in (0, 1):
            d = sweep / f"p{p}-s{seed}"
            shutil.copytree(folder, d, ignore=shutil.ignore_patterns("*.pt", CHILDREN))
            record = read_json(d / CONFIG)
            record["identity"].update(seed=seed, label_noise=p)
            write_json(d / CONFIG, record)
            summary = read_json(d / SUMMARY)
            summary["barrier"]["test"]["k1"]["mean"] = p + seed / 10
            write_json(d / SUMMARY, summary)
            dirs.append(d)
    (figure,) = report.plot_sweep(sweep, dirs)
    assert figure.name == "barrier_sweep.png" and figure.stat().st_size > 0
    drawn = []
    monkeypatch.setattr(report, "save", lambda fig, to: drawn.append(fig) or to)
    report.plot_sweep(sweep, dirs)
    test_panel = drawn[0].axes[0]
    at_k1 = [c.lines[0].get_ydata()[1] for c in test_panel.containers]  # one line per p
    assert at_k1 == pytest.approx([0.05, 1.05])  # the mean over the two seeds
    report.pyplot().close(drawn[0])
