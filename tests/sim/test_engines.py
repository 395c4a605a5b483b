"""SGLang beside vLLM: its defaults, its scheduler policies, its overlapped host time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from costmodel.engine_defaults import engine_defaults
from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.memory import memory_plan
from costmodel.model import CostModel
from sim import Deployment, parse_workload, simulate


def test_sglang_defaults_follow_its_memory_heuristics():
    h100 = load_gpu("h100")
    d = engine_defaults(h100, "sglang", tp=2)
    # 80 GiB = 81920 MiB: chunk 8192, graphs to 256 sequences; reserved 512 + 1.5 x 8192 +
    # 2 x 256 + 2/8 x 1024 = 13568 MiB (over the 10 GiB floor)
    assert (d.chunk_size, d.max_num_batched_tokens, d.max_cudagraph_batch, d.policy) == (
        8192, 16384, 256, "prefill_only")
    assert d.gpu_memory_utilization == pytest.approx(round((81920 - 13568) / 81920, 3))
    assert d.host_overlap and d.static_memory_fraction
    assert engine_defaults(h100, "sglang", tp=8).max_cudagraph_batch == 512
    assert engine_defaults(load_gpu("b200"), "sglang").chunk_size == 16384
    assert engine_defaults(load_gpu("l4"), "sglang").chunk_size == 2048
    v = engine_defaults(h100)
    assert (v.policy, v.host_overlap, v.static_memory_fraction) == ("decode_first", False, False)
    with pytest.raises(ServePlanError, match="engine 'trt'"):
        engine_defaults(h100, "trt")


def test_static_fraction_holds_weights_and_kv_only():
    cm = CostModel("llama-3.1-8b", "h100")
    vllm = memory_plan(cm, 0.8, 8192, 256)
    sgl = memory_plan(cm, 0.8, 8192, 256, static_fraction=True)
    assert sgl.kv_bytes == pytest.approx(0.8 * cm.gpu.hbm_bytes - sgl.weights_bytes)
    assert sgl.kv_bytes - vllm.kv_bytes == pytest.approx(vllm.activation_bytes + vllm.reserved_bytes)


def test_overlapped_host_time_hides_under_the_gpu(tiny_model, toy_gpu):
    sync = CostModel(tiny_model, toy_gpu)
    over = CostModel(tiny_model, toy_gpu, host_overlap=True)
    gpu_s = sync.step_time_s([(64, 0)], 4, 400) - sync._host(5)
    assert over.step_time_s([(64, 0)], 4, 400) == pytest.approx(max(gpu_s, sync._host(5)), rel=1e-12)
    from costmodel.batch import Batch
    b = over.step(Batch(prefill=((64, 0),), decode=(100,) * 4))
    assert b.step_time_s == pytest.approx(over.step_time_s([(64, 0)], 4, 400), rel=1e-12)


def test_deployment_engine_round_trips_and_is_checked(tiny_model, toy_gpu):
    dep = Deployment.colocated("llama-3.1-8b", "h100", engine="sglang")
    assert Deployment.from_dict(dep.to_dict()).engine == "sglang"
    assert Deployment.from_dict({k: v for k, v in dep.to_dict().items() if k != "engine"}).engine == "vllm"
    pool = dep.resolved().pools[0]
    assert (pool.max_num_batched_tokens, pool.chunk_size) == (16384, 8192)
    with pytest.raises(ServePlanError, match="engine 'tgi'"):
        Deployment.colocated("llama-3.1-8b", "h100", engine="tgi")


def _run(toy_deployment, toy_cm, trace_file, policy, rows, engine="vllm", **kw):
    dep = replace(toy_deployment(**kw), engine=engine)
    wl = parse_workload(f"trace:{trace_file(rows)}")
    return simulate(dep, wl, num_requests=len(rows), seed=0, keep_requests=True, policy=policy,
                    cost_models={"colocated": toy_cm}, warmup_fraction=0,
                    cooldown_fraction=0).requests


def test_prefill_only_pauses_decodes_for_a_prompt(toy_deployment, toy_cm, trace_file):
    # r0 (30 in, 3 out) at 0; r1 (30 in, 1 out) arrives during r0's prefill. Under SGLang's
    # default r1's prefill runs alone next, and r0 decodes only after it
    cm = toy_cm
    t1 = cm.step_time_s([(30, 0)])
    f = _run(toy_deployment, cm, trace_file, "prefill_only", [(30, 3, 0.0), (30, 1, t1 / 2)])
    t2 = t1 + cm.step_time_s([(30, 0)])  # r1 alone: its first (and last) token
    t3 = t2 + cm.step_time_s((), 1, 30)
    t4 = t3 + cm.step_time_s((), 1, 31)
    assert f.first_token_s.tolist() == pytest.approx([t1, t2], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t4, t2], rel=1e-12)


def test_prefill_mixed_adds_every_decode_past_the_budget(toy_deployment, toy_cm, trace_file):
    # soft budget 30 (SGLang's --max-prefill-tokens), hard chunk 70: r0's decode takes one token
    # of each (mixed_with_decode_tokens), r1's 30-token prompt still goes whole (the last prompt
    # overruns the soft budget), and the decode rides along anyway. r1 arrives during r0's
    # prefill, after SGLang's overlap scheduler decided the next batch: r0 decodes alone first
    cm = toy_cm
    t1 = cm.step_time_s([(30, 0)])
    f = _run(toy_deployment, cm, trace_file, "prefill_mixed", [(30, 3, 0.0), (30, 1, t1 / 2)],
             max_num_batched_tokens=30, chunk_size=70, engine="sglang")
    t2 = t1 + cm.step_time_s((), 1, 30)
    t3 = t2 + cm.step_time_s([(30, 0)], 1, 31)
    assert f.first_token_s.tolist() == pytest.approx([t1, t3], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t3, t3], rel=1e-12)


def test_prefill_mixed_decodes_count_against_the_hard_chunk(toy_deployment, toy_cm, trace_file):
    # hard chunk 30 (--chunked-prefill-size): with r0's decode riding along, r1's 30-token
    # prompt gets 29 tokens, its last token the step after (r0 decodes alone first, as above)
    cm = toy_cm
    t1 = cm.step_time_s([(30, 0)])
    f = _run(toy_deployment, cm, trace_file, "prefill_mixed", [(30, 3, 0.0), (30, 1, t1 / 2)],
             max_num_batched_tokens=50, chunk_size=30, engine="sglang")
    t2 = t1 + cm.step_time_s((), 1, 30)
    t3 = t2 + cm.step_time_s([(29, 0)], 1, 31)
    t4 = t3 + cm.step_time_s([(1, 29)])
    assert f.first_token_s.tolist() == pytest.approx([t1, t4], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t3, t4], rel=1e-12)


def test_the_overlap_scheduler_admits_a_request_a_batch_later(toy_deployment, toy_cm,
                                                              trace_file):
    # SGLang decides batch k+1 as batch k starts: r1, arriving during r0's prefill (batch 1),
    # first counts at the decision made as batch 2 starts, and prefills in batch 3. vLLM (no
    # async scheduling) decides each batch when the one before ends: r1 prefills in batch 2
    cm = toy_cm
    t1 = cm.step_time_s([(30, 0)])
    rows = [(30, 4, 0.0), (30, 1, t1 / 2)]
    kw = dict(max_num_batched_tokens=64, chunk_size=64)
    f = _run(toy_deployment, cm, trace_file, "prefill_only", rows, engine="sglang", **kw)
    t2 = t1 + cm.step_time_s((), 1, 30)
    assert f.first_token_s.tolist() == pytest.approx([t1, t2 + cm.step_time_s([(30, 0)])],
                                                     rel=1e-12)
    g = _run(toy_deployment, cm, trace_file, "prefill_only", rows, engine="vllm", **kw)
    assert g.first_token_s.tolist() == pytest.approx([t1, t1 + cm.step_time_s([(30, 0)])],
                                                     rel=1e-12)


def test_the_overlap_scheduler_sees_a_request_at_once_when_idle(toy_deployment, toy_cm,
                                                                trace_file):
    # nothing runs when r1 arrives (r0 long done), or after r0's last batch when r1 arrived
    # during it: the engine's loop finds it on its next pass, with no batch to wait for
    cm = toy_cm
    t1 = cm.step_time_s([(30, 0)])
    late = _run(toy_deployment, cm, trace_file, "prefill_only", [(30, 1, 0.0), (30, 1, 1.0)],
                engine="sglang")
    assert late.first_token_s[1] == pytest.approx(1.0 + t1, rel=1e-12)
    during = _run(toy_deployment, cm, trace_file, "prefill_only", [(30, 1, 0.0), (30, 1, t1 / 2)],
                  engine="sglang")
    assert during.first_token_s[1] == pytest.approx(2 * t1, rel=1e-12)


def test_sglang_deployment_runs_its_own_policy_by_default():
    dep = Deployment.colocated("llama-3.1-8b", "h100", engine="sglang")
    wl = parse_workload("fixed:512,16", concurrency=8)
    a = simulate(dep, wl, num_requests=40, seed=0).metrics
    b = simulate(dep, wl, num_requests=40, seed=0, policy="prefill_only").metrics
    c = simulate(replace(dep, engine="vllm"), wl, num_requests=40, seed=0).metrics
    assert a.ttft_mean_s == b.ttft_mean_s and a.tpot_mean_s == b.tpot_mean_s
    assert a.tpot_mean_s != c.tpot_mean_s


def test_sglang_prefill_budget_is_soft_and_the_chunk_hard(toy_deployment, toy_cm, trace_file):
    # soft budget 50 (--max-prefill-tokens), hard chunk 70 (--chunked-prefill-size): three
    # 30-token prompts arrive together; the first two (60 tokens) overrun the soft budget, so
    # the third waits; with a hard budget of 50 (vLLM) the second would be cut at 20 tokens
    cm = toy_cm
    rows = [(30, 1, 0.0), (30, 1, 0.0), (30, 1, 0.0)]
    f = _run(toy_deployment, cm, trace_file, "prefill_only", rows, max_num_batched_tokens=50,
             chunk_size=70, engine="sglang")
    t1 = cm.step_time_s([(30, 0), (30, 0)])
    t2 = t1 + cm.step_time_s([(30, 0)])
    assert f.first_token_s.tolist() == pytest.approx([t1, t1, t2], rel=1e-12)
    # the hard cap cuts: chunk 40 takes one prompt and 10 tokens of the next
    g = _run(toy_deployment, cm, trace_file, "prefill_only", rows, max_num_batched_tokens=50,
             chunk_size=40, engine="sglang")
    s1 = cm.step_time_s([(30, 0), (10, 0)])
    assert g.first_token_s[0] == pytest.approx(s1, rel=1e-12)
    assert g.first_token_s[1] > s1
