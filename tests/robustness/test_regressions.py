"""Regression tests for bad inputs found by the robustness work: each was a traceback, a hang or
an out-of-memory kill before its fix, and is now a ServePlanError naming the value and the range."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel.errors import ServePlanError


def test_num_requests_is_capped_before_allocating():
    # 10^12 requests used to reach numpy's allocator and die with MemoryError
    from sim.workload import MAX_REQUESTS, generate_requests, parse_workload

    wl = parse_workload("fixed:16,4", rate=1.0)
    with pytest.raises(ServePlanError, match=r"num_requests=1000000000000; expected an integer in \[1, 2_000_000\]"):
        generate_requests(wl, 10**12, np.random.default_rng(0))
    assert len(generate_requests(wl, 3, np.random.default_rng(0)).input_len) == 3
    assert MAX_REQUESTS == 2_000_000


def test_replicas_are_capped():
    # 10^8 replicas used to build 10^8 simpy processes and be killed for memory
    from sim.deployment import MAX_REPLICAS, PoolConfig

    with pytest.raises(ServePlanError, match=r"replicas=100000000; expected an integer in \[1, 4096\]"):
        PoolConfig(role="colocated", gpu="l40s", replicas=10**8)
    assert PoolConfig(role="colocated", gpu="l40s", replicas=MAX_REPLICAS).num_gpus == MAX_REPLICAS


def _dep(**kw):
    from sim.deployment import Deployment, PoolConfig

    pools = (PoolConfig(role="prefill", gpu="l40s"), PoolConfig(role="decode", gpu="l40s"))
    return Deployment(model="llama-3.2-1b", pools=pools, mode="disaggregated", **kw)


@pytest.mark.parametrize("bw", [-1e9, 0.0, float("nan"), float("inf")])
def test_kv_link_bandwidth_must_be_positive(bw):
    # a negative link bandwidth used to reach simpy as "ValueError: Negative delay"
    with pytest.raises(ServePlanError, match="kv_link_bw_bytes_s=.*expected a number of bytes/s > 0"):
        _dep(kv_link_bw_bytes_s=bw)
    with pytest.raises(ServePlanError, match="kv_link_latency_s=-1.0; expected a finite number"):
        _dep(kv_link_latency_s=-1.0)
    assert _dep(kv_link_bw_bytes_s=50e9).kv_link_bw_bytes_s == 50e9


def test_unknown_draft_model_is_named_even_when_k_is_zero():
    # spec method draft with k = 0 never built the draft, so a misspelt name passed silently
    from sim.deployment import SpecConfig

    with pytest.raises(ServePlanError, match="unknown model 'nope'; known presets: .*llama-3.2-1b"):
        SpecConfig(method="draft", draft_model="nope", acceptance=0.5)
    assert SpecConfig(method="draft", draft_model="llama-3.2-1b", acceptance=0.5).draft_model


@pytest.mark.parametrize("gib", [-1.0, float("nan"), float("inf")])
def test_host_cache_must_be_non_negative(gib):
    # a negative host tier used to be taken as "off" without a word
    from sim import parse_workload, simulate

    with pytest.raises(ServePlanError, match="host_cache_gib=.*expected a finite number of GiB >= 0"):
        simulate(_dep(), parse_workload("fixed:16,4", rate=1.0), num_requests=5, seed=0,
                 host_cache_gib=gib)


@pytest.mark.parametrize("prefill,decode,msg", [
    (["1000000000x1000000000"], None, r"--prefill '1000000000x1000000000': 1000000000 sequences; expected 1..65536"),
    (["100x0"], None, r"--prefill '100x0': 0 sequences"),
    (None, ["70000x10"], r"--decode '70000x10': 70000 sequences; expected 1..65536"),
    (["100000000"], None, r"prefill chunk \(100000000, 0\): expected chunk_tokens in \[1, 16777216\]"),
    (None, ["4x100000000"], r"decode context length 100000000: expected all in \[0, 16777216\]"),
])
def test_batch_size_is_bounded(prefill, decode, msg):
    # `cost step --prefill 1000000000x1000000000` used to build a 10^9-element list and run for
    # 9 minutes before answering
    from costmodel.batch import Batch

    with pytest.raises(ServePlanError, match=msg):
        Batch.parse(prefill, decode)
    assert Batch.parse(["128x4"], ["2x100"]).num_seqs == 6


def test_trace_length_error_prints_plain_numbers(tmp_path):
    # the message used to read "input length np.float64(100.0)"
    from sim.traces import load_trace

    p = tmp_path / "t.csv"
    p.write_text("input_len,output_len,arrival_s\n100,10,0\n100,0,1\n")
    with pytest.raises(ServePlanError, match=r"t.csv line 3: input length 100, output length 0; expected whole numbers >= 1"):
        load_trace(str(p))


@pytest.mark.parametrize("workers", [0, -1, 10**6, 2.5])
def test_worker_count_is_bounded(workers):
    # plan(workers=10**6) used to start forking a million simulation processes (a hang), and
    # workers=0 silently ran in-process
    from planner import plan
    from sim.sweep import make_executor

    with pytest.raises(ServePlanError, match=r"workers .*; expected an integer in \[1, 256\]"):
        plan(model="llama-3.2-1b", gpus="l40s:1", workload="fixed:256,64", rate=2.0,
             ttft_slo_s=1.0, tpot_slo_s=0.05, num_requests=100, workers=workers)
    with pytest.raises(ServePlanError, match="workers"):
        make_executor("local", workers)


def test_plan_space_must_be_a_search_space():
    # plan(space="x") used to fail deep inside with "AttributeError: 'str' object has no attribute 'modes'"
    from planner import plan

    with pytest.raises(ServePlanError, match=r"space 'x'; expected a planner.space.SearchSpace"):
        plan(model="llama-3.2-1b", gpus="l40s:1", workload="fixed:256,64", rate=2.0,
             ttft_slo_s=1.0, tpot_slo_s=0.05, num_requests=100, space="x")


def test_nul_byte_in_a_path_is_named(tmp_path):
    # a NUL byte in a trace or model path used to escape as "ValueError: embedded null byte"
    # (a 500 from the service)
    from costmodel.specs import load_model
    from planner.service.paths import DataDir, FieldError
    from sim.traces import load_trace

    with pytest.raises(ServePlanError, match="not found"):
        load_trace("mini.csv\x00.txt")
    with pytest.raises(ServePlanError, match="NUL byte"):
        load_model("llama\x00.json")
    d = DataDir(tmp_path)
    with pytest.raises(FieldError, match="NUL byte"):
        d.workload("workload", "trace:mini.csv\x00.txt", [])
    with pytest.raises(FieldError, match="NUL byte"):
        d.model("model", "x\x00/config.json", [])


@pytest.mark.parametrize("field,value", [("intermediate_size", 0), ("num_layers", -2),
                                         ("hidden_size", 1.5), ("vocab_size", 10**12),
                                         ("experts_per_token", 3)])
def test_model_spec_sizes_are_checked(field, value):
    # a ModelSpec built in Python with intermediate_size=0 used to reach the GEMM roofline and
    # die with ZeroDivisionError (hypothesis found it)
    from costmodel.specs import ModelSpec

    fields = dict(name="t", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
                  intermediate_size=128, vocab_size=1000, num_experts=0, experts_per_token=0)
    fields[field] = value
    with pytest.raises(ServePlanError, match=f"model 't': .*{field}={value!r}"):
        ModelSpec(**fields)


def test_top_k_as_one_integer_is_accepted_and_bad_ones_named():
    # the service passes top_k as one integer (its schema says so) and plan() crashed with
    # "AttributeError: 'int' object has no attribute 'items'" - a 500 (schemathesis found it)
    from planner.search import _top_k

    assert _top_k(None) == {"colocated": 2, "disaggregated": 2}
    assert _top_k(1) == {"colocated": 1, "disaggregated": 1}
    assert _top_k({"colocated": 3}) == {"colocated": 3}
    for bad in (0, 65, 2.5, {"x": 1}, "3"):
        with pytest.raises(ServePlanError, match=r"top_k .*; expected an integer in \[1, 64\]"):
            _top_k(bad)


def test_plan_with_top_k_integer_runs():
    from planner import plan

    p = plan(model="llama-3.2-1b", gpus="l40s:1", workload="fixed:256,64", rate=2.0,
             ttft_slo_s=1.0, tpot_slo_s=0.05, num_requests=100, workers=1, top_k=1)
    assert p.search["verified"] >= 1


def test_pipeline_preemption_no_longer_livelocks():
    # pp=2 on 16 KV blocks with a 214-token per-request budget: two micro-batches in flight kept
    # preempting each other's requests and the simulation ran forever (hypothesis found it; it
    # was then only stopped by the per-request preemption guard). A request is no longer
    # preempted to make room for a younger one in flight (Replica._stall_for), so it completes.
    from costmodel.specs import ModelSpec
    from sim import parse_workload, simulate
    from sim.deployment import Deployment, PoolConfig

    m = ModelSpec(name="prop", num_layers=3, hidden_size=32, num_heads=2, num_kv_heads=1,
                  head_dim=16, intermediate_size=379, vocab_size=573, num_experts=8,
                  experts_per_token=2, max_position=512)
    dep = Deployment(model=m, pools=(PoolConfig(role="colocated", gpu="l4", pp=2, max_num_seqs=64,
                                                chunk_size=64, kv_budget_tokens=214),))
    for policy in ("prefill_first", "decode_first"):
        r = simulate(dep, parse_workload("fixed:277,193", rate=74785.5), num_requests=3, seed=0,
                     kv_blocks=16, policy=policy)
        assert r.metrics.num_completed == 3
        assert r.metrics.preemptions <= 10  # a few, not hundreds
    r = simulate(dep, parse_workload("fixed:277,193", rate=74785.5), num_requests=3, seed=0,
                 kv_blocks=64, policy="prefill_first")
    assert r.metrics.num_completed == 3
