"""Step rows whose batch cannot fit the KV cache are not scored (costmodel.measured.kv_fit_mask)."""

from __future__ import annotations

import pandas as pd

from costmodel.engine_defaults import engine_defaults
from costmodel.hardware import load_gpu
from costmodel.importers import concat
from costmodel.measured import kv_fit_mask, kv_tokens_needed, skipped_mask
from costmodel.memory import memory_plan
from costmodel.model import CostModel


def _capacity(model: str, gpu: str, tp: int) -> int:
    g = load_gpu(gpu)
    d = engine_defaults(g)
    cm = CostModel(model, g, tp=tp)
    return memory_plan(cm, d.gpu_memory_utilization, d.max_num_batched_tokens, d.max_num_seqs,
                       d.block_size).kv_capacity_tokens


def _step(op, batch, prefill, gen, ctx=0, model="llama-2-70b", tp=2):
    return {"op": op, "gpu": "a100-80g", "model": model, "tp": tp, "batch_size": batch,
            "prefill_len": prefill, "gen_len": gen, "context_len": ctx, "measured_s": 1.0}


def test_tokens_needed_by_hand():
    rows = concat([pd.DataFrame([
        _step("prefill_step", 64, 512, 128),          # 64 x 640
        _step("decode_step", 8, 0, 0, ctx=1000),      # no gen_len: 8 x (1000 + 1)
        _step("prefill_step", 4, 100, 0, ctx=50),     # no gen_len: 4 x (100 + 50)
        {"op": "gemm", "gpu": "a100-80g", "m": 8, "n": 8, "k": 8, "measured_s": 1e-6},
    ])])
    assert kv_tokens_needed(rows).tolist() == [40960, 8008, 600, 0]


def test_boundary_is_the_memory_plans_capacity():
    cap = _capacity("llama-2-70b", "a100-80g", 2)
    assert 20480 < cap < 40960  # batch 32 x 640 fits, batch 64 x 640 does not
    per_seq = 640
    fit_b = cap // per_seq
    rows = concat([pd.DataFrame([
        _step("prefill_step", fit_b, 512, 128),
        _step("prefill_step", fit_b + 1, 512, 128),
        _step("decode_step", fit_b + 1, 512, 128, ctx=576),
        _step("prefill_step", 10**6, 512, 128, model="no-such-model"),  # no preset: not judged here
    ])])
    assert kv_fit_mask(rows).tolist() == [True, False, False, True]
    # overflow rows and rows of a model without a preset are the ones left unscored
    assert skipped_mask(rows).tolist() == [False, True, True, True]
    # at TP 4 the same 64-sequence batch fits
    assert kv_fit_mask(concat([pd.DataFrame([_step("prefill_step", 64, 512, 128, tp=4)])])).all()
