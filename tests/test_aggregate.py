"""Aggregation over seeds: Student-t intervals checked against numbers worked out by hand,
grouping by the non-seed settings, flattening of nested summaries, skipped and incomplete
metrics, the JSON/CSV files, and invariances (member order, a constant shift)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from genlab.aggregate import aggregate, flatten, interval, write_aggregate

# Two-sided 95% Student-t critical values t_{0.975, df}, from tables (not computed here).
T_975 = {1: 12.706204736174707, 2: 4.302652729749464, 4: 2.7764451051977987}


def assert_interval(iv: dict, n: int, mean: float, std: float, half: float) -> None:
    assert iv["n"] == n
    assert iv["mean"] == pytest.approx(mean, rel=1e-12, abs=1e-12)
    assert iv["std"] == pytest.approx(std, rel=1e-12, abs=1e-12)
    lo, hi = iv["ci95"]
    assert lo == pytest.approx(mean - half, rel=1e-12, abs=1e-12)
    assert hi == pytest.approx(mean + half, rel=1e-12, abs=1e-12)


# ---- flatten ---------------------------------------------------------------------------------


def test_flatten_nested_with_dots_and_keeps_lists() -> None:
    summary = {
        "final_acc": {"test": 0.9, "train": 1.0},
        "per_class_acc": {"test": {"cat": 0.8, "dog": 0.7}},
        "curve": [1, 2, 3],
        "epochs": 10,
        "empty": {},
    }
    assert flatten(summary) == {
        "final_acc.test": 0.9,
        "final_acc.train": 1.0,
        "per_class_acc.test.cat": 0.8,
        "per_class_acc.test.dog": 0.7,
        "curve": [1, 2, 3],
        "epochs": 10,
    }
    assert flatten({"a": {"b": 1}}, prefix="x") == {"x.a.b": 1}


# ---- interval: hand-computed numbers ---------------------------------------------------------


def test_interval_two_values() -> None:
    # [1, 3]: mean 2; deviations -1, 1; sum of squares 2; var 2/(2-1) = 2; std sqrt(2).
    # half-width t_{0.975,1} * sqrt(2) / sqrt(2) = t_{0.975,1}.
    iv = interval([1, 3])
    assert_interval(iv, n=2, mean=2.0, std=math.sqrt(2), half=12.706204736174707)


def test_interval_three_values() -> None:
    # [1, 2, 3]: mean 2; deviations -1, 0, 1; sum of squares 2; var 2/2 = 1; std 1.
    iv = interval([1.0, 2.0, 3.0])
    assert_interval(iv, n=3, mean=2.0, std=1.0, half=T_975[2] * 1.0 / math.sqrt(3))


def test_interval_five_values() -> None:
    # [2, 4, 4, 4, 5]: sum 19, mean 3.8; deviations -1.8, 0.2, 0.2, 0.2, 1.2;
    # squares 3.24 + 0.04 + 0.04 + 0.04 + 1.44 = 4.8; var 4.8/4 = 1.2; std sqrt(1.2).
    std = math.sqrt(1.2)
    iv = interval([2, 4, 4, 4, 5])
    assert_interval(iv, n=5, mean=3.8, std=std, half=T_975[4] * std / math.sqrt(5))


def test_interval_one_value_has_no_interval() -> None:
    assert interval([0.7]) == {"n": 1, "mean": 0.7, "std": None, "ci95": None}


def test_interval_none_dropped_and_empty_rejected() -> None:
    iv = interval([1, None, 3])
    assert_interval(iv, n=2, mean=2.0, std=math.sqrt(2), half=T_975[1])
    with pytest.raises(ValueError):
        interval([])
    with pytest.raises(ValueError):
        interval([None])


def test_interval_nan_propagates() -> None:
    iv = interval([1.0, float("nan"), 3.0])
    assert math.isnan(iv["mean"]) and math.isnan(iv["std"])


@pytest.mark.parametrize("values", [[1, 3], [1, 2, 3], [2, 4, 4, 4, 5], [0.5, 0.5, 0.5]])
def test_interval_contains_mean_and_is_symmetric(values: list[float]) -> None:
    iv = interval(values)
    lo, hi = iv["ci95"]
    assert lo <= iv["mean"] <= hi
    assert (iv["mean"] - lo) == pytest.approx(hi - iv["mean"], rel=1e-12, abs=1e-15)


def test_interval_shift_by_constant() -> None:
    values = [2.0, 4.0, 4.0, 4.0, 5.0]
    c = 17.25
    a, b = interval(values), interval([v + c for v in values])
    assert abs(b["mean"] - (a["mean"] + c)) < 1e-12
    assert abs(b["std"] - a["std"]) < 1e-12
    assert abs(b["ci95"][0] - (a["ci95"][0] + c)) < 1e-12
    assert abs(b["ci95"][1] - (a["ci95"][1] + c)) < 1e-12


# ---- aggregate ---------------------------------------------------------------------------------


def sweep() -> list[tuple[dict, dict]]:
    """Two widths x 3 seeds, interleaved, seeds out of order."""
    accs = {(8, 2): 0.70, (8, 0): 0.72, (8, 1): 0.74, (16, 2): 0.80, (16, 0): 0.82, (16, 1): 0.84}
    members = []
    for seed in (2, 0, 1):
        for width in (8, 16):
            settings = {"study": "robustness", "width": width, "layers": [3, 3], "seed": seed}
            summary = {
                "final_acc": {"test": accs[(width, seed)], "train": 1.0},
                "per_class_acc": {"test": {"cat": accs[(width, seed)] - 0.1}},
                "epochs": 10,
                "fitted": True,
                "status": "ok",
            }
            members.append((settings, summary))
    return members


def test_aggregate_groups_by_non_seed_settings() -> None:
    entries = aggregate(sweep())
    assert len(entries) == 2
    assert [e["settings"] for e in entries] == [
        {"study": "robustness", "width": 8, "layers": [3, 3]},
        {"study": "robustness", "width": 16, "layers": [3, 3]},
    ]  # order of first appearance, seed removed
    for e in entries:
        assert e["n"] == 3
        assert e["seeds"] == [0, 1, 2]
        assert e["incomplete"] == []
    # width 8: [0.70, 0.72, 0.74] -> mean 0.72, deviations -0.02, 0, 0.02, var 0.0008/2, std 0.02
    assert_interval(
        entries[0]["metrics"]["final_acc.test"],
        n=3,
        mean=0.72,
        std=0.02,
        half=T_975[2] * 0.02 / math.sqrt(3),
    )
    assert_interval(
        entries[1]["metrics"]["final_acc.test"],
        n=3,
        mean=0.82,
        std=0.02,
        half=T_975[2] * 0.02 / math.sqrt(3),
    )


def test_aggregate_flattens_and_skips_non_numbers() -> None:
    entry = aggregate(sweep())[0]
    assert sorted(entry["metrics"]) == [
        "epochs",
        "final_acc.test",
        "final_acc.train",
        "per_class_acc.test.cat",
    ]  # "fitted" (bool) and "status" (str) skipped
    assert entry["metrics"]["per_class_acc.test.cat"]["mean"] == pytest.approx(0.62, abs=1e-12)
    # identical values: std 0, interval collapses onto the mean
    assert entry["metrics"]["epochs"] == {"n": 3, "mean": 10.0, "std": 0.0, "ci95": [10.0, 10.0]}


def test_aggregate_incomplete_metrics() -> None:
    members = [
        ({"seed": 0}, {"acc": 0.5, "time_to_fit": 12, "extra": 1.0, "flag": True}),
        ({"seed": 1}, {"acc": 0.7, "time_to_fit": None, "flag": False}),
        ({"seed": 2}, {"acc": 0.6, "time_to_fit": 9, "extra": "n/a", "flag": True}),
    ]
    (entry,) = aggregate(members)
    assert entry["settings"] == {}
    assert entry["seeds"] == [0, 1, 2]
    assert list(entry["metrics"]) == ["acc"]
    assert entry["incomplete"] == ["extra", "time_to_fit"]  # bools are never numbers
    assert_interval(
        entry["metrics"]["acc"], n=3, mean=0.6, std=0.1, half=T_975[2] * 0.1 / math.sqrt(3)
    )


def test_aggregate_single_seed_group() -> None:
    (entry,) = aggregate([({"width": 4, "seed": 7}, {"acc": 0.9})])
    assert entry["n"] == 1 and entry["seeds"] == [7]
    assert entry["metrics"]["acc"] == {"n": 1, "mean": 0.9, "std": None, "ci95": None}


def test_aggregate_custom_seed_key_and_duplicate_seed() -> None:
    members = [({"w": 1, "rep": 0}, {"a": 1}), ({"w": 1, "rep": 1}, {"a": 3})]
    (entry,) = aggregate(members, seed_key="rep")
    assert entry["settings"] == {"w": 1} and entry["seeds"] == [0, 1]
    with pytest.raises(ValueError, match="twice"):
        aggregate([({"w": 1, "seed": 0}, {"a": 1}), ({"w": 1, "seed": 0}, {"a": 2})])


def test_aggregate_invariant_to_member_order() -> None:
    members = sweep()
    a = aggregate(members)
    b = aggregate(list(reversed(members)))
    # reversing swaps which width appears first; compare group by group
    by_width = {e["settings"]["width"]: e for e in b}
    for e in a:
        other = by_width[e["settings"]["width"]]
        assert e["seeds"] == other["seeds"] and e["n"] == other["n"]
        assert e["metrics"].keys() == other["metrics"].keys()
        for k, iv in e["metrics"].items():
            assert iv["mean"] == pytest.approx(other["metrics"][k]["mean"], abs=1e-12)
            assert iv["std"] == pytest.approx(other["metrics"][k]["std"], abs=1e-12)
            assert iv["ci95"] == pytest.approx(other["metrics"][k]["ci95"], abs=1e-12)


def test_aggregate_shift_by_constant() -> None:
    c = 3.5
    members = sweep()
    shifted = [
        (s, {**m, "final_acc": {k: v + c for k, v in m["final_acc"].items()}}) for s, m in members
    ]
    for e, f in zip(aggregate(members), aggregate(shifted), strict=True):
        for k in ("final_acc.test", "final_acc.train"):
            a, b = e["metrics"][k], f["metrics"][k]
            assert abs(b["mean"] - (a["mean"] + c)) < 1e-12
            assert abs(b["std"] - a["std"]) < 1e-12
            assert abs(b["ci95"][0] - (a["ci95"][0] + c)) < 1e-12
            assert abs(b["ci95"][1] - (a["ci95"][1] + c)) < 1e-12


# ---- write_aggregate ---------------------------------------------------------------------------


def test_write_aggregate_round_trip(tmp_path) -> None:
    members = sweep()
    # a third group with one seed and different settings keys, for empty cells and key union
    members.append(({"study": "robustness", "width": 32, "lr": 0.1, "seed": 0}, {"other": 2.0}))
    entries = aggregate(members)
    json_path, csv_path = write_aggregate(entries, tmp_path / "out")
    assert json_path == tmp_path / "out" / "aggregate.json"
    assert csv_path == tmp_path / "out" / "aggregate.csv"

    doc = json.loads(json_path.read_text())
    assert doc["entries"] == entries
    assert doc["confidence"] == 0.95
    assert doc["method"] == "Student-t interval over seeds, std with ddof=1"

    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    metrics = ["epochs", "final_acc.test", "final_acc.train", "other", "per_class_acc.test.cat"]
    stats = ["mean", "std", "ci95_low", "ci95_high"]
    assert header == ["study", "width", "layers", "lr", "n"] + [
        f"{m}.{s}" for m in metrics for s in stats
    ]
    assert len(body) == 3
    rows_by = [dict(zip(header, r, strict=True)) for r in body]

    r8 = rows_by[0]
    assert (r8["study"], r8["width"], r8["layers"], r8["lr"], r8["n"]) == (
        "robustness",
        "8",
        "3 3",
        "",
        "3",
    )
    half = T_975[2] * 0.02 / math.sqrt(3)
    assert float(r8["final_acc.test.mean"]) == pytest.approx(0.72, abs=1e-12)
    assert float(r8["final_acc.test.std"]) == pytest.approx(0.02, abs=1e-12)
    assert float(r8["final_acc.test.ci95_low"]) == pytest.approx(0.72 - half, abs=1e-12)
    assert float(r8["final_acc.test.ci95_high"]) == pytest.approx(0.72 + half, abs=1e-12)
    assert [r8[f"other.{s}"] for s in stats] == ["", "", "", ""]  # metric absent in this group

    r16 = rows_by[1]
    assert r16["width"] == "16"
    assert float(r16["final_acc.test.mean"]) == pytest.approx(0.82, abs=1e-12)

    r32 = rows_by[2]
    assert (r32["width"], r32["layers"], r32["lr"], r32["n"]) == ("32", "", "0.1", "1")
    assert float(r32["other.mean"]) == 2.0
    assert [r32[f"other.{s}"] for s in stats[1:]] == ["", "", ""]  # one seed: no std, no CI
    assert r32["final_acc.test.mean"] == ""
