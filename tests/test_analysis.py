"""genlab analyze: kept checkpoints, the similarity and criticality analyses on real runs.

The runs are tiny (digits, width 4, two epochs) and trained once per module; every property is
checked on what the analyses compute from them and on the folders they write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import genlab
from genlab import cli
from genlab.analysis import analyze, criticality, similarity
from genlab.analysis.criticality import RANDOM, criticality_of, layers, set_layers
from genlab.analysis.trained import load
from genlab.errors import GenlabError
from genlab.runs import ANALYSES, METRICS, Run
from genlab.training import evaluate_views, recompute_batchnorm
from genlab.training.runtime import Runtime

TINY = {"dataset": "digits", "train_subset": 120, "width": 4, "epochs": 3, "quiet": True}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """random-labels at p in {0, 1} x 2 seeds, keeping epochs 0, 1 and 2."""
    out = tmp_path_factory.mktemp("analysis-runs")
    torch.set_num_threads(1)
    return genlab.sweep(
        "random-labels",
        out=out,
        test_subset=100,
        label_noise=[0.0, 1.0],
        seeds=2,
        keep_checkpoints=[0, 1, 2],
        optimizer="adam",
        lr=0.005,
        threads=1,
        **TINY,
    )


@pytest.fixture
def rt() -> Runtime:
    return Runtime.resolve(device="cpu", precision="fp32", threads=1, quiet=True)


def _members(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "config.json").exists())


# -- kept checkpoints -----------------------------------------------------------------------


def test_kept_checkpoints_are_the_weights_of_their_epochs(tmp_path):
    # a run of 3 epochs keeps epoch 2; the same run trained for 2 epochs (alone, as it was:
    # how a member is computed depends on its cohort) ends with exactly those weights
    settings = {**TINY, "test_subset": 100, "threads": 1}
    long = genlab.run("random-labels", out=tmp_path, keep_checkpoints=[0, 2], **settings)
    short = genlab.run("random-labels", out=tmp_path, **{**settings, "epochs": 2})
    run = Run(long, "finished")
    assert run.kept_epochs() == [0, 2]
    kept, end = run.load_kept(2), Run(short, "finished").load_checkpoint()
    assert kept["epoch"] == end["epoch"] == 2
    for key, value in end["model"].items():
        assert torch.equal(value, kept["model"][key]), key
    assert Run(short, "finished").kept_epochs() == [0]  # the default keeps the initial weights
    for key, value in Run(short, "finished").load_kept(0)["model"].items():
        assert torch.equal(value, run.load_kept(0)["model"][key]), key
    assert not torch.equal(
        kept["model"]["features.0.weight"], run.load_kept(0)["model"]["features.0.weight"]
    )
    with pytest.raises(GenlabError, match="no checkpoint of epoch 1 was kept"):
        run.load_kept(1)


def test_keeping_an_epoch_beyond_the_run_is_one_line(tmp_path, capsys):
    code = cli.main(
        [
            "run",
            "random-labels",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--keep-checkpoints",
            "0",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["genlab: error: --keep-checkpoints 5: beyond the run's --epochs 3"]
    assert not any(tmp_path.iterdir())


# -- similarity -----------------------------------------------------------------------------


def test_activations_are_eval_mode_values_independent_of_the_batch(sweep, rt):
    trained, _ = load([sweep], rt)
    t = trained[0]
    images, _ = similarity.probe_images(trained, 100)
    whole = similarity.features(t, images)
    t.model.train()  # features puts it in eval mode: BatchNorm uses its running statistics
    norm = layers(t.model)[0].modules[1]
    before = norm.running_mean.clone()
    halves = [similarity.features(t, images[a:b]) for a, b in ((0, 37), (37, 100))]
    assert torch.equal(norm.running_mean, before) and not t.model.training
    for i, (name, f) in enumerate(whole):
        joined = torch.cat([h[i][1] for h in halves])
        assert name == halves[0][i][0]
        torch.testing.assert_close(joined, f, rtol=0, atol=1e-5)


def test_similarity_of_runs_is_a_symmetric_matrix_with_ones_on_its_diagonal(sweep, rt):
    trained, groups = load([sweep], rt)
    cfg = similarity.Config(probe=100, batch_size=50)
    torch.manual_seed(1)
    results = similarity.measure(trained, groups, cfg, rt)
    torch.manual_seed(2)  # the probe is a fixed draw, not the global generator's
    again = similarity.measure(trained, groups, cfg, rt)
    assert results["cka"] == again["cka"] and results["pwcca"] == again["pwcca"]
    R, L = len(trained), len(results["layers"])
    assert results["layers"] == ["block1", "block2", "block3", "block4", "logits"]
    assert results["probe"]["num_images"] == 100 and results["probe"]["num_batches"] == 2
    cka = torch.tensor(results["cka"]["matrix"], dtype=torch.float64)
    assert cka.shape == (R * L, R * L)
    assert torch.equal(cka.diagonal(), torch.ones(R * L, dtype=torch.float64))
    torch.testing.assert_close(cka, cka.T, rtol=0, atol=1e-12)
    for layer, pw in results["pwcca"]["by_layer"].items():
        pw = torch.tensor(pw, dtype=torch.float64)
        assert torch.equal(pw.diagonal(), torch.ones(R, dtype=torch.float64)), layer
        torch.testing.assert_close(pw, pw.T, rtol=0, atol=0)
        assert ((pw > 0) & (pw <= 1 + 1e-12)).all()
    # each group has 2 seeds: one pair per layer and measure, no interval from one pair
    assert len(groups) == 2 and all(len(g.runs) == 2 for g in groups)
    within = results["within"]
    assert len(within) == 2 * 2 * L and all(r["n_pairs"] == 1 and r["ci95"] is None for r in within)
    first = groups[0].runs
    row = next(
        r for r in within if r["group"] == 0 and r["measure"] == "cka" and r["layer"] == "logits"
    )
    assert row["mean"] == pytest.approx(cka[first[0] * L + 4, first[1] * L + 4].item(), abs=0)
    across = results["across"]
    assert len(across) == 2 * L and all(r["n_pairs"] == 4 for r in across)


def test_similarity_cli_writes_one_folder_once(sweep, tmp_path, capsys):
    args = ["analyze", "similarity", str(sweep), "--probe", "60", "--out", str(tmp_path), "--quiet"]
    assert cli.main(args) == 0
    folder = Path(capsys.readouterr().out.strip().removeprefix("results: "))
    assert folder.parent == tmp_path / ANALYSES and folder.name.startswith("similarity-")
    assert {p.name for p in folder.iterdir()} == {
        "analysis.json",
        "env.json",
        "similarity.json",
        "figures",
    }
    record = json.loads((folder / "analysis.json").read_text())
    assert record["settings"] == {"probe": 60, "measure": ["cka", "pwcca"], "batch_size": 250}
    assert [Path(r["path"]) for r in record["runs"]] == _members(sweep)
    env = json.loads((folder / "env.json").read_text())
    assert "git_commit" in env and "torch" in env
    assert (folder / "figures" / "figures.json").exists()
    written = (folder / "similarity.json").stat().st_mtime_ns
    assert cli.main([*args[:-1]]) == 0  # not quiet: it says so
    assert "finished already" in capsys.readouterr().out
    assert (folder / "similarity.json").stat().st_mtime_ns == written
    assert cli.main([*args, "--force"]) == 0
    assert (folder / "similarity.json").stat().st_mtime_ns > written
    assert [p.name for p in (tmp_path / ANALYSES).iterdir()] == [folder.name]  # no leftovers


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--measure", "cca"], "--measure cca: not one of cka, pwcca"),
        (["--probe", "2"], "--probe 2: must be >= 4"),
        (["--batch-size", "3"], "--batch-size 3: must be >= 4"),
    ],
)
def test_bad_settings_are_one_line_and_write_nothing(sweep, tmp_path, capsys, extra, message):
    code = cli.main(["analyze", "similarity", str(sweep), "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"genlab: error: {message}"]
    assert not (tmp_path / ANALYSES).exists()


def test_runs_that_cannot_be_compared_are_refused_in_one_line(sweep, tmp_path, capsys):
    other = genlab.run(
        "random-labels",
        out=tmp_path / "runs",
        dataset="synthetic",
        width=4,
        epochs=1,
        quiet=True,
        threads=1,
    )
    linreg = genlab.run("linreg", out=tmp_path / "runs", n=20, p=40, epochs=1, quiet=True)
    unfinished = tmp_path / "runs" / "cut"
    os.makedirs(unfinished)
    first = _members(sweep)[0]
    for name in ("config.json", "env.json", "dataset.json", "metrics.jsonl"):
        (unfinished / name).write_bytes((first / name).read_bytes())
    cases = [
        ([other, sweep], "its dataset (synthetic) is not that of digits-"),
        ([linreg], "a linreg run; only the image studies' runs"),
        ([unfinished], "not finished (no summary.json)"),
        ([tmp_path / "nowhere"], "no such run or sweep folder"),
    ]
    capsys.readouterr()  # what training the runs printed
    for paths, fragment in cases:
        code = cli.main(["analyze", "similarity", *map(str, paths), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_failed_analysis_leaves_nothing(sweep, tmp_path, rt, monkeypatch):
    import genlab.reporting as reporting

    def broken(folder):
        raise GenlabError("drawing failed")

    monkeypatch.setattr(reporting, "plot_analysis", broken)
    with pytest.raises(GenlabError, match="drawing failed"):
        analyze("similarity", [sweep], similarity.Config(probe=60), rt, tmp_path)
    assert list((tmp_path / ANALYSES).iterdir()) == []


# -- criticality ------------------------------------------------------------------------------


def test_no_layer_changed_gives_the_runs_own_final_accuracy(sweep, rt):
    trained, _ = load([sweep], rt)
    for t in trained:
        table = criticality_of(t, [], criticality.Config(), rt)
        last = Run(t.ref.path, "finished").metrics()[-1]
        assert last["epoch"] == t.epoch == 3
        for view in ("test", "train_true", "train_clean", "train_noisy"):
            assert table["trained"][view]["acc"] == last[f"{view}_acc"], view
            assert table["trained"][view]["loss"] == last[f"{view}_loss"], view


def test_every_layer_at_epoch_0_is_the_initial_network(sweep, rt):
    trained, _ = load([sweep], rt)
    t = trained[0]
    member, model = t.setup.member, t.model
    initial = t.run.load_kept(0)["model"]
    everything = layers(model)
    set_layers(model, everything, initial, t.seed)
    recompute_batchnorm(model, member.train.images, member.normalize, everything[0].after)
    changed = evaluate_views(model, member.views, member.normalize, member.num_classes)
    fresh, _ = load([t.ref.path], rt)
    start = fresh[0].model
    start.load_state_dict(initial)
    recompute_batchnorm(start, member.train.images, member.normalize, layers(start)[0].after)
    for key, value in start.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert evaluate_views(start, member.views, member.normalize, member.num_classes) == changed


def test_reinit_reads_the_kept_weights_and_recomputes_only_later_statistics(sweep, rt, tmp_path):
    trained, _ = load([sweep], rt)
    t = trained[0]
    torch.manual_seed(123)
    first = criticality_of(t, [0, 1, RANDOM], criticality.Config(), rt)
    torch.manual_seed(456)  # nothing comes from the global generator
    assert criticality_of(t, [0, 1, RANDOM], criticality.Config(), rt) == first
    assert set(first["changed"]) == {"block1", "block2", "block3", "block4", "linear"}
    assert set(first["changed"]["block3"]) == {"epoch 0", "epoch 1", "random"}
    # after block3 changes, block1 and block2 keep their statistics; block3 and block4 not
    model = t.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = layers(model)
    set_layers(model, [found[2]], t.run.load_kept(0)["model"], t.seed)
    recompute_batchnorm(
        model, t.setup.member.train.images, t.setup.member.normalize, found[2].after
    )
    after = model.state_dict()
    for i, norm in enumerate(("features.1", "features.4", "features.8", "features.12")):
        same = torch.equal(after[f"{norm}.running_mean"], before[f"{norm}.running_mean"])
        assert same == (i < 2), norm
    model.load_state_dict(before)
    # the stored initial weights are read: change them on disk and the result changes
    kept = t.ref.path / "checkpoints" / "epoch-0.pt"
    saved = kept.read_bytes()
    try:
        state = torch.load(kept, weights_only=True)
        state["model"]["features.0.weight"] *= 3
        kept.unlink()  # a hard link: write a new file, not through the link
        torch.save(state, kept)
        other = criticality_of(t, [0], criticality.Config(), rt)
    finally:
        kept.unlink()
        kept.write_bytes(saved)
    assert other["changed"]["block1"]["epoch 0"] != first["changed"]["block1"]["epoch 0"]
    assert other["changed"]["block2"]["epoch 0"] == first["changed"]["block2"]["epoch 0"]


def test_criticality_cli_and_its_intervals_over_seeds(sweep, tmp_path, capsys):
    assert cli.main(["analyze", "criticality", str(sweep), "--out", str(tmp_path), "--quiet"]) == 0
    folder = Path(capsys.readouterr().out.strip().removeprefix("results: "))
    results = json.loads((folder / "criticality.json").read_text())
    assert [r["sources"] for r in results["runs"]] == [
        ["epoch 0", "epoch 1", "epoch 2", "random"]
    ] * 4
    row = next(
        r
        for r in results["by_group"]
        if (r["group"], r["layer"], r["source"], r["view"]) == (1, "block4", "epoch 0", "test")
    )
    runs = [results["runs"][i] for i in results["groups"][1]["runs"]]
    values = [r["changed"]["block4"]["epoch 0"]["test"]["acc"] for r in runs]
    assert row["n"] == 2 and row["mean"] == pytest.approx(sum(values) / 2, abs=1e-15)
    assert row["ci95"][0] <= row["mean"] <= row["ci95"][1]


def test_criticality_refuses_a_model_it_cannot_take_apart(tmp_path, capsys):
    run_dir = genlab.run(
        "robustness",
        out=tmp_path,
        model="conv4-vflip",
        views=["none"],
        threads=1,
        **{**TINY, "epochs": 1},
    )
    code = cli.main(["analyze", "criticality", str(run_dir), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [
        "genlab: error: criticality re-initializes the layers of Conv-4; this run's model is EquivariantConv4"
    ]
    assert METRICS  # the run itself is untouched
    assert not (tmp_path / ANALYSES).exists()


def test_the_python_api_is_the_command_line(sweep, tmp_path, capsys):
    folder = genlab.analyze("similarity", sweep, out=tmp_path, probe=60, quiet=True)
    members = _members(sweep)
    # the same runs named one by one, in another order: the same analysis, finished already
    args = ["analyze", "similarity", *map(str, reversed(members)), "--probe", "60"]
    assert cli.main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "finished already" in out and out.strip().endswith(f"results: {folder}")
    with pytest.raises(GenlabError, match="'lottery': no such analysis"):
        genlab.analyze("lottery", sweep)
    with pytest.raises(GenlabError, match="unknown setting"):
        genlab.analyze("criticality", sweep, probe=60)
