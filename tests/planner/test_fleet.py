"""GPU inventory strings: counts, prices, defaults and every bad input named."""

from __future__ import annotations

import pytest

from costmodel.errors import ServePlanError
from planner.fleet import parse_fleet


def test_counts_prices_and_aliases():
    f = parse_fleet("h100:8@3.10,a100:16")
    assert [(g.name, g.count) for g in f.gpus] == [("h100-sxm", 8), ("a100-80g", 16)]
    assert f.price("h100-sxm") == 3.10 and f.get("h100-sxm").price_overridden
    assert f.price("a100-80g") == 2.20 and not f.get("a100-80g").price_overridden
    assert f.total_gpus == 24


def test_count_defaults_to_one_node_and_repeats_add_up():
    assert parse_fleet("h100").gpus[0].count == 8
    assert parse_fleet("h100:4,h100:4").gpus[0].count == 8


@pytest.mark.parametrize("text, words", [
    ("h100:0", "at least 1"),
    ("h100:-2", "at least 1"),
    ("h100:two", "expected an integer"),
    ("tpu:8", "unknown GPU"),
    ("h100:8@-1", "positive"),
    ("h100:8@free", "price"),
    ("", "GPU inventory"),
    ("h100:8,,a100:8", "empty item"),
    ("h100:4@3,h100:4@4", "different prices"),
])
def test_bad_inventories(text, words):
    with pytest.raises(ServePlanError, match=words):
        parse_fleet(text)
