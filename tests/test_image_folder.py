"""Image folders: decoded once, cached as .npy with a manifest that a changed folder invalidates."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_CIFAR
from PIL import Image

from genlab.data import cifar10, load_dataset, load_image_folder
from genlab.errors import GenlabError


def make_folder(
    root: Path, classes=("cat", "ant", "bee"), per_class=(3, 2), size=(8, 6), fmt="png"
) -> Path:
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i:03d}.{fmt}")
    return root


def test_round_trip_classes_and_pixels(tmp_path):
    root = make_folder(tmp_path / "ds")
    splits = load_image_folder(root, quiet=True)
    assert splits.train.classes == ("ant", "bee", "cat")  # sorted folder names
    assert splits.train.images.shape == (9, 6, 8, 3) and splits.test.images.shape == (6, 6, 8, 3)
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    png = np.asarray(Image.open(root / "train" / "bee" / "001.png"))
    assert np.array_equal(splits.train.images[4].numpy(), png)  # lossless: exact pixels


def test_classes_file_sets_the_order(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\nant\nbee\n")
    splits = load_image_folder(root, quiet=True)
    assert splits.train.classes == ("cat", "ant", "bee")
    cat = np.asarray(Image.open(root / "train" / "cat" / "000.png"))
    assert np.array_equal(splits.train.images[0].numpy(), cat) and splits.train.labels[0] == 0


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "ds")
    first = load_image_folder(root, quiet=True)

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(cifar10, "_decode", no_decoding)
    second = load_image_folder(root, quiet=True)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)


@pytest.mark.parametrize("change", ["modify", "add", "remove", "touch"])
def test_a_changed_folder_invalidates_the_cache(tmp_path, change):
    root = make_folder(tmp_path / "ds")
    load_image_folder(root, quiet=True)
    target = root / "train" / "ant" / "000.png"
    if change == "modify":
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(target)
    elif change == "add":
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "train" / "ant" / "new.png")
    elif change == "remove":
        target.unlink()
    else:
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = load_image_folder(root, quiet=True)
    expected = {"modify": 9, "add": 10, "remove": 8, "touch": 9}[change]
    assert len(again.train) == expected
    if change == "modify":
        assert int(again.train.images[0].sum()) == 0


def test_jpeg_folders_load(tmp_path):
    root = make_folder(tmp_path / "ds", fmt="jpg")
    assert load_image_folder(root, quiet=True).train.images.shape == (9, 6, 8, 3)


def test_missing_folder(tmp_path):
    with pytest.raises(GenlabError, match="no such folder"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(GenlabError, match="missing test/ folder"):
        load_image_folder(tmp_path / "half")


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "test" / "dog").mkdir()
    (root / "train" / "dog").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "train" / "dog" / "0.png")
    with pytest.raises(GenlabError, match=r"test/dog: empty class folder"):
        load_image_folder(root)


def test_test_and_train_must_hold_the_same_classes(tmp_path):
    root = make_folder(tmp_path / "ds")
    for png in (root / "test" / "bee").iterdir():
        png.unlink()
    (root / "test" / "bee").rmdir()
    with pytest.raises(GenlabError, match=r"test: no folder for class 'bee'"):
        load_image_folder(root)
    (root / "test" / "bee").mkdir()
    (root / "test" / "wasp").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "test" / "bee" / "0.png")
    with pytest.raises(GenlabError, match=r"test/wasp: class folder that train/ does not have"):
        load_image_folder(root)


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "train" / "bee" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(GenlabError, match=r"bee/broken.png: not a readable image"):
        load_image_folder(root, quiet=True)


def test_images_of_different_sizes_are_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    Image.fromarray(np.zeros((7, 8, 3), np.uint8)).save(root / "train" / "cat" / "odd.png")
    with pytest.raises(GenlabError, match=r"cat/odd.png: image is 8x7.*all must match"):
        load_image_folder(root, quiet=True)


def test_a_dataset_path_loads_the_folder(tmp_path):
    root = make_folder(tmp_path / "ds")
    assert len(load_dataset(str(root)).train) == 9


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="../shared/data/cifar10-jpeg is absent")
def test_shared_cifar10_jpeg_folder(tmp_path):
    splits = load_dataset("cifar10", SHARED_CIFAR, quiet=True)
    assert splits.train.images.shape == (50_000, 32, 32, 3) and len(splits.test) == 10_000
    assert torch.bincount(splits.train.labels).tolist() == [5000] * 10
    assert splits.train.classes[:3] == ("airplane", "automobile", "bird")
    mean = splits.train.images.double().mean((0, 1, 2)) / 255
    assert torch.allclose(mean, torch.tensor([0.485, 0.477, 0.439], dtype=torch.double), atol=0.01)


def test_an_image_name_that_is_no_image_file_is_named_not_skipped(tmp_path):
    """Skipping it would load a different dataset than the folder shows (more in
    test_dataset_entries.py); names without an image suffix are still ignored."""
    root = make_folder(tmp_path / "ds")
    (root / "train" / "ant" / "notes").mkdir()
    (root / "train" / "ant" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    assert len(load_image_folder(root, quiet=True).train) == 9
    (root / "train" / "ant" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(GenlabError, match=r"ant/gone.png: broken symbolic link"):
        load_image_folder(root, quiet=True)
    (root / "train" / "ant" / "gone.png").unlink()
    (root / "train" / "ant" / "folder.png").mkdir()
    with pytest.raises(GenlabError, match=r"ant/folder.png: a folder, not a regular file"):
        load_image_folder(root, quiet=True)


def test_an_unwritable_cache_costs_time_not_the_run(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "ds")
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("GENLAB_CACHE", str(blocker))
    assert len(load_image_folder(root, quiet=True).train) == 9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not cached" in err and "GENLAB_CACHE" in err
