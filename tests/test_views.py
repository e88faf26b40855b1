"""The eight views: one tensor op each, the same on (N, H, W, C) data and (N, C, H, W) features,
and together the group of the square's symmetries."""

from __future__ import annotations

import pytest
import torch

from genlab.data.transforms import VIEWS, check_group, compose, inverse, parse_views, vflip, view
from genlab.errors import GenlabError

NHWC, NCHW = (1, 2), (-2, -1)


def images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, 6, 6, 2), generator=g, dtype=torch.uint8)  # (N, H, W, C)


def test_views_are_the_eight_distinct_symmetries():
    x = images()
    outs = [view(v, x) for v in VIEWS]
    assert len(VIEWS) == 8 and VIEWS[0] == "identity"
    for i in range(8):
        for j in range(i):
            assert not torch.equal(outs[i], outs[j]), (VIEWS[i], VIEWS[j])
        # a permutation of the pixels of each image: same multiset of values per image
        assert torch.equal(outs[i].flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_named_views_move_pixels_as_named():
    x = torch.arange(9).view(3, 3)  # row 0 is 0 1 2
    at = lambda v: view(v, x, (0, 1)).tolist()  # noqa: E731
    assert at("vflip") == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert at("hflip") == [[2, 1, 0], [5, 4, 3], [8, 7, 6]]
    assert at("transpose") == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert at("antitranspose") == [[8, 5, 2], [7, 4, 1], [6, 3, 0]]
    assert at("rot180") == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]
    assert at("rot90") == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
    assert torch.equal(view("vflip", x, (0, 1)), vflip(x, 0))  # one definition of the flip


def test_group_relations():
    x = images(1)

    def apply(*names: str) -> torch.Tensor:  # apply(a, b) = a(b(x))
        out = x
        for name in reversed(names):
            out = view(name, out)
        return out

    assert torch.equal(apply("rot90", "rot90", "rot90", "rot90"), x)
    assert torch.equal(apply("rot90", "rot90"), apply("rot180"))
    assert torch.equal(apply("rot90", "rot180"), apply("rot270"))
    for reflection in ("vflip", "hflip", "transpose", "antitranspose"):
        assert torch.equal(apply(reflection, reflection), x)
    assert torch.equal(apply("vflip", "hflip"), apply("rot180"))
    assert torch.equal(apply("vflip", "rot90"), apply("transpose"))  # vflip after rot90
    assert torch.equal(apply("rot90", "vflip"), apply("antitranspose"))
    # a reflection conjugates a rotation into its inverse: f r f = r^-1
    assert torch.equal(apply("vflip", "rot90", "vflip"), apply("rot270"))


def test_derived_table_matches_the_operations_and_is_a_group():
    x = images(2)
    for a in VIEWS:
        assert torch.equal(view(a, view(inverse(a), x)), x)
        for b in VIEWS:
            assert torch.equal(view(compose(a, b), x), view(a, view(b, x)))
    check_group(VIEWS)
    check_group(("identity", "vflip"))
    check_group(("identity", "rot90", "rot180", "rot270"))
    with pytest.raises(GenlabError, match="not a group"):
        check_group(("identity", "rot90"))


@pytest.mark.parametrize("name", VIEWS)
def test_same_view_on_data_and_features(name):
    x = images(3)  # (N, H, W, C)
    as_nchw = x.permute(0, 3, 1, 2).float()
    expected = view(name, x).permute(0, 3, 1, 2).float()
    assert torch.equal(view(name, as_nchw, NCHW), expected)


def test_parse_views():
    assert parse_views(["all"]) == VIEWS
    assert parse_views(["vflip", "identity", "vflip"]) == ("vflip", "identity")
    with pytest.raises(GenlabError, match="--views 'upside': no such view"):
        parse_views(["upside"])
