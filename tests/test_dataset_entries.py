"""Every kind of file-system entry in a dataset, at every level, ends in one GenlabError that
names it (issue #14): links that loop or dangle, names that are not UTF-8, unreadable entries,
special files, a file where a folder belongs and a folder where a file belongs. Entries that
are not part of the dataset are ignored (hidden ones, named ".*", at every level), and valid
links load as their targets do.

Each class is a table of cases over the levels of the three on-disk formats: an image folder
(the root, train/ and test/, class folders, images, classes.txt), CIFAR-10's --data-dir (the
folder, cifar-10-batches-py/, the batch files, the archive) and linreg's --data (an .npz or a
folder of .npy/.csv files). Every bad input is built here, in tmp_path.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cifar_batch
from PIL import Image
from test_image_folder import make_folder

from genlab.data import load_dataset, load_image_folder
from genlab.data.linear import load_linear
from genlab.errors import GenlabError


def shown(path: Path) -> str:
    """How a message must show ``path``: printable, with bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def undecodable(folder: Path, name: str) -> Path:
    """``folder``/``name`` with a 0xFF byte in front: a name that is not valid UTF-8."""
    return folder / os.fsdecode(b"\xff" + name.encode())


# -- the entries, built ----------------------------------------------------------------------
_FIFOS: list[Path] = []


def _self_link(path: Path) -> None:
    path.symlink_to(path.name)


def _loop(path: Path) -> None:  # a -> b -> a
    other = path.with_name(path.name + "~")
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def _dangling(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


def _fifo(path: Path) -> None:
    os.mkfifo(path)
    _FIFOS.append(path)


def _socket(path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(path.parent)  # a socket's address is at most 107 bytes; tmp_path can be longer
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path.name)
    finally:
        os.chdir(cwd)


def _device(path: Path) -> None:
    path.symlink_to(os.devnull)  # a character device, made without mknod's privileges


def _file(path: Path) -> None:
    path.write_bytes(b"a file where a folder belongs\n")


def _folder(path: Path) -> None:
    path.mkdir()


MAKE: dict[str, Callable[[Path], None]] = {
    "self-link": _self_link,
    "link-loop": _loop,
    "dangling-link": _dangling,
    "fifo": _fifo,
    "socket": _socket,
    "device": _device,
    "file": _file,
    "folder": _folder,
}
SAYS = {
    "self-link": "symbolic link loop",
    "link-loop": "symbolic link loop",
    "dangling-link": "broken symbolic link",
    "fifo": "a FIFO (named pipe), not a",
    "socket": "a socket, not a",
    "device": "a character device, not a",
    "file": "a file, not a folder",
    "folder": "a folder, not a regular file",
}
NEITHER = ("self-link", "link-loop", "dangling-link", "fifo", "socket", "device")
WHERE_A_FOLDER_BELONGS = (*NEITHER, "file")
WHERE_A_FILE_BELONGS = (*NEITHER, "folder")


@pytest.fixture(autouse=True)
def _fifos_never_block() -> Iterator[None]:
    """A safety net, never the assertion: a loader that opened a FIFO would wait forever for a
    writer. This thread plays the writer for any FIFO built here that a reader has opened (the
    open fails, ENXIO, while nobody reads it), so such a regression fails instead of hanging."""
    _FIFOS.clear()
    done = threading.Event()

    def unblock() -> None:
        while not done.wait(0.2):
            for fifo in list(_FIFOS):
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()


# -- the three formats, and where in each a bad entry can sit ---------------------------------
def _batches(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        (folder / name).write_bytes(pickle.dumps(cifar_batch(2, seed), protocol=2))
    return folder


def _linear(path: Path, csv: tuple[str, ...] = ()) -> Path:
    """The four arrays as path.npz, or (csv: names saved as .csv) as a folder at ``path``."""
    rng = np.random.default_rng(0)
    arrays = {
        "X_train": rng.standard_normal((8, 3)),
        "y_train": rng.standard_normal(8),
        "X_test": rng.standard_normal((4, 3)),
        "y_test": rng.standard_normal(4),
    }
    if path.suffix == ".npz":
        np.savez(path, **arrays)
        return path
    path.mkdir()
    for key, a in arrays.items():
        if key in csv:
            np.savetxt(path / f"{key}.csv", a, delimiter=",")
        else:
            np.save(path / f"{key}.npy", a)
    return path


def _replace(path: Path) -> Path:
    """Clear ``path`` for the bad entry that takes its place."""
    if os.path.lexists(path):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return path


def _images(tmp: Path, listed: bool = False) -> Path:
    root = make_folder(tmp / "ds")
    if listed:
        (root / "classes.txt").write_text("cat\nant\nbee\n")
    return root


# A level builds a dataset under tmp, with the place for the bad entry cleared, and returns
# (what to load, where the entry goes).
Level = Callable[[Path], tuple[Path, Path]]


def _image_at(*parts: str, listed: bool = False) -> Level:
    def build(tmp: Path) -> tuple[Path, Path]:
        root = _images(tmp, listed)
        return root, _replace(root.joinpath(*parts))

    return build


def _image_root(tmp: Path) -> tuple[Path, Path]:
    return tmp / "ds", tmp / "ds"


def _cifar_at(*parts: str, layout: str) -> Level:
    """layout: "flat" (the batches in --data-dir), "inner" (in cifar-10-batches-py/), "empty"."""

    def build(tmp: Path) -> tuple[Path, Path]:
        data_dir = tmp / "cifar"
        data_dir.mkdir()
        if layout != "empty":
            _batches(data_dir / "cifar-10-batches-py" if layout == "inner" else data_dir)
        return data_dir, _replace(data_dir.joinpath(*parts))

    return build


def _cifar_root(tmp: Path) -> tuple[Path, Path]:
    return tmp / "cifar", tmp / "cifar"


def _linear_at(name: str, csv: tuple[str, ...] = ()) -> Level:
    def build(tmp: Path) -> tuple[Path, Path]:
        folder = _linear(tmp / "mine", csv)
        return folder, _replace(folder / name)

    return build


def _linear_root(tmp: Path) -> tuple[Path, Path]:
    return tmp / "mine.npz", tmp / "mine.npz"


def _load_images(path: Path) -> object:
    return load_dataset(str(path), quiet=True)


def _load_cifar(path: Path) -> object:
    return load_dataset("cifar10", path, quiet=True)


FOLDER_LEVELS = {
    "image-folder-root": (_image_root, _load_images),
    "image-folder-train": (_image_at("train"), _load_images),
    "image-folder-test": (_image_at("test"), _load_images),
    "class-folder-in-test": (_image_at("test", "ant"), _load_images),
    "class-folder-listed-in-classes.txt": (_image_at("train", "ant", listed=True), _load_images),
    "cifar-data-dir": (_cifar_root, _load_cifar),
    "cifar-10-batches-py": (_cifar_at("cifar-10-batches-py", layout="empty"), _load_cifar),
    "cifar-image-folder-train": (_image_at("train"), _load_cifar),
}
FILE_LEVELS = {
    "image-file": (_image_at("train", "bee", "001.png"), _load_images),
    "classes.txt": (_image_at("classes.txt"), _load_images),
    "cifar-batch-file": (_cifar_at("data_batch_3", layout="flat"), _load_cifar),
    "cifar-first-batch-file": (_cifar_at("test_batch", layout="flat"), _load_cifar),
    "cifar-batch-in-batches-py": (
        _cifar_at("cifar-10-batches-py", "data_batch_1", layout="inner"),
        _load_cifar,
    ),
    "cifar-archive": (_cifar_at("cifar-10-python.tar.gz", layout="empty"), _load_cifar),
    "linreg-data": (_linear_root, load_linear),
    "linreg-npy": (_linear_at("X_train.npy"), load_linear),
    "linreg-csv": (_linear_at("y_test.csv", csv=("y_test",)), load_linear),
}
BAD_ENTRIES = [
    pytest.param(level, kind, id=f"{level}-{kind}")
    for levels, kinds in (
        (FOLDER_LEVELS, WHERE_A_FOLDER_BELONGS),
        (FILE_LEVELS, WHERE_A_FILE_BELONGS),
    )
    for level in levels
    for kind in kinds
    if not (level == "linreg-data" and kind == "folder")  # --data may be a folder
]


def _tree(top: Path) -> dict[str, tuple]:
    """Every entry under ``top`` as it is on disk (links not followed): what no load may change."""
    out = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            out[path] = (st.st_mode, size, st.st_mtime_ns, link)
    return out


def _assert_named(error: GenlabError, path: Path, says: str) -> None:
    message = str(error)
    assert shown(path) in message and says in message, message
    assert "\n" not in message
    message.encode("utf-8")  # printable on any UTF-8 stream, strict or not


def _all_levels() -> dict[str, tuple]:
    return {**FOLDER_LEVELS, **FILE_LEVELS}


@pytest.mark.parametrize(("level", "kind"), BAD_ENTRIES)
def test_every_bad_entry_is_named_and_nothing_is_changed(tmp_path, monkeypatch, level, kind):
    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although a --data-dir was given")

    monkeypatch.setattr("genlab.data.cifar10.download", no_download)
    build, load = _all_levels()[level]
    source, entry = build(tmp_path)
    MAKE[kind](entry)
    before = _tree(tmp_path)
    with pytest.raises(GenlabError) as caught:
        load(source)
    _assert_named(caught.value, entry, SAYS[kind])
    assert _tree(tmp_path) == before


# -- what is not part of a dataset is ignored; valid links load as their targets ---------------
def _equal(a, b) -> None:
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert x.classes == y.classes
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)


IGNORED = [
    # train/ holds class folders: anything that is certainly not a folder is not a class
    *[(("train", "README"), kind) for kind in ("file", "fifo", "socket", "device")],
    (("train", "\udcffnotes.txt"), "file"),
    # a class folder holds images: names without an image suffix are not images, whatever they are
    *[(("train", "ant", "notes"), kind) for kind in MAKE],
    (("train", "ant", "\udcffnotes"), "file"),
    (("train", "ant", ".DS_Store"), "file"),
]


@pytest.mark.parametrize(
    ("parts", "kind"),
    IGNORED,
    ids=[f"{'/'.join(p)}-{k}".replace("\udcff", "xff") for p, k in IGNORED],
)
def test_entries_that_are_not_part_of_the_dataset_are_ignored(tmp_path, parts, kind):
    root = make_folder(tmp_path / "ds")
    clean = load_image_folder(root, quiet=True)
    MAKE[kind](root.joinpath(*parts))
    _equal(load_image_folder(root, quiet=True), clean)


@pytest.mark.parametrize("kind", ["self-link", "dangling-link", "fifo", "file"])
def test_with_a_classes_file_unlisted_entries_are_ignored(tmp_path, kind):
    root = make_folder(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\nant\nbee\n")
    clean = load_image_folder(root, quiet=True)
    MAKE[kind](root / "train" / "unlisted")
    (root / "test" / "\udcffunlisted").mkdir()
    _equal(load_image_folder(root, quiet=True), clean)


# -- hidden entries: never classes, never images, at every level -------------------------------
def _checkpoints(path: Path) -> None:
    """What Jupyter leaves: a hidden folder of (valid) image copies."""
    path.mkdir()
    for i in range(2):
        _image(path / f"{i:03d}-checkpoint.png")


def _apple_double(path: Path) -> None:
    """macOS's ._ sidecar: a resource fork (AppleDouble magic, then bytes no decoder reads)."""
    path.write_bytes(b"\x00\x05\x16\x07" + bytes(range(256)) * 4)


HIDDEN = {
    "root-.git-folder": ((".git",), _folder),
    "train-.git-folder": (("train", ".git"), _folder),
    "test-.git-folder": (("test", ".git"), _folder),
    "train-.ipynb_checkpoints-with-images": (("train", ".ipynb_checkpoints"), _checkpoints),
    "test-.ipynb_checkpoints-with-images": (("test", ".ipynb_checkpoints"), _checkpoints),
    "class-folder-.ipynb_checkpoints": (("train", "ant", ".ipynb_checkpoints"), _checkpoints),
    "apple-double-sidecar": (("train", "ant", "._000.png"), _apple_double),
    "train-broken-link": (("train", ".cache"), _dangling),
    "test-link-loop": (("test", ".cache"), _loop),
    "image-broken-link": (("test", "bee", ".000.png"), _dangling),
    "image-fifo": (("train", "cat", ".001.png"), _fifo),
    "image-not-utf8": (("train", "cat", ".\udcff.png"), _apple_double),
}


def _cache_key() -> str:
    """The key the one cached image folder was written for (its stamp)."""
    (stamp,) = (Path(os.environ["GENLAB_CACHE"]) / "arrays").glob("*/manifest.sha256")
    return stamp.read_text()


@pytest.mark.parametrize("case", HIDDEN)
def test_hidden_entries_are_not_part_of_the_dataset(tmp_path, monkeypatch, case):
    """Names starting with "." are ignored as ls hides them: the dataset loads exactly the
    visible classes and images, under the same cache key, so adding one keeps the cache."""
    parts, make = HIDDEN[case]
    root = make_folder(tmp_path / "ds")
    clean = load_image_folder(root, quiet=True)
    assert clean.train.classes == ("ant", "bee", "cat") and len(clean.train) == 9
    key = _cache_key()
    make(root.joinpath(*parts))

    def no_decoding(path):
        raise AssertionError(f"decoded {path}: an ignored entry invalidated the cache")

    with monkeypatch.context() as m:
        m.setattr("genlab.data.cifar10._decode", no_decoding)
        _equal(load_image_folder(root, quiet=True), clean)
    assert _cache_key() == key
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "fresh-cache"))  # decoded with it there
    _equal(load_image_folder(root, quiet=True), clean)
    assert _cache_key() == key


def test_a_classes_file_still_names_every_class_it_lists(tmp_path):
    """Hidden entries it does not list are ignored; what it lists must exist, hidden or not (a
    listed name is part of the dataset by name)."""
    root = make_folder(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\nant\nbee\n")
    clean = load_image_folder(root, quiet=True)
    _checkpoints(root / "train" / ".ipynb_checkpoints")
    _dangling(root / "test" / ".cache")
    _equal(load_image_folder(root, quiet=True), clean)
    (root / "classes.txt").write_text("cat\nant\nbee\n.ipynb_checkpoints\n")
    with pytest.raises(GenlabError, match=r"test: no folder for class '.ipynb_checkpoints'"):
        load_image_folder(root, quiet=True)
    _checkpoints(root / "test" / ".ipynb_checkpoints")
    splits = load_image_folder(root, quiet=True)
    assert splits.train.classes[-1] == ".ipynb_checkpoints" and len(splits.train) == 11


def _link_root(ds: Path, away: Path) -> None:
    ds.rename(away)
    ds.symlink_to(away)


VALID_LINKS = {
    "root": (),
    "train": ("train",),
    "class-folder": ("train", "ant"),
    "image-file": ("train", "bee", "001.png"),
    "classes.txt": ("classes.txt",),
}


@pytest.mark.parametrize("level", VALID_LINKS)
def test_a_link_to_a_real_folder_or_file_loads_as_its_target(tmp_path, level):
    root = make_folder(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\nant\nbee\n")
    clean = load_image_folder(root, quiet=True)
    linked = tmp_path / "linked"
    shutil.copytree(root, linked)
    entry = linked.joinpath(*VALID_LINKS[level])
    away = tmp_path / "elsewhere"
    entry.rename(away)
    entry.symlink_to(os.path.relpath(away, entry.parent))
    _equal(load_image_folder(linked, quiet=True), clean)


def test_links_to_real_batches_and_arrays_load_as_their_targets(tmp_path):
    real = _batches(tmp_path / "real")
    (tmp_path / "cifar").mkdir()
    for name in os.listdir(real):
        (tmp_path / "cifar" / name).symlink_to(real / name)
    _equal(load_dataset("cifar10", tmp_path / "cifar"), load_dataset("cifar10", real))
    npz = _linear(tmp_path / "real.npz")
    (tmp_path / "link.npz").symlink_to(npz.name)
    a, b = load_linear(tmp_path / "link.npz"), load_linear(npz)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_test"))


# -- names that are not UTF-8 -----------------------------------------------------------------
def _image(path: Path) -> None:
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(path, format="PNG")


def _utf8_root(tmp: Path) -> tuple[Path, Path]:
    root = make_folder(undecodable(tmp, "ds"))
    return root, root


def _utf8_class(tmp: Path) -> tuple[Path, Path]:
    root = make_folder(tmp / "ds")
    for split in ("train", "test"):
        undecodable(root / split, "ant").mkdir()
        _image(undecodable(root / split, "ant") / "0.png")
    return root, undecodable(root / "train", "ant")


def _utf8_test_class(tmp: Path) -> tuple[Path, Path]:
    root = make_folder(tmp / "ds")
    undecodable(root / "test", "wasp").mkdir()
    _image(undecodable(root / "test", "wasp") / "0.png")
    return root, undecodable(root / "test", "wasp")


def _utf8_image(tmp: Path) -> tuple[Path, Path]:
    root = make_folder(tmp / "ds")
    _image(undecodable(root / "train" / "ant", ".png"))
    return root, undecodable(root / "train" / "ant", ".png")


def _utf8_cifar(tmp: Path) -> tuple[Path, Path]:
    folder = _batches(undecodable(tmp, "cifar"))
    return folder, folder


def _utf8_npz(tmp: Path) -> tuple[Path, Path]:
    path = _linear(undecodable(tmp, "mine.npz"))
    return path, path


def _utf8_linear_folder(tmp: Path) -> tuple[Path, Path]:
    path = _linear(undecodable(tmp, "mine"))
    return path, path


NOT_UTF8 = {
    "image-folder-root": (_utf8_root, _load_images),
    "class-folder": (_utf8_class, _load_images),
    "class-folder-only-in-test": (_utf8_test_class, _load_images),
    "image-file": (_utf8_image, _load_images),
    "cifar-data-dir": (_utf8_cifar, _load_cifar),
    "linreg-npz": (_utf8_npz, load_linear),
    "linreg-folder": (_utf8_linear_folder, load_linear),
}


@pytest.mark.parametrize("level", NOT_UTF8)
def test_a_name_that_is_not_utf8_is_named_printably(tmp_path, level):
    build, load = NOT_UTF8[level]
    source, entry = build(tmp_path)
    with pytest.raises(GenlabError) as caught:
        load(source)
    _assert_named(caught.value, entry, "name is not valid UTF-8")


def test_a_classes_file_that_is_not_utf8_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "classes.txt").write_bytes(b"cat\n\xffant\nbee\n")
    with pytest.raises(GenlabError, match=r"classes.txt: not UTF-8 text"):
        load_image_folder(root, quiet=True)


# -- unreadable files and folders -------------------------------------------------------------
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint32) for f in ("effective", "permitted", "inheritable")]


_DAC_CAPS = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: what lets root read a chmod 000 file
_PR_CAPBSET_DROP = 24


@contextmanager
def _permissions_apply() -> Iterator[None]:
    """Inside, file permissions hold for this test as for any user. Root passes them (tests run
    as root here), so as root this thread, and every thread it starts, runs without the two
    capabilities that bypass them; they are restored on the way out."""
    if os.geteuid() != 0:
        yield
        return
    if sys.platform != "linux":
        pytest.skip("root ignores file permissions, and only Linux lets a thread drop that")
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip(f"capget failed: {os.strerror(ctypes.get_errno())}")
    saved = data[0].effective
    data[0].effective &= ~sum(1 << cap for cap in _DAC_CAPS)
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip(f"capset failed: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


def _unprivileged_child() -> None:
    """For a subprocess (preexec_fn): as root, drop the capabilities that bypass permissions
    from the bounding set, so the program it executes does not get them back."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _archive(tmp: Path) -> Path:
    (tmp / "cifar").mkdir()
    (tmp / "cifar" / "cifar-10-python.tar.gz").write_bytes(b"an archive, unread")
    return tmp / "cifar"


UNREADABLE = {  # level -> (build, the entry to chmod below what it built, its mode, loader)
    "image-folder-root": (_images, (), 0o000, _load_images),
    "image-folder-train": (_images, ("train",), 0o000, _load_images),
    "class-folder": (_images, ("train", "ant"), 0o000, _load_images),
    "class-folder-not-searchable": (_images, ("test", "cat"), 0o444, _load_images),
    "image-file": (_images, ("train", "bee", "001.png"), 0o000, _load_images),
    "classes.txt": (lambda tmp: _images(tmp, listed=True), ("classes.txt",), 0o000, _load_images),
    "cifar-data-dir": (lambda tmp: _batches(tmp / "cifar"), (), 0o000, _load_cifar),
    "cifar-batch-file": (
        lambda tmp: _batches(tmp / "cifar"),
        ("data_batch_2",),
        0o000,
        _load_cifar,
    ),
    "cifar-archive": (_archive, ("cifar-10-python.tar.gz",), 0o000, _load_cifar),
    "linreg-npz": (lambda tmp: _linear(tmp / "mine.npz"), (), 0o000, load_linear),
    "linreg-folder": (lambda tmp: _linear(tmp / "mine"), (), 0o000, load_linear),
    "linreg-npy": (lambda tmp: _linear(tmp / "mine"), ("X_test.npy",), 0o000, load_linear),
    "linreg-csv": (
        lambda tmp: _linear(tmp / "mine", csv=("y_train",)),
        ("y_train.csv",),
        0o000,
        load_linear,
    ),
}


def _unreadable(tmp: Path, level: str) -> tuple[Path, Path]:
    build, parts, mode, _ = UNREADABLE[level]
    source = build(tmp)
    entry = source.joinpath(*parts)
    entry.chmod(mode)
    return source, entry


@pytest.fixture
def _restore_modes(tmp_path) -> Iterator[None]:
    yield
    for folder, dirs, files in os.walk(tmp_path):  # so that tmp_path can be removed
        for name in dirs + files:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o755)


@pytest.mark.usefixtures("_restore_modes")
@pytest.mark.parametrize("level", UNREADABLE)
def test_an_unreadable_entry_is_named(tmp_path, level):
    source, entry = _unreadable(tmp_path, level)
    with _permissions_apply():
        with pytest.raises(GenlabError) as caught:
            UNREADABLE[level][3](source)
    _assert_named(caught.value, entry, "permission denied")


@pytest.mark.usefixtures("_restore_modes")
def test_an_image_made_unreadable_after_caching_is_still_named(tmp_path):
    """The cache holds its pixels, but another machine (another cache) could not read it: the
    same folder must not load or fail depending on what is cached."""
    root = make_folder(tmp_path / "ds")
    load_image_folder(root, quiet=True)
    image = root / "test" / "ant" / "000.png"
    image.chmod(0o000)
    with _permissions_apply():
        with pytest.raises(GenlabError) as caught:
            load_image_folder(root, quiet=True)
    _assert_named(caught.value, image, "permission denied")


# -- an entry that may be a class folder ------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("kind", ["self-link", "link-loop", "dangling-link"])
def test_an_entry_that_may_be_a_class_folder_is_named(tmp_path, split, kind):
    """Without a classes.txt, the classes are train/'s folders (and test/ may hold no other): a
    link whose target cannot be known may be one, so it is named, not passed over."""
    root = make_folder(tmp_path / "ds")
    entry = root / split / "dog"
    MAKE[kind](entry)
    with pytest.raises(GenlabError) as caught:
        load_image_folder(root, quiet=True)
    _assert_named(caught.value, entry, SAYS[kind])


# -- the command line: one line, exit 1, no traceback ------------------------------------------
def _entry(level: str, kind: str) -> Callable[[Path], tuple[Path, Path]]:
    def build(tmp: Path) -> tuple[Path, Path]:
        source, entry = _all_levels()[level][0](tmp)
        MAKE[kind](entry)
        return source, entry

    return build


def _image_args(source: Path) -> list[str]:
    return ["robustness", "--dataset", str(source)]


def _cifar_args(source: Path) -> list[str]:
    return ["robustness", "--dataset", "cifar10", "--data-dir", str(source)]


def _linreg_args(source: Path) -> list[str]:
    return ["linreg", "--data", str(source), "--no-sklearn-check"]


CLI_CASES = {  # name -> (build, argv after "genlab run", whether file permissions must hold)
    "image-file-fifo": (_entry("image-file", "fifo"), _image_args, False),
    "image-file-dangling-link": (_entry("image-file", "dangling-link"), _image_args, False),
    "train-self-link": (_entry("image-folder-train", "self-link"), _image_args, False),
    "image-folder-root-link-loop": (_entry("image-folder-root", "link-loop"), _image_args, False),
    "classes.txt-fifo": (_entry("classes.txt", "fifo"), _image_args, False),
    "class-folder-not-utf8": (_utf8_class, _image_args, False),
    "image-file-unreadable": (lambda tmp: _unreadable(tmp, "image-file"), _image_args, True),
    "cifar-batch-self-link": (_entry("cifar-batch-file", "self-link"), _cifar_args, False),
    "cifar-archive-fifo": (_entry("cifar-archive", "fifo"), _cifar_args, False),
    "linreg-data-fifo": (_entry("linreg-data", "fifo"), _linreg_args, False),
    "linreg-npy-dangling-link": (_entry("linreg-npy", "dangling-link"), _linreg_args, False),
    "linreg-data-not-utf8": (_utf8_npz, _linreg_args, False),
    "linreg-csv-unreadable": (lambda tmp: _unreadable(tmp, "linreg-csv"), _linreg_args, True),
}


def _cli(tmp_path: Path, case: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    build, args, unprivileged = CLI_CASES[case]
    source, entry = build(tmp_path)
    out = tmp_path / "runs"
    argv = [
        sys.executable,
        "-m",
        "genlab",
        "run",
        *args(source),
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=300,  # a safety net against a hang, never the assertion
            preexec_fn=_unprivileged_child if unprivileged else None,
        )
    except subprocess.SubprocessError as e:  # the child could not drop the capabilities
        pytest.skip(f"cannot make root subject to file permissions here ({e})")
    return done, entry, out


@pytest.mark.usefixtures("_restore_modes")
@pytest.mark.parametrize("case", CLI_CASES)
def test_the_cli_ends_in_one_line_naming_the_entry(tmp_path, case):
    done, entry, out = _cli(tmp_path, case)
    err = done.stderr.decode("utf-8")  # strict: what it printed is text
    assert done.returncode == 1, err
    assert b"Traceback" not in done.stdout + done.stderr
    assert err.count("\n") == 1 and err.startswith("genlab: error: "), err
    assert shown(entry) in err, err
    assert not list(out.glob("*/*")), "a failed start left a run folder"
