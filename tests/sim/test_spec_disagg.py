"""Speculative decoding, prefill/decode disaggregation, pipeline parallelism, prefix caching."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel.model import CostModel
from sim import Deployment, PoolConfig, SpecConfig, generate_requests, parse_workload, simulate
from sim.spec import expected_tokens_per_step


def _spec_pool(toy_gpu, spec, **kw):
    base = {"max_num_seqs": 16, "max_num_batched_tokens": 512, "block_size": 16}
    return PoolConfig(role="colocated", gpu=toy_gpu, spec=spec, **(base | kw))


@pytest.mark.parametrize("a,k", [(0.6, 4), (0.85, 3)])
def test_spec_mean_tokens_per_step_matches_closed_form(tiny_model, toy_gpu, toy_cm, a, k):
    dep = Deployment(model=tiny_model, pools=(_spec_pool(toy_gpu, SpecConfig("ngram", None, k, a)),))
    m = simulate(dep, parse_workload("fixed:64,3000", concurrency=16), num_requests=16, seed=1,
                 cost_models={"colocated": toy_cm}).metrics
    # ~20k sequence-steps: standard error ~0.5%; each request's last step is truncated (<0.1%)
    assert m.mean_accepted_tokens_per_step == pytest.approx(expected_tokens_per_step(a, k), rel=0.02)
    assert m.output_tokens == 16 * 3000


def test_spec_verify_step_costs_k_plus_one_queries(tiny_model, toy_gpu, toy_cm, trace_file):
    # a = 0: every step yields exactly one token, so the timeline is plain decoding with
    # decode_query_tokens = k + 1 (n-gram drafts are free)
    k = 3
    dep = Deployment(model=tiny_model, pools=(_spec_pool(toy_gpu, SpecConfig("ngram", None, k, 0.0)),))
    f = simulate(dep, parse_workload(f"trace:{trace_file([(40, 3, 0.0)])}"), num_requests=1, seed=0,
                 keep_requests=True, cost_models={"colocated": toy_cm}).requests
    cm = toy_cm
    t = cm.step_time_s([(40, 0)])
    t += cm.step_time_s((), 1, 40, k + 1) + cm.step_time_s((), 1, 41, k + 1)
    assert f.finish_s[0] == pytest.approx(t, rel=1e-12)


def test_draft_model_speeds_up_small_batches(tiny_model, toy_gpu, toy_cm):
    big = CostModel("llama-3.1-8b", "h100")
    wl = parse_workload("fixed:256,400", concurrency=1)
    tpot = {}
    for name, spec in {"none": SpecConfig(), "draft": SpecConfig("draft", "llama-3.2-1b", 4, 0.8),
                       "self": SpecConfig("self", None, 4, 0.8),
                       "adaptive": SpecConfig("draft", "llama-3.2-1b", 0, 0.8, adaptive=True)}.items():
        dep = Deployment(model="llama-3.1-8b", pools=(PoolConfig(role="colocated", gpu="h100", spec=spec),))
        tpot[name] = simulate(dep, wl, num_requests=4, seed=0, cost_models={"colocated": big}).metrics.tpot_mean_s
    # a = 0.8, k = 4: 3.36 tokens per verify step against 4 draft forwards of a 1B model, each
    # paying the per-iteration host overhead: ~1.2-1.4x at batch 1
    assert tpot["draft"] < tpot["none"] / 1.15
    assert tpot["self"] < tpot["none"]
    assert tpot["adaptive"] <= tpot["draft"] * 1.05


def test_disaggregated_single_request_timeline(tiny_model, toy_gpu, toy_cm, trace_file):
    pools = (PoolConfig(role="prefill", gpu=toy_gpu, max_num_batched_tokens=256, block_size=16),
             PoolConfig(role="decode", gpu=toy_gpu, max_num_batched_tokens=256, block_size=16))
    bw, lat = 1e9, 1e-4
    dep = Deployment(model=tiny_model, pools=pools, mode="disaggregated", kv_link_bw_bytes_s=bw,
                     kv_link_latency_s=lat)
    f = simulate(dep, parse_workload(f"trace:{trace_file([(100, 3, 0.0)])}"), num_requests=1, seed=0,
                 keep_requests=True, cost_models={"prefill": toy_cm, "decode": toy_cm}).requests
    cm = toy_cm
    t1 = cm.step_time_s([(100, 0)])
    xfer = lat + 100 * tiny_model.kv_elems_per_token() * 2 / bw
    t3 = t1 + xfer + cm.step_time_s((), 1, 100) + cm.step_time_s((), 1, 101)
    assert f.first_token_s[0] == pytest.approx(t1, rel=1e-12)
    assert f.kv_ready_s[0] == pytest.approx(t1 + xfer, rel=1e-12)
    assert f.finish_s[0] == pytest.approx(t3, rel=1e-12)


def test_disaggregated_load_completes_and_waits_for_decode_memory(tiny_model, toy_gpu, toy_cm):
    pools = (PoolConfig(role="prefill", gpu=toy_gpu, replicas=2, max_num_seqs=8, block_size=16),
             PoolConfig(role="decode", gpu=toy_gpu, replicas=1, max_num_seqs=32, block_size=16))
    dep = Deployment(model=tiny_model, pools=pools, mode="disaggregated")
    res = simulate(dep, parse_workload("uniform:50-300,20-200", rate=400.0), num_requests=600, seed=2,
                   keep_requests=True, kv_blocks=120, cost_models={"prefill": toy_cm, "decode": toy_cm})
    f, m = res.requests, res.metrics
    assert m.num_completed == 600
    assert m.output_tokens == int(f.output_len.sum())
    assert (f.kv_ready_s[f.output_len > 1] > f.first_token_s[f.output_len > 1]).all()
    assert m.kv_transfer_mean_s > 0 and len(m.utilisation) == 3


def test_pipeline_parallel_overlaps_micro_batches():
    # pp=2: two micro-batches in flight; throughput beats a single replica of the same GPUs' pp=1
    wl = parse_workload("fixed:512,64", concurrency=64)
    out = {}
    for pp in (1, 2):
        dep = Deployment(model="llama-3.1-8b", pools=(PoolConfig(role="colocated", gpu="h100", pp=pp,
                                                                 max_num_seqs=64),))
        out[pp] = simulate(dep, wl, num_requests=256, seed=0, keep_requests=True)
        f = out[pp].requests
        assert np.isfinite(f.finish_s).all()
    # the pipelined replica keeps more sequences and a faster per-micro-batch cadence
    assert out[2].metrics.throughput_tok_s > out[1].metrics.throughput_tok_s


def test_prefix_cache_with_unbounded_host_tier_reaches_ideal_hit_rate(shared):
    # with a host tier that never evicts, every prefix seen before is a hit: the hit rate is the
    # trace's own longest-seen-prefix share (at most prompt - 1 tokens per request)
    wl = parse_workload("mooncake-conv", rate=0.2)
    n = 300
    # the same arrays simulate(seed=0) draws (replay: no randomness in them)
    arrays = generate_requests(wl, n, np.random.default_rng(0))
    seen, hit = set(), 0
    for i in range(n):
        keys, g = arrays.hashes(i).tolist(), 0
        while g < len(keys) and keys[g] in seen:
            g += 1
        hit += min(g * 512, int(arrays.input_len[i]) - 1)
        seen.update(keys)
    ideal = hit / arrays.input_len.sum()
    dep = Deployment(model="llama-3.1-8b", pools=(PoolConfig(role="colocated", gpu="h100"),))
    gpu_only = simulate(dep, wl, num_requests=n, seed=0).metrics.prefix_cache_hit_rate
    tiered = simulate(dep, wl, num_requests=n, seed=0, host_cache_gib=4000).metrics
    assert tiered.prefix_cache_hit_rate == pytest.approx(ideal, rel=0.02)
    assert 0 < gpu_only < tiered.prefix_cache_hit_rate  # the GPU cache alone evicts (LRU)


def test_prefix_affinity_routing_raises_hit_rate(shared):
    hits = {}
    for router in ("least_tokens", "prefix_affinity"):
        dep = Deployment(model="llama-3.1-8b", router=router,
                         pools=(PoolConfig(role="colocated", gpu="h100", replicas=4),))
        m = simulate(dep, parse_workload("mooncake-synthetic", rate=2.0), num_requests=400, seed=0).metrics
        assert m.num_completed + m.num_rejected == 400
        hits[router] = m.prefix_cache_hit_rate
    assert hits["prefix_affinity"] > 1.5 * hits["least_tokens"]
