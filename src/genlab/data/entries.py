"""The file-system entries of a dataset, checked before anything is opened (a FIFO would block
the read forever). Two rules hold for every on-disk format (image folders, CIFAR-10's batches,
linreg's arrays):

- An entry that is part of the dataset, by its name (train/, classes.txt, data_batch_1,
  X_train.npy, a class listed in classes.txt) or by its kind (a folder in train/, a file with an
  image suffix in a class folder), must be valid, or the load ends in one GenlabError naming it:
  a broken or looping link, a name that is not UTF-8, an entry that cannot be read, a special
  file, a file where a folder belongs or a folder where a file belongs. An entry whose kind
  cannot be known (a broken link where a class folder could be) is an error too: it may be part
  of the dataset.
- An entry that is not part of the dataset is ignored, whatever it is, and never opened. Hidden
  names, those starting with "." (.git, .ipynb_checkpoints, macOS's ._x.png sidecars), are left
  out of every listing, as ``ls`` leaves them out: they are never part of a dataset by their
  kind, only by name (a class that classes.txt lists).

Names go into run folders, manifests and figures as text, so one that is part of the dataset and
is not UTF-8 is an error. Messages show every name with each byte that is not UTF-8 as a \\xNN
escape (``shown``), so they always print.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISREG, S_ISSOCK

from genlab.errors import GenlabError

# Permission is asked for as the process opens files: with its effective ids and capabilities.
EFFECTIVE_IDS = os.access in os.supports_effective_ids


def shown(path: str | os.PathLike) -> str:
    """``path`` as text that always prints: bytes that are not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_utf8(path: Path) -> None:
    """Names go into run folders, manifests and figures as text: one that is not UTF-8 cannot."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise GenlabError(f"{shown(path)}: name is not valid UTF-8; rename it") from None


def _kind(mode: int) -> str:
    kinds = (
        (S_ISDIR, "a folder"),
        (S_ISREG, "a file"),
        (S_ISFIFO, "a FIFO (named pipe)"),
        (S_ISSOCK, "a socket"),
        (S_ISCHR, "a character device"),
        (S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def entry_stat(
    path: Path, missing: str = "no such file or folder", fd: int | None = None
) -> os.stat_result:
    """os.stat(path), following links, with every failure a GenlabError naming ``path``.
    ``fd``: ``path``'s folder, open, so only the name is looked up (2x faster per file)."""
    where, at = (path.name, {"dir_fd": fd}) if fd is not None else (path, {})
    try:
        return os.stat(where, **at)
    except FileNotFoundError:
        try:
            target = os.readlink(where, **at)
        except OSError:  # not a link: missing, or removed since the listing
            raise GenlabError(f"{shown(path)}: {missing}") from None
        raise GenlabError(f"{shown(path)}: broken symbolic link (to {shown(target)})") from None
    except PermissionError:
        raise GenlabError(f"{shown(path)}: permission denied") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise GenlabError(f"{shown(path)}: symbolic link loop") from None
        raise GenlabError(f"{shown(path)}: cannot be read ({e.strerror or e})") from None


def check_folder(
    path: Path, access: int = os.R_OK | os.X_OK, missing: str = "no such folder"
) -> os.stat_result:
    """``path`` is a folder (or a link to one) that can be listed (``access``)."""
    st = entry_stat(path, missing)
    if not S_ISDIR(st.st_mode):
        raise GenlabError(f"{shown(path)}: {_kind(st.st_mode)}, not a folder")
    if not os.access(path, access, effective_ids=EFFECTIVE_IDS):
        raise GenlabError(f"{shown(path)}: permission denied (cannot list the folder)")
    return st


def check_file(path: Path, missing: str = "no such file", fd: int | None = None) -> os.stat_result:
    """``path`` is a readable regular file (or a link to one); checked before it is opened,
    since opening a FIFO blocks."""
    st = entry_stat(path, missing, fd)
    if not S_ISREG(st.st_mode):
        raise GenlabError(f"{shown(path)}: {_kind(st.st_mode)}, not a regular file")
    where, at = (path.name, {"dir_fd": fd}) if fd is not None else (path, {})
    if not os.access(where, os.R_OK, effective_ids=EFFECTIVE_IDS, **at):
        raise GenlabError(f"{shown(path)}: permission denied")
    return st


def is_hidden(name: str) -> bool:
    """A name ``ls`` hides: one starting with "."."""
    return name.startswith(".")


def list_folder(folder: Path) -> list[str]:
    """The names in ``folder`` that are not hidden, sorted: the only entries that can be part of
    a dataset by their kind. Hidden ones are left out before anything looks at them."""
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise GenlabError(f"{shown(folder)}: cannot be listed ({e.strerror or e})") from None
    return sorted(n for n in names if not is_hidden(n))
