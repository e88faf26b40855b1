"""The memorization map: cells come from real training, resume cell by cell, and bad input."""

from __future__ import annotations

import json

from genlab.cli import main
from genlab.models import conv4_param_count

TINY = [
    "--dataset",
    "synthetic",
    "--n",
    "64",
    "--widths",
    "1",
    "4",
    "--noise-levels",
    "0",
    "1",
    "--epochs",
    "3",
    "--stop-at-train-acc",
    "0.5",
    "--device",
    "cpu",
]


def test_map_cells_come_from_real_training_and_resume(tmp_path, monkeypatch, capsys):
    from genlab.studies import memorization_map

    real, calls = memorization_map._train_row, []

    def killed_in_second_row(*args, **kwargs):  # a row: one width, every p, trained as a group
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(memorization_map, "_train_row", killed_in_second_row)
    assert main(["run", "memorization-map", *TINY, "--out", str(tmp_path)]) == 130
    monkeypatch.setattr(memorization_map, "_train_row", real)
    (path,) = (tmp_path / "memorization-map").iterdir()
    first = (path / "metrics.jsonl").read_text()
    assert len(first.splitlines()) == 2 and not (path / "summary.json").exists()

    assert main(["run", "memorization-map", *TINY, "--out", str(tmp_path)]) == 0
    text = (path / "metrics.jsonl").read_text()
    assert text.startswith(first)  # the finished cells were kept, not retrained
    cells = [json.loads(line) for line in text.splitlines()]
    assert sorted((c["width"], c["label_noise"]) for c in cells) == [
        (1, 0.0),
        (1, 1.0),
        (4, 0.0),
        (4, 1.0),
    ]
    for c in cells:
        assert c["params"] == conv4_param_count(c["width"], 3, 4)  # synthetic: 4 classes
        assert 1 <= c["epochs"] <= 3 and c["seconds"] > 0 and c["num_train"] == 64
        assert c["fitted"] == (c["train_fitted_acc"] >= 0.5) == (c["time_to_fit"] is not None)
        assert 0 <= c["test_acc"] <= 1
    clean = {c["width"]: c for c in cells if c["label_noise"] == 0.0}
    assert (
        clean[4]["train_fitted_acc"] == clean[4]["train_true_acc"] > 0.4
    )  # learned: chance is 0.25
    assert clean[4]["fraction_changed"] == 0.0
    summary = json.loads((path / "summary.json").read_text())
    for p in ("0.0", "1.0"):
        fits = [c for c in cells if str(c["label_noise"]) == p and c["fitted"]]
        expected = min(fits, key=lambda c: c["params"])["width"] if fits else None
        assert (summary["smallest_fitting"][p] or {}).get("width") == expected
    assert (path / "figures" / "map_train_fitted_acc.png").exists()
    assert (path / "figures" / "map_test_acc.png").exists()


def test_map_refuses_bad_widths_and_noise(tmp_path, capsys):
    for flags, needle in (
        (["--widths", "2", "0"], "--widths"),
        (["--noise-levels", "0", "2"], "--noise-levels"),
    ):
        assert main(["run", "memorization-map", *TINY, *flags, "--out", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err
