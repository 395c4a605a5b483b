"""Prefill attention with a sliding window: the KV tiles a packed query tile spans, counted as
FlashAttention-3's n_block_min / n_block_max do (hand-computed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from costmodel import attention as at


def _fa3_tiles(chunk, prefix, window, g, bm, bn):
    """Reference: per packed query tile, its first and last query token (rows / g), the keys
    from `window` before the first to the last, rounded out to whole `bn`-key tiles."""
    total = 0
    for m in range(math.ceil(chunk * g / bm)):
        first = m * bm // g
        last = (min((m + 1) * bm, chunk * g) - 1) // g + 1
        hi = min(math.ceil((chunk + prefix) / bn), math.ceil((last + prefix) / bn))
        total += hi - max(0, (first + prefix - window) // bn)
    return total


def test_window_tiles_at_four_heads_per_kv_head():
    """fp8 head dim 128 tile (128 rows, 160 keys), 4 query heads per KV head: each query tile
    holds 32 tokens. 160 tokens after 1,600 cached: tiles end at keys 1632, 1664, 1696, 1728,
    1760 and start 128 keys before their first token (1472 ... 1600): KV tiles 9-10 (x4) and
    10 alone for the last, whose end falls on a tile boundary: 9 tiles, not 5 x 2 = 10."""
    total, _ = at._kv_tiles(160.0, 1600.0, 128.0, 4.0, 128.0, 160.0)
    assert float(total) == pytest.approx(9.0)
    assert _fa3_tiles(160, 1600, 128, 4, 128, 160) == 9


def test_window_tiles_when_tiles_align():
    """bf16 tile 128 x 128, no packing, window 128, prefix a multiple of 128: every query tile
    spans exactly its own KV tile and the one before it, 2 each (never 3)."""
    total, _ = at._kv_tiles(1024.0, 1280.0, 128.0, 1.0, 128.0, 128.0)
    assert float(total) == pytest.approx(16.0)


@pytest.mark.parametrize("g", [1, 2, 3, 4, 5, 6, 8, 12, 16])
def test_window_tiles_match_fa3_over_long_chunks(g):
    """Over a long chunk the mean tiles per query tile agree with FA3's block bounds within 1%
    (the closed form uses the mean rounding of the tiles' ends)."""
    ref = _fa3_tiles(8192, 0, 128, g, 128, 160)
    total, _ = at._kv_tiles(np.array([8192.0]), 0.0, np.array([128.0]), float(g), 128.0, 160.0)
    assert float(total[0]) == pytest.approx(ref, rel=0.01)
