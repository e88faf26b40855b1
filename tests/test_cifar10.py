"""The official-format loader: download with checksum, safe extraction, safe unpickling."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cifar_batch, write_cifar_archive

from genlab.data import load_dataset
from genlab.data.cifar10 import (
    CIFAR10_CLASSES,
    load_cifar10,
    md5sum,
    read_batch,
    safe_extract,
)
from genlab.errors import GenlabError


def test_download_verifies_extracts_and_reads(tmp_path, _isolated_cache):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", n_per_batch=6)
    splits = load_cifar10(url=archive.as_uri(), md5=md5sum(archive), quiet=True)
    assert splits.train.images.shape == (30, 32, 32, 3) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (6, 32, 32, 3)
    assert splits.train.classes == CIFAR10_CLASSES
    # the official layout: 3072 bytes = 1024 red, 1024 green, 1024 blue, row-major
    raw = cifar_batch(6, 5)  # the test batch is written with seed 5
    first = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(splits.test.images[0].numpy(), first)
    assert splits.test.labels.tolist() == raw[b"labels"]
    # the second load reads the extracted batches; nothing is downloaded again
    again = load_cifar10(url="file:///nonexistent/archive.tar.gz", md5="0" * 32, quiet=True)
    assert torch.equal(again.train.images, splits.train.images)


def test_checksum_mismatch_is_refused_and_nothing_is_kept(tmp_path, _isolated_cache):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(GenlabError, match="checksum mismatch"):
        load_cifar10(url=archive.as_uri(), md5="0" * 32, quiet=True)
    assert not list((_isolated_cache / "cifar10").glob("*.tar.gz*"))
    assert not (_isolated_cache / "cifar10" / "cifar-10-batches-py").exists()


def test_data_dir_archive_with_bad_checksum_is_refused(tmp_path):
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(GenlabError, match="cifar-10-python.tar.gz: checksum mismatch"):
        load_cifar10(tmp_path, md5="f" * 32)


@pytest.mark.parametrize(
    "name",
    ["../escaped.txt", "/tmp/genlab-absolute-escape.txt", "cifar-10-batches-py/../../up.txt"],
)
def test_archive_member_outside_the_target_is_refused(tmp_path, name):
    archive = write_cifar_archive(tmp_path / "evil.tar.gz", extra={name: b"owned"})
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(GenlabError, match="outside"):
        safe_extract(archive, target)
    assert (
        not (tmp_path / "escaped.txt").exists()
        and not Path("/tmp/genlab-absolute-escape.txt").exists()
    )
    assert not any(target.rglob("*"))  # checked before anything is written


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(GenlabError, match="link"):
        safe_extract(archive, tmp_path / "out")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_a_pickle_that_tries_to_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": []}, protocol=2))
    with pytest.raises(
        GenlabError, match=r"data_batch_1: refused to unpickle .*(posix|os)\.system"
    ):
        read_batch(evil)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_truncated_batch_names_the_file(tmp_path):
    good = pickle.dumps(cifar_batch(4, 0), protocol=2)
    cut = tmp_path / "data_batch_1"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(GenlabError, match="data_batch_1: truncated or corrupted"):
        read_batch(cut)
    garbage = tmp_path / "test_batch"
    garbage.write_bytes(b"\x00not a pickle at all")
    with pytest.raises(GenlabError, match="test_batch: truncated or corrupted"):
        read_batch(garbage)


def test_a_pickle_of_the_wrong_shape_is_refused(tmp_path):
    wrong = tmp_path / "data_batch_1"
    wrong.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(GenlabError, match="not a CIFAR-10 batch"):
        read_batch(wrong)


def test_data_dir_is_used_as_is_and_never_downloads(tmp_path):
    archive = write_cifar_archive(tmp_path / "a.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "copy", filter="data")
    splits = load_dataset("cifar10", tmp_path / "copy")  # finds cifar-10-batches-py/ inside
    assert len(splits.train) == 30
    with pytest.raises(GenlabError, match="--data-dir .*no such folder"):
        load_dataset("cifar10", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="holds no CIFAR-10"):
        load_dataset("cifar10", tmp_path / "empty")


def test_a_killed_extraction_leaves_nothing_the_next_load_trusts(
    tmp_path, _isolated_cache, monkeypatch
):
    from genlab.data import cifar10

    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    real = cifar10._read_batches

    def killed(folder):
        raise KeyboardInterrupt  # after extraction, before the rename

    monkeypatch.setattr(cifar10, "_read_batches", killed)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(url=archive.as_uri(), md5=md5sum(archive), quiet=True)
    assert not (_isolated_cache / "cifar10" / "cifar-10-batches-py").exists()
    assert [p.name for p in (_isolated_cache / "cifar10").iterdir()] == ["cifar-10-python.tar.gz"]
    monkeypatch.setattr(cifar10, "_read_batches", real)
    assert len(load_cifar10(url="file:///nonexistent", md5=md5sum(archive), quiet=True).train) == 30


def test_an_archive_in_data_dir_is_extracted_into_the_cache(tmp_path, _isolated_cache):
    data_dir = tmp_path / "readonly"
    data_dir.mkdir()
    archive = write_cifar_archive(data_dir / "cifar-10-python.tar.gz")
    splits = load_cifar10(data_dir, md5=md5sum(archive))
    assert len(splits.test) == 6
    assert [p.name for p in data_dir.iterdir()] == ["cifar-10-python.tar.gz"]
    assert (_isolated_cache / "cifar10" / "cifar-10-batches-py" / "test_batch").exists()


def test_non_integer_labels_are_refused(tmp_path):
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [b"x"]}))
    with pytest.raises(GenlabError, match="labels are not integers"):
        read_batch(bad)


def test_missing_batch_file_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(3, 0), protocol=2))
    with pytest.raises(GenlabError, match="data_batch_1: missing"):
        load_cifar10(tmp_path)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(GenlabError, match="no such dataset.*digits, cifar10, synthetic"):
        load_dataset("imagenet")


def test_progress_bar_shows_the_download(tmp_path, capsys):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    load_cifar10(url=archive.as_uri(), md5=md5sum(archive))
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err


def _batches_folder(path: Path, n: int = 4) -> Path:
    path.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        (path / name).write_bytes(pickle.dumps(cifar_batch(n, seed), protocol=2))
    return path


def test_batches_are_unpickled_once_then_served_from_the_cache(tmp_path, monkeypatch):
    from genlab.data import cifar10

    folder = _batches_folder(tmp_path / "cifar-10-batches-py")
    first = load_cifar10(folder)

    def no_unpickling(path):
        raise AssertionError(f"unpickled {path} although the cache is valid")

    monkeypatch.setattr(cifar10, "read_batch", no_unpickling)
    second = load_cifar10(folder)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    assert second.train.classes == CIFAR10_CLASSES


def test_a_changed_batch_file_invalidates_the_cache(tmp_path):
    folder = _batches_folder(tmp_path / "cifar-10-batches-py")
    load_cifar10(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(7, 99), protocol=2))
    assert len(load_cifar10(folder).test) == 7


def test_a_same_size_rewrite_invalidates_the_cache(tmp_path):
    folder = _batches_folder(tmp_path / "cifar-10-batches-py")
    before = load_cifar10(folder).test.images
    target = folder / "test_batch"
    st = target.stat()
    batch = cifar_batch(4, 5)  # what _batches_folder wrote there
    # the images in reverse order: the same bytes, so the same pickle size (protocol 2 stores
    # array bytes as latin-1 text, whose length depends on the values)
    batch[b"data"] = batch[b"data"][::-1].copy()
    target.write_bytes(pickle.dumps(batch, protocol=2))
    assert target.stat().st_size == st.st_size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = load_cifar10(folder).test.images
    assert torch.equal(
        after, torch.from_numpy(batch[b"data"]).view(-1, 3, 32, 32).permute(0, 2, 3, 1)
    )
    assert not torch.equal(before, after)


def test_a_damaged_cache_is_rebuilt(tmp_path, _isolated_cache):
    folder = _batches_folder(tmp_path / "cifar-10-batches-py")
    first = load_cifar10(folder)
    [cached] = (_isolated_cache / "arrays").iterdir()
    (cached / "train_images.npy").write_bytes(b"not an array")
    again = load_cifar10(folder)
    assert torch.equal(first.train.images, again.train.images)
    assert np.load(cached / "train_images.npy").shape == (20, 32, 32, 3)  # written again
