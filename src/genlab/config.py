"""Configs are frozen dataclasses: defaults < named preset < command-line flags.

A field's name is its one spelling everywhere: ``batch_size`` is the flag ``--batch-size`` and the
JSON key ``"batch_size"``. Field metadata carries the help text (``help``), the allowed values
(``choices``) and whether the field names the experiment (``identity``, default True): fields such as
the device or the data folder change where a run happens, not what it is, so they are left out of
``run_id`` and a run started on one device resumes on another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from genlab.errors import GenlabError

C = TypeVar("C")


SEED_MAX = 2**63 - 1  # seeds are hashed into 63-bit torch seeds; numpy refuses negative ones
INT_MAX = 2**63 - 1  # what torch and numpy hold in an int64


def option(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    identity: bool = True,
    at_least: float | None = None,
    below: float | None = None,
) -> Any:
    """A dataclass field with its help text; see the module docstring. ``at_least`` and
    ``below`` bound a number (each element of a tuple): ``check_fields`` refuses others."""
    meta = {
        "help": help,
        "choices": choices,
        "identity": identity,
        "at_least": at_least,
        "below": below,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("configs are frozen: use tuples for sequences")
    return dataclasses.field(default=default, metadata=meta)


def sequence_fields(cls: type) -> set[str]:
    """The fields that hold a sequence (a tuple), e.g. the map's ``widths``: one value of such
    a setting is a whole tuple."""
    hints = typing.get_type_hints(cls)
    return {name for name, hint in hints.items() if typing.get_origin(hint) is tuple}


def flag(name: str) -> str:
    """A field's command-line flag: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build ``cls`` from JSON values, refusing unknown keys (choices are checked by the config
    itself, ``check_fields``, so a config built in Python is checked the same way)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise GenlabError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def check_fields(cfg: Any) -> None:
    """What every field must hold, checked first by each config's ``__post_init__`` (so a
    config built in Python fails as the CLI does, before any folder is made): a value of its
    type; one of its ``choices``; a number that is finite, fits an int64 and lies within its
    ``at_least``/``below`` bounds (each element of a tuple too); a ``seed`` in 0..2^63-1. The
    configs check what depends on several fields themselves."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise GenlabError(
                f"{flag(f.name)}: {value!r} is not one of {', '.join(map(str, choices))}"
            )
        hint = hints[f.name]
        sequence = typing.get_origin(hint) is tuple
        if sequence and not isinstance(value, tuple):
            raise GenlabError(f"{flag(f.name)}: {value!r} is not a sequence")
        for item in value if sequence else (value,):
            _check_number(f, _element_type(hint), item)


def _element_type(hint: Any) -> Any:
    """int, float, str, bool (or None) for a field's hint: ``int | None``, ``tuple[float, ...]``."""
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _check_number(f: dataclasses.Field, kind: Any, value: Any) -> None:
    name = flag(f.name)
    if value is None or kind not in (int, float, bool):
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise GenlabError(f"{name}: {value!r} is not true or false")
        return
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        raise GenlabError(f"{name}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    if isinstance(value, int) and not -INT_MAX - 1 <= value <= INT_MAX:
        raise GenlabError(f"{name} {value}: too large (at most {INT_MAX})")
    if isinstance(value, float) and not math.isfinite(value):
        raise GenlabError(f"{name} {value}: must be a finite number")
    if f.name == "seed" and not 0 <= value <= SEED_MAX:
        raise GenlabError(f"{name} {value}: must lie in 0..{SEED_MAX} (2^63 - 1)")
    low, high = f.metadata.get("at_least"), f.metadata.get("below")
    if low is not None and value < low:
        raise GenlabError(f"{name} {value}: must be >= {low:g}")
    if high is not None and not value < high:
        raise GenlabError(f"{name} {value}: must be < {high:g}")


def with_overrides(cfg: C, overrides: Mapping[str, Any]) -> C:
    """``cfg`` with some fields replaced, validated like ``from_dict``."""
    return from_dict(type(cfg), {**to_dict(cfg), **overrides})


def identity_dict(cfg: Any) -> dict[str, Any]:
    """The fields that name the experiment (see the module docstring)."""
    values = to_dict(cfg)
    return {
        f.name: values[f.name] for f in dataclasses.fields(cfg) if f.metadata.get("identity", True)
    }


def config_hash(cfg: Any) -> str:
    """A short, stable hash of the identity fields."""
    blob = json.dumps(identity_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def run_id(cfg: Any, keys: tuple[str, ...] = ()) -> str:
    """A readable folder name: a few key fields, then the hash of every identity field."""
    values = to_dict(cfg)
    parts = [_slug(key, values[key]) for key in keys]
    return "-".join([*parts, config_hash(cfg)])


def _slug(key: str, value: Any) -> str:
    short = {"width": "w", "kernel": "k", "seed": "s", "label_noise": "p", "epochs": "e"}
    text = str(value)
    if "/" in text or "\\" in text:  # a path: keep its last part
        text = text.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch if ch.isalnum() or ch in ".+" else "_" for ch in text)
    return f"{short[key]}{text}" if key in short else text
