"""Atomic writes: a temporary file in the same folder, fsynced, then renamed over the target,
so a kill leaves either the old file or the new one, never half of one.

A temporary file is named ``.<target>.<host>-<pid>.<random>.tmp``: one left by a killed writer
is found and removed by ``remove_stale`` (a file of a live writer, or of another machine, is
left alone). An ``OSError`` while writing (a full disk, a read-only file system, a folder that
is not writable) becomes one ``GenlabError`` naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError

_STALE = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def _host() -> str:
    """The host's full name, with the characters that temporary names use as separators
    replaced."""
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def temp_prefix(path: Path) -> str:
    """The start of the name of a temporary file for ``path`` (see the module docstring)."""
    return f".{Path(path).name}.{_host()}-{os.getpid()}."


def write_error(path: Path, e: OSError) -> GenlabError:
    """One line for an ``OSError`` met while writing ``path``: what happened and what to do."""
    why = e.strerror or type(e).__name__
    if e.errno == errno.ENOSPC:
        why += "; free some space and re-run the same command to resume"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why += "; choose a writable --out"
    return GenlabError(f"{path}: cannot write ({why})")


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(fileobj)`` into a temporary file, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes files private; results are meant to be read
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale(folder: Path) -> list[Path]:
    """Remove the temporary files (of ``atomic_write``; folders of a discarded run) that
    writers on this machine left in ``folder`` when they were killed; returns them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        found = _STALE.match(name)
        if found is None or found["host"] != _host() or _alive(int(found["pid"])):
            continue
        stale = Path(folder) / name
        try:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
            removed.append(stale)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), mode="w")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GenlabError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GenlabError(f"{path}: is a folder, not a JSON file") from None
    except OSError as e:
        raise GenlabError(f"{path}: unreadable ({e.strerror or type(e).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenlabError(f"{path}: not valid JSON ({e})") from None


def read_object(path: Path) -> dict[str, Any]:
    """``read_json`` of a file that must hold one JSON object."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise GenlabError(f"{path}: not a JSON object (holds a {type(value).__name__})")
    return value
