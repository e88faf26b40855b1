import torch

from genlab.data.transforms import double_with_vflip, random_vflip, vflip


def test_vflip_acts_on_the_height_axis_and_is_an_involution():
    images = torch.arange(2 * 4 * 3 * 3, dtype=torch.uint8).reshape(2, 4, 3, 3)  # (N, H, W, C)
    flipped = vflip(images)
    H = images.shape[1]
    for i in range(H):
        assert torch.equal(flipped[:, i], images[:, H - 1 - i])  # row i becomes row H-1-i
    assert torch.equal(vflip(flipped), images)
    assert torch.equal(flipped[:, :, 0], images[:, :, 0].flip(1))  # columns are not reordered


def test_double_appends_a_flipped_copy():
    images = torch.randint(0, 256, (5, 4, 4, 3), dtype=torch.uint8)
    labels = torch.arange(5)
    x, y = double_with_vflip(images, labels)
    assert torch.equal(x[:5], images) and torch.equal(x[5:], vflip(images))
    assert torch.equal(y, torch.cat([labels, labels]))


def test_random_vflip_flips_each_image_or_not_and_is_seeded():
    images = torch.randint(0, 256, (200, 4, 4, 3), dtype=torch.uint8)
    out = random_vflip(images, torch.Generator().manual_seed(1))
    same = (out == images).flatten(1).all(1)
    flipped = (out == vflip(images)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 60 < int(flipped.sum()) < 140
    assert torch.equal(out, random_vflip(images, torch.Generator().manual_seed(1)))
