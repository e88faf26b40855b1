"""The Python API: genlab.run / sweep / load_run / runs_frame, and configs checked in Python."""

from __future__ import annotations

import json

import pytest
import torch

import genlab
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.studies import memorization_map, random_labels, robustness
from genlab.training import evaluate

TINY = {"dataset": "synthetic", "width": 2, "epochs": 2, "batch_size": 32, "views": ("none",)}


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    monkeypatch.setattr("genlab.reporting.plot_run", lambda path: [])
    monkeypatch.setattr("genlab.reporting.plot_sweep", lambda folder: [])


def test_run_then_load_run_gives_the_trained_model_back(tmp_path):
    path = genlab.run("robustness", out=tmp_path, quiet=True, **TINY)
    assert path.parent == tmp_path / "robustness" and (path / "summary.json").exists()
    run = genlab.load_run(path)
    assert run.study == "robustness" and run.epoch == 2
    assert run.config == robustness.Config(**TINY)
    assert not run.model.training  # eval mode
    assert list(run.metrics["epoch"]) == [1, 2] and "test_vflip_acc" in run.metrics
    test = load_dataset("synthetic", None, quiet=True).test
    again = evaluate(run.model, test.images, test.labels, run.normalize, test.num_classes)
    assert again["acc"] == run.summary["final_acc"]["test"] == run.metrics["test_acc"].iloc[-1]
    assert genlab.run("robustness", out=tmp_path, quiet=True, **TINY) == path  # finished: skipped


def test_a_run_in_python_is_the_same_as_from_the_command_line(tmp_path):
    from genlab.cli import main

    api = genlab.run("robustness", out=tmp_path / "api", quiet=True, **TINY)
    argv = ["run", "robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "2"]
    argv += ["--batch-size", "32", "--views", "none", "--threads", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    cli = tmp_path / "cli" / "robustness" / api.name
    a = torch.load(api / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(cli / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sweep_and_runs_frame(tmp_path):
    folder = genlab.sweep(
        "random-labels", out=tmp_path, quiet=True, seeds=2, label_noise=[0.0, 1.0],
        **{k: v for k, v in TINY.items() if k != "views"}, train_subset=64,
    )  # fmt: skip
    assert folder.name.startswith("sweep-") and (folder / "aggregate.json").exists()
    frame = genlab.runs_frame(folder)
    assert len(frame) == 4 and set(frame["sweep"]) == {folder.name}
    assert set(frame["state"]) == {"finished"}
    assert sorted(zip(frame["label_noise"], frame["seed"], strict=True)) == [
        (0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1),
    ]  # fmt: skip
    for column in ("final_acc.test", "per_class_acc.test.class0", "final_train_fitted_acc"):
        assert column in frame.columns
    for _, row in frame.iterrows():
        summary = json.loads((tmp_path.joinpath(row["path"]) / "summary.json").read_text())
        assert row["final_acc.test"] == summary["final_acc"]["test"]
        assert row["fraction_changed"] == summary["fraction_changed"]
    aggregate = json.loads((folder / "aggregate.json").read_text())["entries"]
    assert [(e["settings"]["label_noise"], e["n"]) for e in aggregate] == [(0.0, 2), (1.0, 2)]


def test_a_sweep_with_a_name_runs_the_named_members(tmp_path):
    folder = genlab.sweep(
        "robustness", name="compare", out=tmp_path, quiet=True, **{**TINY, "epochs": 1}
    )
    record = json.loads((folder / "sweep.json").read_text())
    assert record["name"] == "compare" and len(record["members"]) == 5


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: robustness.Config(model="conv5"), "--model: 'conv5' is not one of"),
        (lambda: robustness.Config(optimizer="rmsprop"), "--optimizer: 'rmsprop'"),
        (lambda: robustness.Config(augment="sideways"), "--augment"),
        (lambda: random_labels.Config(randomize="x"), "--randomize"),
        (lambda: memorization_map.Config(label_noise_mode="x"), "--label-noise-mode"),
        (lambda: genlab.run("robustness", widht=4), "robustness has no setting --widht"),
        (lambda: genlab.run("nope"), "'nope': no such study"),
        (lambda: genlab.load_run("/nonexistent/run"), "not a run folder"),
        (lambda: genlab.sweep("robustness", width=[]), "give at least one value"),
    ],
)
def test_bad_settings_in_python_raise_a_genlab_error(build, needle):
    with pytest.raises(GenlabError) as info:
        build()
    assert needle in str(info.value)
