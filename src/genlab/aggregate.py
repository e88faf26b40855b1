"""Aggregation of a sweep's members over seeds, with Student-t 95% intervals.

A finding from one seed is not a finding: the difference between two settings means something
only next to the spread that a change of seed alone produces. This module groups a sweep's
members by every setting except the seed, and reports for each numeric summary metric the mean,
the sample standard deviation (ddof=1) and a Student-t confidence interval for the mean over
seeds. One seed gives a mean but no interval (``std`` and ``ci95`` are ``None``), so a table
built from it cannot be mistaken for one with error bars.

``write_aggregate`` writes the result as ``aggregate.json`` (the entries as they are) and
``aggregate.csv`` (one row per group, for spreadsheets and plots), both atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from genlab.fileio import atomic_write, write_json
from genlab.runs import AGGREGATE, AGGREGATE_CSV

CONFIDENCE = 0.95
METHOD = "Student-t interval over seeds, std with ddof=1"
STATS = ("mean", "std", "ci95_low", "ci95_high")


def flatten(obj: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened with dots: ``{"final_acc": {"test": 0.9}}`` ->
    ``{"final_acc.test": 0.9}``. Lists are kept as values (not flattened); an empty nested dict
    contributes no key."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def interval(values: Sequence[float | None], confidence: float = CONFIDENCE) -> dict:
    """``{"n", "mean", "std", "ci95"}`` for ``values`` (``None`` entries are dropped).

    ``std`` uses ddof=1; ``ci95 = [mean - t*std/sqrt(n), mean + t*std/sqrt(n)]`` with
    ``t = scipy.stats.t.ppf((1 + confidence) / 2, n - 1)``. With one value ``std`` and ``ci95``
    are ``None`` (an interval needs two seeds); no values at all is a ``ValueError``. Values are
    computed as floats, so a NaN propagates into the mean, std and interval.
    """
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        raise ValueError("interval: no values (an interval needs at least one, and two for a CI)")
    if not 0 < confidence < 1:
        raise ValueError(f"interval: confidence must be in (0, 1), got {confidence}")
    mean = math.fsum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    from scipy import stats  # imported here: scipy.stats is slow to import and only needed here

    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def aggregate(members: Sequence[tuple[dict, dict]], seed_key: str = "seed") -> list[dict]:
    """Group ``(settings, summary)`` pairs by their settings without ``seed_key`` and aggregate.

    ``settings`` is a member's identity settings (a flat dict of JSON values; lists allowed),
    ``summary`` its ``summary.json`` dict (nested). Groups come in the order of their first
    member. Each entry is::

        {"settings": <settings without seed_key>, "seeds": [sorted seeds], "n": <members>,
         "metrics": {dotted_key: interval(values)}, "incomplete": [dotted keys],
         "numbers_in": {dotted_key: members holding a number, for keys not in metrics}}

    A metric is a flattened summary key whose value is a number (int or float; bools are not
    numbers here) in every member of the group. Keys that are numeric in some members but not
    all (missing, ``None`` such as a time-to-fit never reached, or another type) are left out of
    ``metrics`` and listed, sorted, in ``incomplete``. Keys never numeric (strings, bools, lists)
    are skipped silently. Two members of one group with the same seed are a ``ValueError``:
    counting a run twice would narrow the interval for nothing.
    """
    groups: dict[str, dict[str, Any]] = {}
    for settings, summary in members:
        rest = {k: v for k, v in settings.items() if k != seed_key}
        key = json.dumps(rest, sort_keys=True, default=repr)
        group = groups.setdefault(key, {"settings": rest, "seeds": [], "flat": []})
        if seed_key in settings:
            seed = settings[seed_key]
            if seed in group["seeds"]:
                raise ValueError(f"aggregate: seed {seed!r} appears twice for settings {rest!r}")
            group["seeds"].append(seed)
        group["flat"].append(flatten(summary))

    entries = []
    for group in groups.values():
        flats: list[dict[str, Any]] = group["flat"]
        numeric_somewhere = sorted({k for f in flats for k, v in f.items() if _is_number(v)})
        metrics = {}
        incomplete = []
        for k in numeric_somewhere:
            if all(_is_number(f.get(k)) for f in flats):
                metrics[k] = interval([f[k] for f in flats])
            else:
                incomplete.append(k)
        # how many members hold a number, for keys left out of metrics: e.g. time_to_fit of
        # seeds that never fit is None, and "fitted in 2 of 3 seeds" is itself the finding
        maybe = {k for f in flats for k, v in f.items() if v is None or _is_number(v)}
        numbers_in = {
            k: sum(_is_number(f.get(k)) for f in flats) for k in sorted(maybe - set(metrics))
        }
        entries.append(
            {
                "settings": group["settings"],
                "seeds": sorted(group["seeds"]),
                "n": len(flats),
                "metrics": metrics,
                "incomplete": incomplete,
                "numbers_in": numbers_in,
            }
        )
    return entries


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(_cell(v) for v in value)
    return str(value)


def write_aggregate(entries: list[dict], folder: Path) -> tuple[Path, Path]:
    """Write ``folder/aggregate.json`` and ``folder/aggregate.csv``; return their paths.

    The JSON holds ``{"entries": entries, "confidence": 0.95, "method": ...}``. The CSV has one
    row per entry with the columns: the settings keys (union, in first-seen order; list values
    joined with spaces), ``n``, then for every metric (union, sorted) ``<metric>.mean``,
    ``<metric>.std``, ``<metric>.ci95_low``, ``<metric>.ci95_high``; a cell is empty where the
    metric or value is absent or ``None``.
    """
    folder = Path(folder)
    json_path = folder / AGGREGATE
    csv_path = folder / AGGREGATE_CSV

    setting_keys: dict[str, None] = {}
    for entry in entries:
        for k in entry["settings"]:
            setting_keys.setdefault(k, None)
    metric_keys = sorted({m for entry in entries for m in entry["metrics"]})

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*setting_keys, "n", *(f"{m}.{s}" for m in metric_keys for s in STATS)])
    for entry in entries:
        row = [_cell(entry["settings"].get(k)) for k in setting_keys]
        row.append(str(entry["n"]))
        for m in metric_keys:
            iv = entry["metrics"].get(m)
            if iv is None:
                row.extend([""] * len(STATS))
                continue
            ci = iv.get("ci95") or [None, None]
            row.extend(_cell(v) for v in (iv.get("mean"), iv.get("std"), ci[0], ci[1]))
        writer.writerow(row)
    text = buf.getvalue()

    write_json(json_path, {"entries": entries, "confidence": CONFIDENCE, "method": METHOD})
    atomic_write(csv_path, lambda f: f.write(text), mode="w")
    return json_path, csv_path


def varying_keys(settings: Sequence[dict[str, Any]]) -> list[str]:
    """The keys whose values differ between the dicts, in first-seen order."""
    keys: dict[str, None] = {}
    for s in settings:
        keys.update(dict.fromkeys(s))
    return [
        k
        for k in keys
        if len({json.dumps(s.get(k), sort_keys=True, default=repr) for s in settings}) > 1
    ]


def setting_label(settings: dict[str, Any]) -> str:
    """``width=8, augment=double``; "all members" when nothing varies."""
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "all members"
