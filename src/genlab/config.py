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
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from genlab.errors import GenlabError

C = TypeVar("C")


def option(default: Any, help: str, *, choices: tuple | None = None, identity: bool = True) -> Any:
    """A dataclass field with its help text; see the module docstring."""
    meta = {"help": help, "choices": choices, "identity": identity}
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
    itself, ``check_choices``, so a config built in Python is checked the same way)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise GenlabError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def check_choices(cfg: Any) -> None:
    """Every field with ``choices`` holds one of them: called first by each config's
    ``__post_init__``, so ``robustness.Config(model="conv5")`` fails as the CLI does."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices is not None and value not in choices:
            raise GenlabError(
                f"{flag(f.name)}: {value!r} is not one of {', '.join(map(str, choices))}"
            )


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
