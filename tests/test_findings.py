"""The report's one sentence per study (``finding``) says the numbers of the runs it describes,
and its overlay figure (``compare``) draws every setting of them, on the shipped demo's runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genlab.reporting import reporting_module
from genlab.runs import CONFIG, SUMMARY, find_runs

pytestmark = pytest.mark.usefixtures("demo_out")


def _runs(demo_out: tuple[Path, list[Path]], study: str) -> list[Path]:
    out, _ = demo_out
    runs = [r for r in find_runs([out]) if json.loads((r / CONFIG).read_text())["study"] == study]
    assert runs, f"the demo has no {study} run"
    return runs


def _summary(run: Path) -> dict:
    return json.loads((run / SUMMARY).read_text())


def test_the_flip_finding_says_each_run_s_accuracies(demo_out):
    runs = _runs(demo_out, "robustness")
    sentence = reporting_module("robustness").finding(runs)
    plain = [r for r in runs if json.loads((r / CONFIG).read_text())["config"]["augment"] == "none"]
    assert sentence.startswith("augment=none: flipped test accuracy")  # the baseline first
    for run in runs:
        acc = _summary(run)["final_acc"]
        assert f"{acc['test_vflip']:.2f}" in sentence and f"{acc['test']:.2f}" in sentence
    assert len(plain) == 1 and sentence.count(";") == len(runs) - 1


def test_the_random_labels_finding_averages_the_seeds(demo_out):
    runs = _runs(demo_out, "random-labels")
    sentence = reporting_module("random-labels").finding(runs)
    by_p: dict[float, list[dict]] = {}
    for run in runs:
        summary = _summary(run)
        by_p.setdefault(summary["label_noise"], []).append(summary)
    assert len(by_p) == 2 and all(len(s) == 2 for s in by_p.values())  # p = 0, 1; two seeds each
    for p, summaries in by_p.items():
        fitted = sum(s["final_train_fitted_acc"] for s in summaries) / len(summaries)
        test = sum(s["final_acc"]["test"] for s in summaries) / len(summaries)
        assert f"p = {p}: train accuracy {fitted:.2f} on its training labels, test {test:.2f}" in (
            sentence
        )
    assert sentence.endswith("chance is 0.10.")  # ten digit classes


def test_the_linreg_and_pruning_findings_say_their_run_s_numbers(demo_out):
    (run,) = _runs(demo_out, "linreg")
    s = _summary(run)
    peak = max(s["sweep"], key=lambda row: row["test_mse_mean"])
    sentence = reporting_module("linreg").finding([run])
    assert f"test MSE {s['test_mse_min_norm']:.3g} (theory {s['test_mse_theory']:.3g})" in sentence
    assert f"(γ = {peak['gamma']:.3g}: test MSE {peak['test_mse_mean']:.3g}," in sentence
    (run,) = _runs(demo_out, "pruning")
    s = _summary(run)
    sentence = reporting_module("pruning").finding([run])
    dense = s["dense"]["train_fitted_acc"]
    verb = "reached" if dense >= s["fit_threshold"] else "did not reach"
    assert f"the dense network {verb} the fit threshold (train accuracy {dense:.3f}," in sentence
    lottery = s["smallest_fitting"]["lottery"]["remaining"]
    if lottery is not None:
        assert f"lottery masks fitted with {lottery:,} of {s['prunable_weights']:,}" in sentence
    else:
        assert "lottery masks fitted in no round" in sentence


def test_a_finding_of_no_finished_run_is_none(tmp_path):
    for study in ("robustness", "random-labels", "linreg", "connectivity", "pruning"):
        assert reporting_module(study).finding([tmp_path / "missing"]) is None


@pytest.mark.parametrize(
    ("study", "name", "settings"),
    [
        ("robustness", "robustness_accuracy.png", 2),
        ("random-labels", "random_labels_fitted.png", 2),
    ],
)
def test_compare_draws_one_line_per_setting(demo_out, tmp_path, monkeypatch, study, name, settings):
    from genlab.reporting import plotting

    module = reporting_module(study)
    drawn = []
    real_save = plotting.save

    def save(fig, path):
        drawn.append({line.get_label() for ax in fig.axes for line in ax.lines})
        return real_save(fig, path)

    monkeypatch.setattr(module, "save", save)
    files = module.compare(_runs(demo_out, study), tmp_path)
    assert files == [tmp_path / name] and files[0].stat().st_size > 0
    assert len(drawn) == 1 and len(drawn[0]) == settings
    assert module.compare(_runs(demo_out, study)[:1], tmp_path / "one") == []  # nothing to compare
