"""The linreg study: user data checks, the config, and `genlab run linreg` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main
from genlab.data.linear import load_linear
from genlab.errors import GenlabError
from genlab.studies import STUDIES, linreg
from genlab.training import Runtime

REQUIRED = (
    "n",
    "p",
    "rank",
    "test_mse_min_norm",
    "test_mse_theory",
    "train_mse_min_norm",
    "min_norm",
    "sgd_final_train_mse",
    "sgd_final_dist_to_min_norm",
    "lambda_min_nonzero",
    "lambda_max",
    "cond_nonnull",
    "ks_marchenko_pastur",
)
SMALL = ["--n", "30", "--p", "60", "--n-test", "200", "--epochs", "60", "--seed", "1"]


def _arrays(n: int = 20, p: int = 35, m: int = 15) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((n, p)), rng.standard_normal((m, p))
    beta = rng.standard_normal(p) / np.sqrt(p)
    return {"X_train": x, "y_train": x @ beta, "X_test": xt, "y_test": xt @ beta}


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _csv(path: Path, a: np.ndarray, header: str | None = None) -> None:
    rows = [",".join(map(repr, np.atleast_1d(row).tolist())) for row in a]
    path.write_text("".join(line + "\n" for line in ([header] if header else []) + rows))


# -- reading the user's data -------------------------------------------------------------------


def test_npz_and_folder_of_npy_and_csv_load_the_same_arrays(tmp_path: Path) -> None:
    arrays = _arrays()
    from_npz = load_linear(_npz(tmp_path / "d.npz", **arrays))
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "X_train.npy", arrays["X_train"])
    np.save(folder / "y_train.npy", arrays["y_train"][:, None])  # a (n, 1) column is fine
    _csv(folder / "X_test.csv", arrays["X_test"], header=",".join(f"f{j}" for j in range(35)))
    _csv(folder / "y_test.csv", arrays["y_test"][:, None])
    from_folder = load_linear(folder)
    for d in (from_npz, from_folder):
        assert (d.n, d.p, d.x_test.shape, d.y_train.shape) == (20, 35, (15, 35), (20,))
        assert d.beta_star is None
    np.testing.assert_array_equal(from_folder.x_train, from_npz.x_train)
    np.testing.assert_array_equal(from_folder.y_test, from_npz.y_test)  # repr round-trips floats
    assert set(from_folder.sha256) == {"X_train.npy", "y_train.npy", "X_test.csv", "y_test.csv"}


def _bad_inputs(tmp: Path) -> list[tuple[Path, str]]:
    """(path, a piece of the expected message) for each kind of bad input."""
    good = _arrays()
    cases = []
    cases.append((tmp / "missing.npz", "no such file or folder"))
    (tmp / "empty.npz").write_bytes(b"")
    cases.append((tmp / "empty.npz", "file is empty"))
    (tmp / "garbage.npz").write_text("not an archive")
    cases.append((tmp / "garbage.npz", "not a readable .npz"))
    np.save(tmp / "single.npy", good["X_train"])
    cases.append((tmp / "single.npy", "not an .npz archive"))
    cases.append(
        (
            _npz(tmp / "nokey.npz", X_train=good["X_train"], y_train=good["y_train"]),
            "missing array(s) X_test, y_test",
        )
    )
    cases.append(
        (
            _npz(tmp / "rows.npz", **{**good, "y_train": good["y_train"][:-1]}),
            "X_train has 20 rows but y_train has 19",
        )
    )
    cases.append(
        (
            _npz(tmp / "cols.npz", **{**good, "X_test": good["X_test"][:, :-2]}),
            "X_test has 33 columns but X_train has 35",
        )
    )
    cases.append(
        (
            _npz(tmp / "flat.npz", **{**good, "X_train": good["X_train"].ravel()}),
            "X_train must be 2-D",
        )
    )
    nan = good["X_train"].copy()
    nan[3, 4] = np.nan
    cases.append(
        (
            _npz(tmp / "nan.npz", **{**good, "X_train": nan}),
            "X_train has 1 NaN/inf value(s), the first at index (3, 4)",
        )
    )
    inf = good["y_test"].copy()
    inf[2] = np.inf
    cases.append((_npz(tmp / "inf.npz", **{**good, "y_test": inf}), "y_test has 1 NaN/inf"))
    cases.append(
        (
            _npz(tmp / "text.npz", **{**good, "y_train": np.array(["a"] * 20)}),
            "is not a real number type",
        )
    )
    cases.append(
        (
            _npz(tmp / "zero.npz", **{**good, "X_test": np.zeros((0, 35)), "y_test": np.zeros(0)}),
            "array is empty",
        )
    )
    for name, content, message in [
        ("nonnumeric", "1.0,2.0\n3.0,abc\n", "line 2: non-numeric value 'abc'"),
        ("ragged", "1.0,2.0\n3.0\n", "line 2 has 1 values, the first data line 2"),
        ("emptycsv", "", "file is empty"),
        ("headeronly", "a,b\n", "holds a header line and no data"),
    ]:
        folder = tmp / name
        folder.mkdir()
        for key, a in good.items():
            if key != "X_train":
                np.save(folder / f"{key}.npy", a)
        (folder / "X_train.csv").write_text(content)
        cases.append((folder, message))
    both = tmp / "both"
    both.mkdir()
    for key, a in good.items():
        np.save(both / f"{key}.npy", a)
    _csv(both / "y_test.csv", good["y_test"][:, None])
    cases.append((both, "both y_test.npy and y_test.csv"))
    lacking = tmp / "lacking"
    lacking.mkdir()
    np.save(lacking / "X_train.npy", good["X_train"])
    cases.append((lacking, "no y_train.npy or y_train.csv"))
    return cases


def test_each_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    for path, message in _bad_inputs(tmp_path):
        with pytest.raises(GenlabError) as info:
            load_linear(path)
        text = str(info.value)
        assert message in text, (path, text)
        assert "\n" not in text
        assert path.name in text


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"lr": "fast"}, "--lr"),
        ({"lr": "-1"}, "--lr"),
        ({"n": 0}, "--n"),
        ({"sigma": -1.0}, "--sigma"),
        ({"rank": 600}, "--rank"),
        ({"data": "x.npz", "rank": 3}, "--rank"),
        ({"sweep_p": True, "data": "x.npz"}, "--sweep-p"),
        ({"batch_size": 0}, "--batch-size"),
    ],
)
def test_config_refuses_bad_settings_naming_the_flag(overrides: dict, flag: str) -> None:
    with pytest.raises(GenlabError, match=flag):
        linreg.Config(**overrides)


def test_lr_is_a_number_or_auto_spelled_one_way() -> None:
    assert linreg.Config(lr="1e-3").lr == linreg.Config(lr="0.001").lr == "0.001"
    assert linreg.Config(lr="auto").lr == "auto"


def test_sweep_grid_skips_p_equal_n() -> None:
    ps = linreg.sweep_ps(500, 32)
    assert ps[0] == 50 and ps[-1] == 5000 and 500 not in ps and ps == sorted(set(ps))


# -- the command line ----------------------------------------------------------------------------


def test_cli_runs_the_study_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "run",
        "linreg",
        *SMALL,
        "--sweep-p",
        "--sweep-points",
        "6",
        "--sweep-seeds",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    run_dir = next((tmp_path / "linreg").iterdir())
    s = json.loads((run_dir / "summary.json").read_text())
    assert set(REQUIRED) <= set(s)
    assert (s["n"], s["p"], s["rank"], s["null_space_dim"], s["xtx_singular"]) == (
        30,
        60,
        30,
        30,
        True,
    )
    assert s["train_mse_min_norm"] < 1e-20 and s["min_norm_vs_lstsq"] < 1e-12
    assert s["test_mse_theory"] == pytest.approx(2.5)
    assert (
        s["shifted_norm_sq_increase"] == pytest.approx(1.0)
        and s["shifted_normal_equations_residual"] < 1e-10
    )
    assert s["lambda_min_nonzero"] <= s["lambda_max"] and s["cond_nonnull"] == pytest.approx(
        s["lambda_max"] / s["lambda_min_nonzero"]
    )
    assert s["sgd_final_outside_row_space"] < 1e-12 and s["gd_final_outside_row_space"] < 1e-12
    # GD is linear from zero: its train MSE matches the closed-form prediction from the spectrum.
    assert s["gd_final_train_mse"] == pytest.approx(s["gd_predicted_final_train_mse"], rel=1e-6)
    assert s["gd_measured_contraction_slowest"] == pytest.approx(
        s["gd_predicted_contraction_slowest"], rel=1e-9
    )
    assert "sklearn_dist_to_min_norm" in s and "SGDRegressor" in s["sklearn_label"]
    assert len(s["sweep"]) == 6 and s["explanation"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(61))
    assert metrics[0]["sgd_norm"] == 0.0 and metrics[-1]["sgd_train_mse"] == pytest.approx(
        s["sgd_final_train_mse"]
    )
    assert {p.name for p in (run_dir / "figures").iterdir()} == {
        "figures.json",  # the list of the others, written last
        "spectrum.png",
        "sgd_curves.png",
        "ridge_path.png",
        "double_descent.png",
    }
    with np.load(run_dir / "arrays.npz") as arrays:
        assert arrays["eigenvalues"].shape == (30,) and arrays["beta_star"].shape == (60,)
    assert "results:" in capsys.readouterr().out
    # The same command again finds the run finished; one seed gives identical numbers.
    assert main(argv) == 0
    assert "finished already" in capsys.readouterr().out
    assert main([*argv, "--force"]) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert {k: again[k] for k in REQUIRED} == {k: s[k] for k in REQUIRED}


def test_cli_with_user_data_and_auto_step(tmp_path: Path) -> None:
    data = _npz(tmp_path / "mine.npz", **_arrays())
    argv = [
        "run",
        "linreg",
        "--data",
        str(data),
        "--epochs",
        "200",
        "--lr",
        "auto",
        "--batch-size",
        "4",
        "--no-sklearn-check",
        "--out",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    assert main(argv) == 0
    run_dir = next((tmp_path / "runs" / "linreg").iterdir())
    s = json.loads((run_dir / "summary.json").read_text())
    assert (s["n"], s["p"], s["rank"]) == (20, 35, 20)
    assert s["test_mse_theory"] is None and s["marchenko_pastur_applies"] is False
    assert s["train_mse_min_norm"] < 1e-20 and s["test_mse_min_norm"] > 0  # p > n: not beta itself
    assert s["sgd_lr"] > 0 and s["batch_size"] == 4 and "sklearn_train_mse" not in s
    assert s["sgd_final_dist_to_min_norm"] < 1e-3


def test_cli_bad_inputs_exit_1_with_one_line_naming_the_file_or_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "runs")]
    zeros = _npz(tmp_path / "zeros.npz", **{**_arrays(), "X_train": np.zeros((20, 35))})
    cases = [(["--data", str(path)], path.name) for path, _ in _bad_inputs(tmp_path)[:6]]
    cases.append((["--data", str(zeros)], "X_train is all zeros"))
    cases += [
        (["--lr", "fast"], "--lr"),
        (["--n", "10", "--rank", "20"], "--rank"),
        (["--sweep-p", "--data", str(tmp_path / "x.npz")], "--sweep-p"),
        ([*SMALL, "--lr", "0.5", "--no-sklearn-check"], "diverged"),
    ]
    for extra, name in cases:
        capsys.readouterr()
        assert main(["run", "linreg", *extra, *out]) == 1, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("genlab: error:") and "\n" not in err and name in err, err


def test_report_preset_resolves_to_the_report_settings(tmp_path: Path) -> None:
    from genlab.cli import build_parser, resolve_config

    args = build_parser().parse_args(["run", "linreg", "--preset", "report", "--epochs", "5"])
    cfg = resolve_config(STUDIES["linreg"], args)
    assert (cfg.n, cfg.p, cfg.rank, cfg.lr, cfg.batch_size, cfg.epochs) == (
        500,
        1000,
        None,
        "0.001",
        1,
        5,
    )


def test_demo_adds_a_small_linreg_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genlab.demo import DEMO_LINREG, _demo_linreg

    path = _demo_linreg(tmp_path, Runtime.resolve(threads=1, quiet=True), False)
    s = json.loads((path / "summary.json").read_text())
    assert (s["n"], s["p"], s["rank"]) == (DEMO_LINREG["n"], DEMO_LINREG["p"], DEMO_LINREG["n"])
    assert s["sgd_final_dist_to_min_norm"] < 1e-3 and "sweep" in s
    out = capsys.readouterr().out
    assert "Over-parametrized linear regression" in out and "KS to MP" in out


def test_an_interrupted_run_reruns_to_the_same_result(tmp_path: Path) -> None:
    argv = ["run", "linreg", *SMALL, "--no-sklearn-check", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    run_dir = next((tmp_path / "linreg").iterdir())
    first = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()  # as if killed before the end
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 61, "sgd_tra')
    assert main(argv) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert {k: again[k] for k in REQUIRED} == {k: first[k] for k in REQUIRED}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 61 and json.loads(lines[-1])["epoch"] == 60


# -- with --data, the config records the file's shape ------------------------------------------


def test_data_sets_n_p_and_n_test_in_the_config_and_the_folder_name(tmp_path: Path) -> None:
    from genlab.config import from_dict, run_id, to_dict

    data = str(_npz(tmp_path / "mine.npz", **_arrays()))  # 20 x 35, 15 test rows
    cfg = linreg.Config(data=data)
    assert (cfg.n, cfg.p, cfg.n_test) == (20, 35, 15)
    assert run_id(cfg, linreg.RUN_ID_KEYS).startswith("20-35-e1000-s0-")
    assert linreg.Config(data=data, n=20, p=35, n_test=15) == cfg  # the file's own sizes: fine
    assert from_dict(linreg.Config, to_dict(cfg)) == cfg  # what a resume or a sweep rebuilds
    for flags, needle in [
        ({"n": 30}, "--n 30"),
        ({"p": 7}, "--p 7"),
        ({"n_test": 3}, "--n-test 3"),
    ]:
        with pytest.raises(GenlabError) as info:
            linreg.Config(data=data, **flags)
        text = str(info.value)
        assert needle in text and "mine.npz" in text and "\n" not in text, text
    with pytest.raises(GenlabError, match="no such file or folder"):
        linreg.Config(data=str(tmp_path / "missing.npz"))


def test_cli_with_data_records_the_files_shape_not_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _npz(tmp_path / "mine.npz", **_arrays())
    out = ["--out", str(tmp_path / "runs"), "--quiet"]
    argv = ["run", "linreg", "--data", str(data), "--epochs", "20", "--no-sklearn-check", *out]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "runs" / "linreg").iterdir()
    assert run_dir.name.startswith("20-35-e20-s0-")
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    assert (cfg["n"], cfg["p"], cfg["n_test"]) == (20, 35, 15)
    dataset = json.loads((run_dir / "dataset.json").read_text())
    assert (dataset["num_train"], dataset["num_features"], dataset["num_test"]) == (20, 35, 15)
    capsys.readouterr()
    assert main([*argv, "--n", "500"]) == 0  # the default's value: replaced by the file's
    assert main([*argv, "--n", "30"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error: --n 30:") and "\n" not in err and "n = 20" in err


# -- the explanation: every number from the run, each claim checked against it ---------------------


def _explain_run(tmp_path: Path, *flags: str) -> tuple[dict, str]:
    argv = ["run", "linreg", "--n-test", "50", "--no-sklearn-check", *flags]
    assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "linreg").iterdir()
    s = json.loads((run_dir / "summary.json").read_text())
    return s, "\n".join(s["explanation"])


def _check_rate_sentence(s: dict, text: str) -> None:
    """The rate claim printed is the one the run's numbers make true."""
    measured, predicted = (
        s["sgd_measured_contraction_slowest"],
        s["sgd_predicted_contraction_slowest"],
    )
    verdict = s["sgd_rate_vs_expected"]
    ratio = np.log(measured) / np.log(predicted)  # > 1: faster
    assert verdict == ("agrees" if abs(ratio - 1) <= 0.1 else "faster" if ratio > 1 else "slower")
    sentence = {
        "agrees": "This run followed it",
        "faster": "faster than it",
        "slower": "slower than it",
    }
    assert sentence[verdict] in text
    assert all(sentence[v] not in text for v in sentence if v != verdict)
    assert f"measured {measured:.6f} per epoch, predicted {predicted:.6f}" in text
    assert "0.99181" not in text and "0.99139" not in text  # the numbers of another run


def test_explanation_below_n_reports_the_noise_ball_it_measured(tmp_path: Path) -> None:
    """p < n with noise: X^+ y leaves residuals, and constant-step SGD stops approaching it."""
    s, text = _explain_run(tmp_path, "--n", "50", "--p", "25", "--lr", "0.02", "--epochs", "200")
    assert s["min_norm_interpolates"] is False and s["train_mse_min_norm"] > 0.1
    assert s["sgd_outcome"] == "settled"
    late, predicted = (
        s["sgd_late_remaining_fraction_measured"],
        s["sgd_late_remaining_fraction_predicted"],
    )
    assert late > 0.5 and predicted < 0.05  # it stopped falling where the mean would have gone on
    assert s["sgd_final_dist_to_min_norm"] > 1e-3 * s["min_norm"]
    assert s["sgd_final_train_mse"] > s["train_mse_min_norm"]
    assert "SGD did not converge" in text and "noise ball" in text and "SGD converged" not in text
    assert (
        f"from {s['sgd_half_dist_to_min_norm']:.3g} at epoch 100 to {s['sgd_final_dist_to_min_norm']:.3g}"
        in text
    )
    assert f"x{late:.3g}" in text and f"x{predicted:.2e}" in text
    # measured 0.9907 against 0.9496 predicted: slower, because of the epochs spent settled
    assert s["sgd_rate_vs_expected"] == "slower" and "settled around X^+ y" in text
    _check_rate_sentence(s, text)
    assert "y is not in the column space of X, so no solution interpolates" in text


def test_explanation_above_n_reports_convergence_to_the_min_norm_solution(tmp_path: Path) -> None:
    """p > n: X^+ y interpolates, so per-sample SGD converges to it (to float64 rounding)."""
    s, text = _explain_run(tmp_path, "--n", "50", "--p", "100", "--lr", "0.005", "--epochs", "400")
    assert s["min_norm_interpolates"] is True and s["rank"] == s["n"] == 50
    assert s["sgd_outcome"] == "converged"
    final = s["sgd_final_dist_to_min_norm"]
    assert final <= 1e-8 * s["min_norm"]
    assert f"SGD converged to X^+ y: |b_SGD - X^+ y| = {final:.2e} after 400 epochs" in text
    assert "noise ball" not in text and "did not converge" not in text
    _check_rate_sentence(s, text)
    assert "it interpolates (rank = n)" in text


def test_explanation_still_approaching_when_too_few_epochs_to_tell(tmp_path: Path) -> None:
    s, text = _explain_run(tmp_path, "--n", "50", "--p", "100", "--lr", "0.0005", "--epochs", "20")
    assert s["sgd_outcome"] == "approaching"
    assert "SGD is still approaching X^+ y after 20 epochs" in text
    assert "noise ball" not in text and "SGD converged" not in text
    _check_rate_sentence(s, text)
