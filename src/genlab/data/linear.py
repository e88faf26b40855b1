"""Data for linear regression: a seeded Gaussian design, or the user's arrays from disk.

``--data FILE.npz`` holds the arrays X_train (n, p), y_train (n,), X_test (m, p), y_test (m,);
``--data FOLDER`` holds them as ``X_train.npy`` / ``X_train.csv`` and so on. A CSV is numbers
separated by commas (or whitespace), one sample per line; a first line with no number in it is
taken as a header and skipped. Anything else — a missing array, mismatched shapes, NaN or inf,
a non-numeric value, an empty file — is a GenlabError naming the file and what is wrong. So is
every entry that cannot be read as such: a broken or looping link, a FIFO or other special file
(checked before it is opened: reading a FIFO blocks), a folder named like a file, an unreadable
file, a path that is not UTF-8 (it goes into the run folder and the figures as text).
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genlab.data.entries import check_file, check_folder, check_utf8, entry_stat
from genlab.errors import GenlabError

ARRAYS = ("X_train", "y_train", "X_test", "y_test")


@dataclass(frozen=True)
class LinearData:
    x_train: np.ndarray  # (n, p) float64
    y_train: np.ndarray  # (n,)
    x_test: np.ndarray  # (m, p)
    y_test: np.ndarray  # (m,)
    beta_star: np.ndarray | None  # (p,) the true coefficients, when known
    name: str
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> digest, for --data

    @property
    def n(self) -> int:
        return self.x_train.shape[0]

    @property
    def p(self) -> int:
        return self.x_train.shape[1]


def gaussian_design(
    n: int,
    p: int,
    n_test: int,
    r: float,
    sigma: float,
    rng: np.random.Generator,
    rank: int | None = None,
) -> LinearData:
    """X with iid N(0, 1) entries, ``y = X beta* + sigma eps`` with ||beta*|| = r, and a test set
    of ``n_test`` from the same model. ``rank`` R makes every row ``a B / sqrt(R)`` with a ~
    N(0, I_R) and one fixed Gaussian R x p matrix B: a rank-R design (train and test) whose
    entries still have variance 1. The training draws come first, so ``n_test`` leaves them be."""
    u = rng.standard_normal(p)
    beta = r * u / np.linalg.norm(u) if r > 0 else np.zeros(p)
    basis = rng.standard_normal((rank, p)) / math.sqrt(rank) if rank is not None else None

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((m, p)) if basis is None else rng.standard_normal((m, rank)) @ basis
        return x, x @ beta + sigma * rng.standard_normal(m)

    x_train, y_train = draw(n)
    x_test, y_test = draw(n_test)
    name = "gaussian" if rank is None else f"gaussian, rank {rank}"
    return LinearData(x_train, y_train, x_test, y_test, beta, name)


def load_linear(path: str | Path) -> LinearData:
    """The four arrays from an .npz file or a folder of .npy/.csv files, checked."""
    path = Path(path)
    check_utf8(path)
    if not os.path.lexists(path):
        raise GenlabError(f"--data {path}: no such file or folder")
    if stat.S_ISDIR(entry_stat(path).st_mode):
        check_folder(path)
        arrays, digests = _load_folder(path)
    else:
        check_file(path)  # a FIFO, a socket, a device: named, never opened
        arrays, digests = _load_npz(path)
    x_train, y_train, x_test, y_test = (arrays[k] for k in ARRAYS)
    _check_shapes(path, x_train, y_train, x_test, y_test)
    return LinearData(
        x_train, y_train.reshape(-1), x_test, y_test.reshape(-1), None, str(path), digests
    )


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if path.stat().st_size == 0:
        raise GenlabError(f"{path}: file is empty")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GenlabError(f"{path}: not a readable .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise GenlabError(f"{path}: a single array, not an .npz archive of {', '.join(ARRAYS)}")
    with archive:
        missing = [k for k in ARRAYS if k not in archive.files]
        if missing:
            raise GenlabError(
                f"{path}: missing array(s) {', '.join(missing)} (need {', '.join(ARRAYS)})"
            )
        raw = {k: _read_member(archive, k, path) for k in ARRAYS}
    arrays = {k: _numeric(v, f"{path} [{k}]") for k, v in raw.items()}
    return arrays, {path.name: _sha256(path)}


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:  # object arrays need pickle
        raise GenlabError(f"{path} [{key}]: cannot be read as numbers ({e})") from None


def _load_folder(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays, digests = {}, {}
    for key in ARRAYS:
        # lexists: a broken link or a FIFO by that name is named below, not passed over
        found = [folder / f"{key}{ext}" for ext in (".npy", ".csv")]
        found = [f for f in found if os.path.lexists(f)]
        if not found:
            raise GenlabError(f"{folder}: no {key}.npy or {key}.csv (need {', '.join(ARRAYS)})")
        if len(found) > 1:
            raise GenlabError(f"{folder}: both {key}.npy and {key}.csv; keep one")
        file = found[0]
        if check_file(file).st_size == 0:
            raise GenlabError(f"{file}: file is empty")
        arrays[key] = _read_csv(file) if file.suffix == ".csv" else _read_npy(file)
        digests[file.name] = _sha256(file)
    return arrays, digests


def _read_npy(file: Path) -> np.ndarray:
    try:
        raw = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise GenlabError(f"{file}: not a readable .npy array ({e})") from None
    return _numeric(raw, str(file))


def _read_csv(file: Path) -> np.ndarray:
    try:
        lines = file.read_text().splitlines()
    except UnicodeDecodeError:
        raise GenlabError(f"{file}: not a text CSV file") from None
    except OSError as e:
        raise GenlabError(f"{file}: cannot be read ({e.strerror or e})") from None
    rows = [(k, line) for k, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise GenlabError(f"{file}: file is empty")
    sep = "," if "," in rows[0][1] else None
    if not any(_is_number(tok) for tok in rows[0][1].split(sep)):
        rows = rows[1:]  # a header line
        if not rows:
            raise GenlabError(f"{file}: holds a header line and no data")
    values, width = [], None
    for k, line in rows:
        tokens = [tok.strip() for tok in line.split(sep)]
        try:
            row = [float(tok) for tok in tokens]
        except ValueError:
            bad = next(tok for tok in tokens if not _is_number(tok))
            raise GenlabError(f"{file}: line {k}: non-numeric value {bad!r}") from None
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise GenlabError(
                f"{file}: line {k} has {len(row)} values, the first data line {width}"
            )
        values.append(row)
    return np.asarray(values, dtype=np.float64)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _numeric(a: np.ndarray, where: str) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise GenlabError(f"{where}: dtype {a.dtype} is not a real number type")
    if a.size == 0:
        raise GenlabError(f"{where}: array is empty (shape {a.shape})")
    return a.astype(np.float64)


def _check_shapes(
    path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> None:
    for name, x in (("X_train", x_train), ("X_test", x_test)):
        if x.ndim != 2:
            raise GenlabError(
                f"{path}: {name} must be 2-D (samples x features), got shape {x.shape}"
            )
    for name, y, x, xname in (
        ("y_train", y_train, x_train, "X_train"),
        ("y_test", y_test, x_test, "X_test"),
    ):
        if y.ndim != 1 and not (y.ndim == 2 and 1 in y.shape):
            raise GenlabError(
                f"{path}: {name} must be 1-D (one value per sample), got shape {y.shape}"
            )
        if y.size != x.shape[0]:
            raise GenlabError(
                f"{path}: {xname} has {x.shape[0]} rows but {name} has {y.size} values"
            )
    if x_test.shape[1] != x_train.shape[1]:
        raise GenlabError(
            f"{path}: X_test has {x_test.shape[1]} columns but X_train has {x_train.shape[1]}"
        )
    for name, a in zip(ARRAYS, (x_train, y_train, x_test, y_test), strict=True):
        bad = ~np.isfinite(a)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise GenlabError(
                f"{path}: {name} has {int(bad.sum())} NaN/inf value(s), the first at index {first}"
            )


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
