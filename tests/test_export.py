"""``genlab export csv`` and ``genlab export tensorboard``: finished runs' records, read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from genlab import cli
from genlab.export import scalars, tag
from genlab.runs import DATASET, METRICS, TENSORBOARD


def _run(tmp_path: Path, capsys, *args: str) -> Path:
    assert cli.main([*args, "--device", "cpu", "--out", str(tmp_path), "--quiet"]) == 0
    return Path(capsys.readouterr().out.splitlines()[-1].removeprefix("results: "))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two robustness runs (width 2 for 2 epochs, width 3 for 3) and one linreg run with its
    ridge path and a small p sweep."""
    out = tmp_path_factory.mktemp("runs")
    made = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_THREADS", "1")
        for width, epochs in (("2", "2"), ("3", "3")):
            args = ["run", "robustness", "--dataset", "synthetic", "--width", width]
            assert cli.main([*args, "--epochs", epochs, "--out", str(out), "--quiet"]) == 0
        args = ["run", "linreg", "--n", "20", "--p", "40", "--epochs", "4", "--sweep-p"]
        args += ["--sweep-points", "5", "--sweep-seeds", "2", "--no-sklearn-check"]
        assert cli.main([*args, "--out", str(out), "--quiet"]) == 0
    made = sorted(p.parent for p in out.rglob(METRICS))
    assert len(made) == 3
    return out, made


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / METRICS).read_text().splitlines()]


def test_tags_are_grouped():
    assert tag("train_loss") == "train/loss" and tag("test_vflip_acc") == "test_vflip/acc"
    assert tag("train_noisy_loss") == "train_noisy/loss" and tag("seconds") == "time/seconds"
    assert (
        tag("gd_test_mse") == "gd/test_mse" and tag("remaining", "lottery") == "lottery/remaining"
    )
    record = {
        "epoch": 3,
        "cohort": ["a"],
        "lanes": 1,
        "stopped": False,
        "train_acc": 0.5,
        "test_per_class_acc": [0.25, None, 1.0],
        "train_noisy_acc": None,
    }
    assert scalars(record, ["cat", "dog", "eel"]) == {
        "train/acc": 0.5,
        "per_class/test/cat": 0.25,
        "per_class/test/eel": 1.0,
    }  # bookkeeping, booleans and missing values are no curves
    assert scalars({"round": 2, "kind": "random", "remaining": 40}) == {"random/remaining": 40.0}


def test_csv_has_one_row_per_run_per_record_equal_to_metrics(runs, tmp_path, capsys):
    out, made = runs
    table = tmp_path / "all.csv"
    assert cli.main(["export", "csv", str(out), "--out", str(table)]) == 0
    expected = sum(len(_records(r)) for r in made)
    assert capsys.readouterr().out == f"csv: {table} ({expected} rows)\n"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == expected == 2 + 3 + 5  # linreg records epoch 0 too
    assert {"run", "path", "study", "epoch", "width", "train_acc", "gd_test_mse"} <= set(rows[0])
    assert list(rows[0])[:3] == ["run", "path", "study"] and "cohort" not in rows[0]
    for run in made:
        mine = [r for r in rows if r["path"] == str(run)]
        records = _records(run)
        assert [int(r["epoch"]) for r in mine] == [r["epoch"] for r in records]
        assert {r["run"] for r in mine} == {run.name}
        for row, record in zip(mine, records, strict=True):
            for key, value in record.items():
                if isinstance(value, float):
                    assert float(row[key]) == value  # every digit
        if "robustness" in str(run):
            classes = json.loads((run / DATASET).read_text())["classes"]
            config = json.loads((run / "config.json").read_text())["config"]
            assert {r["width"] for r in mine} == {str(config["width"])}
            last = records[-1]["test_vflip_per_class_acc"]
            assert [float(mine[-1][f"test_vflip_per_class_acc_{c}"]) for c in classes] == last


def test_csv_refuses_to_overwrite_without_force(runs, tmp_path, capsys):
    out, _ = runs
    table = tmp_path / "all.csv"
    table.write_text("mine\n")
    assert cli.main(["export", "csv", str(out), "--out", str(table)]) == 1
    err = capsys.readouterr().err
    assert err == f"genlab: error: --out {table}: exists already; use --force to replace it\n"
    assert table.read_text() == "mine\n"
    assert cli.main(["export", "csv", str(out), "--out", str(table), "--force"]) == 0
    assert table.read_text().startswith("run,path,study,")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "{p}: no such file or folder"),
        ("empty", "{p}: no run folders found"),
    ],
)
def test_bad_paths_are_one_line_and_write_nothing(tmp_path, capsys, where, message):
    path = tmp_path / where
    if where == "empty":
        path.mkdir()
    table = tmp_path / "t.csv"
    for args in (["csv", str(path), "--out", str(table)], ["tensorboard", str(path)]):
        assert cli.main(["export", *args]) == 1
        err = capsys.readouterr().err
        assert err == f"genlab: error: {message.format(p=path)}\n"
    assert not table.exists()


def _check_hparams(events, run: Path, tags: set[str]) -> None:
    """The run's settings are its hparams (config.json's values), its accuracies and losses (or
    MSEs) their metrics, each one of the run's own tags."""
    from tensorboard.plugins.hparams import metadata

    content = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    start = metadata.parse_session_start_info_plugin_data(content)
    config = json.loads((run / "config.json").read_text())
    values = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.hparams.items()
    }
    assert values["study"] == config["study"]
    for key, value in config["config"].items():
        if isinstance(value, bool | str):
            assert values[key] == value, key
        elif isinstance(value, int | float):
            assert values[key] == pytest.approx(value), key
    content = events.summary_metadata["_hparams_/experiment"].plugin_data.content
    metrics = {m.name.tag for m in metadata.parse_experiment_plugin_data(content).metric_infos}
    assert metrics and metrics <= tags
    assert ("test/acc" in metrics) if "robustness" in str(run) else ("gd/test_mse" in metrics)


def test_tensorboard_export_reads_back_equal_to_metrics(runs, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "runs"
    shutil.copytree(runs[0], out)
    made = sorted(p.parent for p in out.rglob(METRICS))
    assert cli.main(["export", "tensorboard", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"tensorboard: {r / TENSORBOARD}" for r in made]
    for run in made:
        events = EventAccumulator(str(run / TENSORBOARD))
        events.Reload()
        records = _records(run)
        tags = set(events.Tags()["scalars"])
        if "robustness" in str(run):
            assert {"train/loss", "test/acc", "test_vflip/acc", "time/seconds"} <= tags
            pairs = (("train_loss", "train/loss"), ("test_vflip_acc", "test_vflip/acc"))
        else:
            curves = {f"{m}/{c}" for m in ("gd", "sgd") for c in (
                "train_mse", "test_mse", "dist_to_min_norm", "norm", "outside_row_space")}  # fmt: skip
            curves |= {f"ridge/{c}" for c in ("train_mse", "test_mse", "norm", "dist_to_min_norm")}
            curves |= {f"double_descent/test_mse_{c}" for c in ("mean", "std", "theory")}
            assert tags == curves
            pairs = (("sgd_dist_to_min_norm", "sgd/dist_to_min_norm"),)
            ridge = json.loads((run / "ridge.json").read_text())
            got = [(e.step, e.value) for e in events.Scalars("ridge/test_mse")]
            assert got == [(i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(ridge["test_mse"])]
            sweep = json.loads((run / "double_descent.json").read_text())
            got = [(e.step, e.value) for e in events.Scalars("double_descent/test_mse_mean")]
            expected = zip(sweep["p"], sweep["test_mse_mean"], strict=True)
            assert got == [(p, pytest.approx(v, rel=1e-6)) for p, v in expected]  # step: p
        for key, name in pairs:
            got = [(e.step, e.value) for e in events.Scalars(name)]
            assert got == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in records]
        _check_hparams(events, run, tags)
        assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporaries

    before = {r: sorted(p.name for p in (r / TENSORBOARD).iterdir()) for r in made}
    assert cli.main(["export", "tensorboard", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"genlab: error: {made[0] / TENSORBOARD} and 2 more: exists already")
    assert before == {r: sorted(p.name for p in (r / TENSORBOARD).iterdir()) for r in made}
    assert cli.main(["export", "tensorboard", str(out), "--force"]) == 0
    for run in made:  # written again: one file of events, the earlier one replaced
        assert len(list((run / TENSORBOARD).iterdir())) == 1


def test_a_damaged_run_is_one_line_and_nothing_is_written(runs, tmp_path, capsys):
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(runs[0], out)
    made = sorted(p.parent for p in out.rglob(METRICS))
    damaged = made[-1] / METRICS
    damaged.write_text("not json\n" + damaged.read_text())
    table = tmp_path / "t.csv"
    for args in (["csv", str(out), "--out", str(table)], ["tensorboard", str(out)]):
        assert cli.main(["export", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"genlab: error: {damaged}") and err.count("\n") == 1
    assert not table.exists() and not [r for r in made if (r / TENSORBOARD).exists()]
    assert [p for p in tmp_path.iterdir() if p.name != "runs"] == []  # no temporaries


def test_linreg_events_while_running_are_the_exported_ones(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["run", "linreg", "--n", "10", "--p", "20", "--epochs", "3", "--no-sklearn-check"]
    run = _run(tmp_path / "live", capsys, *args, "--tensorboard")

    def read(folder: Path) -> dict[str, list[tuple[int, float]]]:
        events = EventAccumulator(str(folder))
        events.Reload()
        return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}

    live = read(run / TENSORBOARD)
    assert "gd/test_mse" in live and "ridge/test_mse" in live
    assert cli.main(["export", "tensorboard", str(run), "--force"]) == 0
    assert read(run / TENSORBOARD) == live


@pytest.mark.parametrize("config", ["[1, 2]", '{"study": "robustness", "config": "oops"}'])
def test_a_run_record_that_is_not_one_is_a_line_and_nothing_is_written(
    runs, tmp_path, capsys, config
):
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(runs[0], out)
    bad = sorted(p.parent for p in out.rglob(METRICS))[-1]
    (bad / "config.json").write_text(config)
    table = tmp_path / "t.csv"
    for args in (["csv", str(out), "--out", str(table)], ["tensorboard", str(out)]):
        assert cli.main(["export", *args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"genlab: error: {bad / 'config.json'}")
    assert not table.exists() and not list(out.rglob(TENSORBOARD))  # no run exported


def test_csv_refuses_an_out_that_is_not_a_file(runs, capsys):
    assert cli.main(["export", "csv", str(runs[0]), "--out", "/dev/null", "--force"]) == 1
    assert capsys.readouterr().err == (
        "genlab: error: --out /dev/null: not a regular file (a device, a pipe?); give a file\n"
    )
