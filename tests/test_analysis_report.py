"""Figures and the report of analysis folders (``genlab analyze``), built from four tiny real
random-labels runs (digits, width 4, p = 0 and 1, two seeds): every listed figure exists and is
a PNG, the expected ones are drawn, the report's "Analyses" section shows each analysis with
its title, finding and figures as data: URIs, the finding's numbers are those of the results,
``genlab figures`` redraws them, and a damaged results file is one line, not a crash."""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from pathlib import Path

import pytest
from markupsafe import escape

import genlab
from genlab import cli, reporting
from genlab.analysis import analyze, criticality, similarity
from genlab.reporting import criticality as crit_reporting
from genlab.reporting import similarity as sim_reporting
from genlab.reporting.html import build_report
from genlab.runs import CRITICALITY, FIGURE_LIST, FIGURES, SIMILARITY
from genlab.training.runtime import Runtime

PNG = b"\x89PNG\r\n\x1a\n"
RESULTS = {"similarity": SIMILARITY, "criticality": CRITICALITY}
MODULES = {"similarity": sim_reporting, "criticality": crit_reporting}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sweep and both analysis folders over it (about 10 s on one CPU thread)."""
    tmp = tmp_path_factory.mktemp("analysis")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(tmp / "cache"))
        mp.setenv("GENLAB_THREADS", "1")
        sweep = genlab.sweep(
            "random-labels",
            out=tmp / "runs",
            dataset="digits",
            train_subset=120,
            test_subset=100,
            width=4,
            label_noise=[0.0, 1.0],
            epochs=2,
            seeds=2,
            quiet=True,
            device="cpu",
            threads=1,
        )
        rt = Runtime.resolve(device="cpu", precision="fp32", threads=1, quiet=True)
        return {
            "sweep": sweep,
            "similarity": analyze("similarity", [sweep], similarity.Config(probe=100), rt, tmp),
            "criticality": analyze("criticality", [sweep], criticality.Config(), rt, tmp),
        }


def listed(folder: Path) -> list[str]:
    return json.loads((folder / FIGURES / FIGURE_LIST).read_text())


def results(folder: Path, kind: str) -> dict:
    return json.loads((folder / RESULTS[kind]).read_text())


def copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


@pytest.mark.parametrize("kind", ["similarity", "criticality"])
def test_every_listed_figure_is_a_png(folders, kind):
    folder = folders[kind]
    assert reporting.figures_drawn(folder)
    names = listed(folder)
    assert names
    for name in names:
        blob = (folder / FIGURES / name).read_bytes()
        assert blob[:8] == PNG and blob[12:16] == b"IHDR", name
        width, height = struct.unpack(">II", blob[16:24])
        assert width > 200 and height > 200, name


def test_the_expected_figures_are_drawn(folders):
    sim = results(folders["similarity"], "similarity")
    labels = [g["label"] for g in sim["groups"]]
    assert labels == ["label_noise=0.0", "label_noise=1.0"]
    assert set(listed(folders["similarity"])) == {
        "similarity_by_layer.png",
        "layers_label_noise0.0.png",
        "layers_label_noise1.0.png",
        "across_settings.png",  # the two groups differ in one setting: label_noise
    }
    crit = results(folders["criticality"], "criticality")
    assert set(listed(folders["criticality"])) == {
        "criticality_by_layer.png",
        "group_label_noise0.0.png",
        "group_label_noise1.0.png",
        *(f"runs/{run['name']}.png" for run in crit["runs"]),
    }
    assert len(crit["runs"]) == 4


def test_similarity_summary_numbers_are_those_of_the_results(folders):
    sim = results(folders["similarity"], "similarity")
    text = sim_reporting.summary(sim)
    within = {(r["group"], r["layer"]): r["mean"] for r in sim["within"] if r["measure"] == "cka"}
    labels = {g["label"]: i for i, g in enumerate(sim["groups"])}
    for layer in (sim["layers"][-1], sim["layers"][0]):
        assert layer in text
    found = re.findall(r"(-?\d\.\d\d) at ((?:\w+=[\w.]+(?:, )?)+?)(?=[;.] |\.$)", text)
    assert len(found) == 2 * len(labels)  # the last and the first layer, per group
    last, first = found[: len(labels)], found[len(labels) :]
    for layer, cells in ((sim["layers"][-1], last), (sim["layers"][0], first)):
        for value, label in cells:
            assert value == f"{within[labels[label], layer]:.2f}"
    numbers = dict(sim_reporting.key_numbers(sim))
    assert numbers["runs, groups"] == "4, 2"


def test_criticality_summary_numbers_are_those_of_the_results(folders):
    crit = results(folders["criticality"], "criticality")
    text = crit_reporting.summary(crit)
    rows = {(r["group"], r["layer"], r["source"], r["view"]): r["mean"] for r in crit["by_group"]}
    labels = [g["label"] for g in crit["groups"]]
    for g, label in enumerate(labels):
        part = re.search(
            rf"at {re.escape(label)} \(reference (\d\.\d\d)\) ambient (.*?), critical (.*?)(?:;|\.$)",
            text,
        )
        assert part, (label, text)
        view = crit_reporting.SUMMARY_VIEW  # the fitted training labels
        reference = rows[g, None, "recomputed", view]
        assert part[1] == f"{reference:.2f}"
        for kind in ("ambient", "critical"):
            cells = part[2] if kind == "ambient" else part[3]
            for layer, value in re.findall(r"(\w+) \((\d\.\d\d)\)", cells):
                acc = rows[g, layer, "epoch 0", view]
                assert value == f"{acc:.2f}"
                assert (reference - acc <= crit_reporting.AMBIENT_WITHIN) == (kind == "ambient")
        named = re.findall(r"(\w+) \(\d\.\d\d\)", part[2] + " " + part[3])
        assert sorted(named) == sorted(crit["layers"])  # every layer is one or the other


def test_report_shows_the_analyses(folders, tmp_path):
    paths = [folders["sweep"], folders["similarity"], folders["criticality"]]
    started = time.perf_counter()
    page = build_report(paths, tmp_path / "report").read_text()
    assert time.perf_counter() - started < 30
    assert '<section id="analyses">' in page and "<h2>Analyses</h2>" in page
    assert page.index('id="study-random-labels"') < page.index('<section id="analyses">')
    for kind, module in MODULES.items():
        folder = folders[kind]
        found = results(folder, kind)
        assert str(escape(module.TITLE)) in page
        assert str(escape(module.summary(found))) in page
        for label, value in module.key_numbers(found):
            assert str(escape(label)) in page and str(escape(value)) in page
        anchor = "analysis-" + "".join(c if c.isalnum() else "-" for c in str(folder.resolve()))
        assert f'href="#{anchor}"' in page  # in the table of contents
        for name in listed(folder):
            assert f'alt="{name} ({folder.name})"' in page
        for run in found["runs"]:  # linked to the run's section in the page
            run_anchor = "run-" + "".join(c if c.isalnum() else "-" for c in run["path"])
            assert f'id="{run_anchor}"' in page and f'href="#{run_anchor}"' in page
    images = re.findall(r'<img src="([^"]*)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)


def test_report_draws_missing_analysis_figures_through_the_module(folders, tmp_path, monkeypatch):
    folder = copy(folders["similarity"], tmp_path / "analysis" / folders["similarity"].name)
    shutil.rmtree(folder / FIGURES)
    calls = []
    draw = reporting.plot_analysis
    monkeypatch.setattr(reporting, "plot_analysis", lambda f: calls.append(f) or draw(f))
    page = build_report([folder], tmp_path / "report").read_text()
    assert calls == [folder.resolve()]
    assert page.count('<img src="data:image/png;base64,') == len(listed(folder))
    calls.clear()
    build_report([folder], tmp_path / "report", draw_missing=False)
    build_report([folder], tmp_path / "report")  # drawn already: not again
    assert calls == []


def test_genlab_figures_redraws_an_analysis_folder(folders, tmp_path, capsys):
    folder = copy(folders["criticality"], tmp_path / "analysis" / folders["criticality"].name)
    before = listed(folder)
    (folder / FIGURES / FIGURE_LIST).unlink()
    (folder / FIGURES / "criticality_by_layer.png").unlink()
    assert not reporting.figures_drawn(folder)
    assert cli.main(["figures", str(folder)]) == 0
    assert listed(folder) == before
    assert reporting.figures_drawn(folder)
    assert (folder / FIGURES / "criticality_by_layer.png").read_bytes()[:8] == PNG
    assert "criticality_by_layer.png" in capsys.readouterr().out


def test_a_damaged_analysis_is_one_line_and_the_page_is_written(folders, tmp_path, capsys):
    damaged = copy(folders["similarity"], tmp_path / "analysis" / folders["similarity"].name)
    (damaged / SIMILARITY).write_text('{"runs": [')  # cut while written
    intact = copy(folders["criticality"], tmp_path / "analysis" / folders["criticality"].name)
    lines = []
    report = build_report([tmp_path / "analysis"], tmp_path / "report", log=lines.append)
    page = report.read_text()
    assert report.exists() and "<h2>Analyses</h2>" in page
    assert str(escape(sim_reporting.TITLE)) in page and "[damaged]" in page
    assert str(escape(crit_reporting.summary(results(intact, "criticality")))) in page
    assert [line for line in lines if damaged.name in line and "damaged" in line]
    article = page[page.index(f"({damaged.name})") :]
    article = article[: article.index("</article>")]
    assert article.count('class="problems"') == 1 and "similarity.json" in article
    assert "<img" not in article
