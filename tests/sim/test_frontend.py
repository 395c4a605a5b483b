"""The engine's API server: requests reach the scheduler after `frontend_s` (+ per prompt token),
one at a time, and that time is part of TTFT. Hand-computed timelines on the tiny model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from costmodel.model import CostModel
from sim import parse_workload, simulate


def cm_with(tiny_model, toy_gpu, fe: float, per_tok: float = 0.0) -> CostModel:
    cm = CostModel(tiny_model, toy_gpu)
    cm.eff = replace(cm.eff, frontend_s=fe, frontend_per_token_s=per_tok)
    return cm


def run(dep, wl, cm, n):
    return simulate(dep, wl, num_requests=n, seed=0, keep_requests=True,
                    cost_models={"colocated": cm}, warmup_fraction=0, cooldown_fraction=0).requests


def test_api_server_takes_requests_one_at_a_time(toy_deployment, tiny_model, toy_gpu, trace_file):
    # two 40-token prompts sent together; the API server spends fe on each, in turn, so r0 reaches
    # the idle engine at fe and r1 at 2 fe, in the middle of r0's prefill
    probe = cm_with(tiny_model, toy_gpu, 0.0)
    p0 = probe.step_time_s([(40, 0)])
    fe = p0 / 4
    cm = cm_with(tiny_model, toy_gpu, fe)
    f = run(toy_deployment(), parse_workload(f"trace:{trace_file([(40, 2, 0.0), (40, 1, 0.0)])}"), cm, 2)
    t1 = fe + p0  # r0's prefill
    t2 = t1 + cm.step_time_s([(40, 0)], 1, 40)  # r0 decodes, r1 prefills (and finishes)
    assert f.arrival_s.tolist() == [0.0, 0.0]
    assert f.first_scheduled_s.tolist() == pytest.approx([fe, t1], rel=1e-12)
    assert f.first_token_s.tolist() == pytest.approx([t1, t2], rel=1e-12)
    assert f.ttft_s.tolist() == pytest.approx([fe + p0, t2], rel=1e-12)  # API time counts


def test_api_server_time_grows_with_the_prompt(toy_deployment, tiny_model, toy_gpu, trace_file):
    cm = cm_with(tiny_model, toy_gpu, 1e-4, 2e-6)
    f = run(toy_deployment(), parse_workload(f"trace:{trace_file([(50, 1, 0.0)])}"), cm, 1)
    assert f.first_scheduled_s[0] == pytest.approx(1e-4 + 50 * 2e-6, rel=1e-12)
    assert f.first_token_s[0] == pytest.approx(1e-4 + 50 * 2e-6 + cm.step_time_s([(50, 0)]), rel=1e-12)


def test_reissued_request_waits_for_the_step_already_started(toy_deployment, tiny_model, toy_gpu,
                                                             trace_file):
    # closed loop, 2 clients, lengths in trace order: r0 (20 in, 2 out) and r1 (20 in, 6 out)
    # start together; when r0 finishes its client sends r2 at once. Without an API server r2
    # joins the step that starts at that instant; with one, the engine has already started the
    # next step (r1's decode), so r2 is first scheduled when that step ends.
    rows = [(20, 2, 0.0), (20, 6, 0.0), (20, 2, 0.0)]
    wl = parse_workload(f"trace:{trace_file(rows)}", concurrency=2)
    dep = toy_deployment()
    f0 = run(dep, wl, cm_with(tiny_model, toy_gpu, 0.0), 3)
    assert f0.first_scheduled_s[2] == pytest.approx(f0.finish_s[0], rel=1e-12)

    fe = 1e-6  # far shorter than any step: only the order of events matters
    cm = cm_with(tiny_model, toy_gpu, fe)
    f = run(dep, wl, cm, 3)
    # step 1 (from fe): r0's prefill, r1 reaching the engine during it; step 2: r0's decode
    # and r1's prefill, after which r0 is done and r1 has its first token
    s1 = cm.step_time_s([(20, 0)])
    s2 = cm.step_time_s([(20, 0)], 1, 20)
    t_fin = fe + s1 + s2
    assert f.finish_s[0] == pytest.approx(t_fin, rel=1e-12)
    assert f.arrival_s[2] == pytest.approx(t_fin, rel=1e-12)  # r2 is sent when r0 finishes
    s3 = cm.step_time_s((), 1, 20)  # r1's first decode, started at t_fin without r2
    assert f.first_scheduled_s[2] == pytest.approx(t_fin + s3, rel=1e-12)
    assert f.ttft_s[2] > s3  # the step it missed is part of its TTFT


def test_streamed_chunks_queue_at_the_api_server(toy_deployment, tiny_model, toy_gpu, trace_file):
    # two 40-token prompts, 3 output tokens each, sent together; the API server sends one chunk
    # per request that produced tokens in a step, `sc` each, one after another. sc is longer
    # than a decode step, so the chunks back up: the client sees step k's tokens at
    # d_k = max(engine end of step k, d_{k-1}) + 2 sc
    probe = cm_with(tiny_model, toy_gpu, 0.0)
    s1 = probe.step_time_s([(40, 0), (40, 0)])  # both prompts in one step
    s2 = probe.step_time_s((), 2, 80)  # both decode at 40 cached tokens each
    s3 = probe.step_time_s((), 2, 82)
    sc = 2 * s2
    cm = cm_with(tiny_model, toy_gpu, 0.0)
    cm.eff = replace(cm.eff, frontend_stream_s=sc)
    f = run(toy_deployment(), parse_workload(f"trace:{trace_file([(40, 3, 0.0), (40, 3, 0.0)])}"), cm, 2)
    t1, t2, t3 = s1, s1 + s2, s1 + s2 + s3  # the engine's steps: chunks do not slow it
    d1 = t1 + 2 * sc
    d2 = max(t2, d1) + 2 * sc
    d3 = max(t3, d2) + 2 * sc
    assert f.first_token_s.tolist() == pytest.approx([d1, d1], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([d3, d3], rel=1e-12)
    assert f.tpot_s.tolist() == pytest.approx([(d3 - d1) / 2] * 2, rel=1e-12)
    assert d3 > t3 + sc  # the backlog, not the engine, sets the last token


def test_closed_loop_client_sends_when_it_sees_the_last_chunk(toy_deployment, tiny_model, toy_gpu,
                                                              trace_file):
    # one client: r1 is sent when r0's last chunk reaches it, after the engine finished r0
    rows = [(20, 2, 0.0), (20, 2, 0.0)]
    wl = parse_workload(f"trace:{trace_file(rows)}", concurrency=1)
    probe = cm_with(tiny_model, toy_gpu, 0.0)
    s1, s2 = probe.step_time_s([(20, 0)]), probe.step_time_s((), 1, 20)
    sc = 3 * s2
    cm = cm_with(tiny_model, toy_gpu, 0.0)
    cm.eff = replace(cm.eff, frontend_stream_s=sc)
    f = run(toy_deployment(), wl, cm, 2)
    d1 = s1 + sc
    d2 = max(s1 + s2, d1) + sc
    assert f.finish_s[0] == pytest.approx(d2, rel=1e-12)
    assert f.arrival_s[1] == pytest.approx(d2, rel=1e-12)
    assert f.first_token_s[1] == pytest.approx(d2 + s1 + sc, rel=1e-12)  # idle API server again


def test_request_latency_is_paid_by_every_request_at_once(toy_deployment, tiny_model, toy_gpu,
                                                          trace_file):
    # two 40-token prompts sent together; each reaches the API server after the fixed latency
    # (both at `lat`, not one after the other), which then takes them one at a time (fe each)
    probe = cm_with(tiny_model, toy_gpu, 0.0)
    p0 = probe.step_time_s([(40, 0)])
    lat, fe = 5 * p0, p0 / 4
    cm = cm_with(tiny_model, toy_gpu, fe)
    cm.eff = replace(cm.eff, request_latency_s=lat)
    wl = parse_workload(f"trace:{trace_file([(40, 2, 0.0), (40, 1, 0.0)])}")
    f = run(toy_deployment(), wl, cm, 2)
    t1 = lat + fe + p0
    t2 = t1 + cm.step_time_s([(40, 0)], 1, 40)
    assert f.first_scheduled_s.tolist() == pytest.approx([lat + fe, t1], rel=1e-12)
    assert f.ttft_s.tolist() == pytest.approx([t1, t2], rel=1e-12)  # the latency counts once each
    # without the API server the two reach the engine together and prefill in one step
    cm0 = cm_with(tiny_model, toy_gpu, 0.0)
    cm0.eff = replace(cm0.eff, request_latency_s=lat)
    f0 = run(toy_deployment(), wl, cm0, 2)
    both = lat + cm0.step_time_s([(40, 0), (40, 0)])
    assert f0.first_scheduled_s.tolist() == pytest.approx([lat, lat], rel=1e-12)
    assert f0.ttft_s.tolist() == pytest.approx([both, both], rel=1e-12)
