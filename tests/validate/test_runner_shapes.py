"""Shape derivation (colocated, speculative, disaggregated, KV budget) and scaling a plan down
to a device, against numbers worked out by hand. Nothing here runs a kernel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.memory import memory_plan
from costmodel.model import CostModel
from costmodel.specs import load_model
from sim.deployment import Deployment, PoolConfig, SpecConfig
from sim.workload import parse_workload
from validate.budget import DeviceBudget, estimate_layer_s, fit_to_device, kv_bytes_per_layer
from validate.shapes import derive_shapes, length_stats, per_gpu_dims, select

GiB = 1024**3
WL = parse_workload("fixed:1000,200", concurrency=1)


def shapes_of(dep: Deployment, **kw):
    return derive_shapes(dep, WL, rng=np.random.default_rng(0), **kw)


def test_length_stats_fixed_workload():
    # every request decodes at contexts 1000 .. 1199, equally often: p50 ~ 1100, p90 ~ 1180
    st = length_stats(WL, np.random.default_rng(0))
    assert st.input_p50 == st.input_p90 == 1000
    assert abs(st.context_p50 - 1100) <= 2 and abs(st.context_p90 - 1180) <= 2


def test_colocated_shapes():
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100"),))
    shapes = shapes_of(dep)
    kinds = [s.kind for s in shapes]
    assert set(kinds) == {"prefill", "decode", "mixed"}
    pre = [s for s in shapes if s.kind == "prefill"]
    # one prompt, and prompts packed into the 8192-token budget of an H100 (vLLM default)
    assert pre[0].prefill == ((1000, 0),)
    assert pre[1].prefill == ((1000, 0),) * 8
    # decode ladder 1, 4, 16, 64, 256, 1024 (max_num_seqs), capped by the KV capacity
    pool = dep.resolved().pools[0]
    cm = CostModel("llama-3.1-8b", "h100-sxm")
    cap = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                      pool.max_num_seqs, pool.block_size).kv_capacity_tokens
    dec = [s for s in shapes if s.kind == "decode"]
    ctx = dec[0].decode_context
    assert [s.decode_batch for s in dec if s.decode_context == ctx] == \
        [1, 4, 16, 64, 256, min(1024, cap // (ctx + 1))]
    mixed = next(s for s in shapes if s.kind == "mixed")
    assert mixed.prefill == ((1000, 0),) and mixed.decode_batch == 32
    assert mixed.num_tokens == 1032 and mixed.num_logits == 33
    assert all(s.tp == 1 and s.gpu == "h100-sxm" for s in shapes)


def test_long_prompts_are_chunked():
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", chunk_size=512),))
    wl = parse_workload("fixed:1300,10", concurrency=1)
    pre = [s for s in derive_shapes(dep, wl, rng=np.random.default_rng(0)) if s.kind == "prefill"]
    # the first chunk of 512, and the last chunk: 1300 = 512 + 512 + 276 over a 1024 prefix
    assert pre[0].prefill == ((512, 0),)
    assert pre[-1].prefill == ((276, 1024),)


def test_speculative_and_disaggregated_shapes():
    spec = SpecConfig("draft", "llama-3.2-1b", num_speculative_tokens=3, acceptance=0.7)
    dep = Deployment("llama-3.1-70b", (PoolConfig("prefill", "h100", tp=4),
                                       PoolConfig("decode", "h100", tp=2, spec=spec,
                                                  kv_budget_tokens=512)),
                     mode="disaggregated")
    shapes = shapes_of(dep)
    prefill = [s for s in shapes if s.role == "prefill"]
    decode = [s for s in shapes if s.role == "decode"]
    assert {s.kind for s in prefill} == {"prefill"} and all(s.tp == 4 for s in prefill)
    assert {s.kind for s in decode} == {"decode", "verify"} and all(s.tp == 2 for s in decode)
    verify = [s for s in decode if s.kind == "verify"]
    assert all(s.query_tokens == 4 for s in verify)
    v = verify[0]
    assert v.num_tokens == 4 * v.decode_batch and v.num_logits == 4 * v.decode_batch
    # the KV budget caps what attention reads, and so the cost model's decode contexts
    assert all(s.attended_context == 512 for s in decode)
    assert v.batch().decode == (512,) * v.decode_batch and v.batch().decode_query_tokens == 4


def test_select_keeps_every_kind():
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100",
                                                 spec=SpecConfig("ngram", num_speculative_tokens=2)),))
    full = shapes_of(dep)
    few = select(full, 5)
    assert len(few) == 5 and {s.kind for s in few} == {s.kind for s in full}
    assert [full.index(s) for s in few] == sorted(full.index(s) for s in few)
    with pytest.raises(ServePlanError):
        select(full, 0)


def test_per_gpu_dims_under_tp():
    d = per_gpu_dims(load_model("llama-3.1-70b"), 4)
    assert (d.q_heads, d.kv_heads, d.head_dim, d.inter, d.vocab) == (16, 2, 128, 7168, 32064)
    assert d.qkv_out == (16 + 4) * 128 and d.up_out == 2 * 7168
    d16 = per_gpu_dims(load_model("llama-3.1-8b"), 16)  # more GPUs than KV heads: replicated
    assert d16.kv_heads == 1
    with pytest.raises(ServePlanError, match="mixture of experts"):
        per_gpu_dims(load_model("mixtral-8x7b"), 1)


def test_scaling_down_says_how():
    """A TP=4 70B plan on a CPU-like device: 3 GiB, 200 GFLOP/s, 20 GB/s, 0.05 s per layer."""
    dep = Deployment("llama-3.1-70b", (PoolConfig("colocated", "h100", tp=4),))
    shapes = shapes_of(dep)
    d = per_gpu_dims(load_model("llama-3.1-70b"), 4)
    hw = replace(load_gpu("a10g"), bf16_flops=200e9, hbm_bw_bytes_s=20e9)
    budget = DeviceBudget(memory_bytes=3 * GiB, layer_time_s=0.05, max_layers=2)
    layers, scaled, msgs = fit_to_device(d, shapes, 80, hw, budget)
    assert layers == 2 and "has 80 layers; running 2" in msgs[0]
    assert len(scaled) <= len(shapes)
    big = max(shapes, key=lambda s: s.decode_batch)
    assert any(m.startswith(f"scaled down from {big.name}") for m in msgs)
    for s in scaled:  # every shape now fits, and says how it was changed
        assert estimate_layer_s(d, s, hw) <= 0.05 or s.num_tokens <= 16 or "still over" in s.note
        assert layers * kv_bytes_per_layer(d, s) < 3 * GiB
        if s.note:
            assert s.note.startswith("scaled down from ")
    keys = [(s.prefill, s.decode_batch, s.decode_context, s.query_tokens) for s in scaled]
    assert len(keys) == len(set(keys))  # shapes that shrank to one are measured once
    mixed = next(s for s in scaled if s.kind == "mixed")
    assert mixed.prefill and mixed.decode_batch >= 1  # a mixed iteration stays mixed


def test_no_room_for_one_layer_is_a_clear_error():
    d = per_gpu_dims(load_model("llama-3.1-70b"), 1)
    shapes = shapes_of(Deployment("llama-3.1-70b", (PoolConfig("colocated", "h200"),)))
    with pytest.raises(ServePlanError, match="one layer .* exceed this device's budget"):
        fit_to_device(d, shapes, 80, load_gpu("h200"), DeviceBudget(1 * GiB, None, 4))
