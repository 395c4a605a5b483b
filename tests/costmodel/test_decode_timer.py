"""`decode_step_timer` returns what `CostModel.step_time_s` returns for a decode-only
iteration, to the bit, and declines where only the general path is exact."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from costmodel.decode_timer import cached_step_timer, decode_step_timer
from costmodel.model import CostModel

CASES = [("llama-3.1-8b", "h200", 1, "fp8", "auto"), ("llama-3.1-8b", "h100", 2, "bf16", "fp8"),
         ("qwen3-32b", "h100", 8, "bf16", "auto"), ("llama-3.1-8b", "a100", 1, "bf16", "auto"),
         ("qwen3-30b-a3b", "h100", 2, "bf16", "auto")]


@pytest.mark.parametrize("model,gpu,tp,precision,kv", CASES)
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("overlap", [False, True])
def test_same_float_as_step_time(model, gpu, tp, precision, kv, scaled, overlap):
    cm = CostModel(model, gpu, tp=tp, precision=precision, kv_dtype=kv, host_overlap=overlap)
    if scaled:
        cm.eff = replace(cm.eff, prefill_time_scale=1.07, decode_time_scale=1.13)
    rng = random.Random(7)
    checked = 0
    # both sides of the CUDA-graph batch limit (512) and of the SMs' fill
    for n in (1, 3, 16, 100, 256, 511, 512, 513, 900):
        f = decode_step_timer(cm, n)
        assert f is not None
        for _ in range(12):
            ctx = n * rng.randint(1, 9000)
            assert f(ctx) == cm.step_time_s((), n, ctx, 1), (n, ctx)
            checked += 1
    assert checked == 9 * 12


def test_declines_where_the_general_path_does_more():
    assert decode_step_timer(CostModel("deepseek-v3", "h200", tp=8, precision="fp8"), 8) is None  # MLA
    assert decode_step_timer(CostModel("gpt-oss-120b", "h100"), 8) is None  # sliding-window layers
    assert decode_step_timer(CostModel("llama-3.1-8b", "h100"), 0) is None


def test_the_cache_follows_the_parameters():
    cm = CostModel("llama-3.1-8b", "h100")
    a = cached_step_timer(cm, 32)
    assert cached_step_timer(cm, 32) is a
    cm.eff = replace(cm.eff, decode_time_scale=1.5, prefill_time_scale=1.2)
    b = cached_step_timer(cm, 32)
    assert b is not a and b(32 * 700) == cm.step_time_s((), 32, 32 * 700, 1)
