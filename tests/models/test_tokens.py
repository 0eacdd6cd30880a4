from __future__ import annotations

import pytest
import torch

from mesaopt.errors import ShapeError
from mesaopt.models.tokens import Y_SLOT, concat_tokens, deinterleave, interleave, split_concat


def _data(gen, b=3, n=4, q=2, d=5):
    return (torch.randn(b, n, d, generator=gen), torch.randn(b, n, generator=gen), torch.randn(b, q, d, generator=gen))


def test_concat_layout(gen):
    cx, cy, qx = _data(gen)
    tok = concat_tokens(cx, cy, qx)
    assert tok.shape == (3, 6, 6)
    for b in range(3):
        for i in range(4):
            assert torch.equal(tok[b, i, :5], cx[b, i]) and tok[b, i, Y_SLOT] == cy[b, i]
        for j in range(2):
            assert torch.equal(tok[b, 4 + j, :5], qx[b, j]) and tok[b, 4 + j, Y_SLOT] == 0


def test_split_concat_roundtrip(gen):
    cx, cy, qx = _data(gen)
    a, b, c, slot = split_concat(concat_tokens(cx, cy, qx), 4)
    assert torch.equal(a, cx) and torch.equal(b, cy) and torch.equal(c, qx)
    assert torch.count_nonzero(slot) == 0


def test_interleave_layout_and_roundtrip(gen):
    xs, ys = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, generator=gen)
    tok = interleave(xs, ys)
    assert tok.shape == (2, 6, 5)
    for t in range(3):
        assert torch.equal(tok[:, 2 * t, :4], xs[:, t]) and torch.count_nonzero(tok[:, 2 * t, 4]) == 0
        assert torch.count_nonzero(tok[:, 2 * t + 1, :4]) == 0 and torch.equal(tok[:, 2 * t + 1, 4], ys[:, t])
    xs2, ys2 = deinterleave(tok)
    assert torch.equal(xs2, xs) and torch.equal(ys2, ys)


def test_shape_errors(gen):
    cx, cy, qx = _data(gen)
    with pytest.raises(ShapeError):
        concat_tokens(cx, cy[:, :2], qx)
    with pytest.raises(ShapeError):
        concat_tokens(cx, cy, qx[..., :2])
    with pytest.raises(ShapeError):
        interleave(cx, cy[:, :3])
    with pytest.raises(ShapeError):
        deinterleave(torch.zeros(2, 3, 4))
    with pytest.raises(ShapeError):
        split_concat(torch.zeros(2, 3, 4), 5)


def test_fold_queries_one_sequence_per_query():
    from mesaopt.models.tokens import fold_queries

    g = torch.Generator().manual_seed(0)
    cx, cy, qx = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, generator=g), torch.randn(2, 5, 4, generator=g)
    xs, ys = fold_queries(cx, cy, qx)
    assert xs.shape == (10, 4, 4) and ys.shape == (10, 4)
    for b in range(2):
        for q in range(5):
            r = b * 5 + q
            assert torch.equal(xs[r, :3], cx[b]) and torch.equal(xs[r, 3], qx[b, q])
            assert torch.equal(ys[r, :3], cy[b]) and ys[r, 3] == 0
