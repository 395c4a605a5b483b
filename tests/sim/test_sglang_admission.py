"""SGLang admits a prompt only when the KV pool also holds the outputs still to come
(sim/scheduler.py `_reserve_ok`): hand-computed boundaries on the toy model."""

from dataclasses import replace

import pytest

from sim.deployment import Deployment, PoolConfig
from sim.engine import simulate
from sim.scheduler import CLIP_NEW_TOKENS, RATIO_DECAY, RATIO_INIT, RATIO_MIN
from sim.workload import parse_workload


def _run(toy_deployment, toy_cm, trace_file, rows, engine, kv_blocks):
    dep = replace(toy_deployment(max_num_batched_tokens=256), engine=engine)
    wl = parse_workload(f"trace:{trace_file(rows)}")
    return simulate(dep, wl, num_requests=len(rows), seed=0, keep_requests=True,
                    policy="prefill_only", watermark=0.0, kv_blocks=kv_blocks,
                    cost_models={"colocated": toy_cm}, warmup_fraction=0,
                    cooldown_fraction=0).requests


def test_the_estimate_constants_are_sglangs():
    # SGLang's global_config: init 0.7, min factor 0.14, 600 decay steps; 4096-token clip
    assert (RATIO_INIT, CLIP_NEW_TOKENS) == (0.7, 4096)
    assert RATIO_MIN == pytest.approx(0.098)
    assert RATIO_DECAY == pytest.approx((0.7 - 0.098) / 600)


@pytest.mark.parametrize("out1,admitted", [(121, True), (122, False)])
def test_a_prompt_waits_until_the_pool_holds_its_outputs(toy_deployment, toy_cm, trace_file,
                                                           out1, admitted):
    # 20 blocks of 16 tokens. r0 (64 in, 101 out) prefills alone; r1 (64 in) arrives during
    # it, after SGLang's overlap scheduler decided the next batch (r0's first decode). Then 255
    # tokens are free (320 less r0's 65) and r0 will still write 99, of which SGLang counts
    # (0.7 - 0.001) x 99 = 69.2: r1 needs 64 + its outputs < 255 - 69.2 = 185.8, so 121
    # outputs go in the next iteration and 122 wait (the estimate only tightens as r0 grows)
    cm = toy_cm
    t1 = cm.step_time_s([(64, 0)])
    rows = [(64, 101, 0.0), (64, out1, t1 / 2)]
    f = _run(toy_deployment, cm, trace_file, rows, "sglang", kv_blocks=20)
    if admitted:
        t2 = t1 + cm.step_time_s((), 1, 64)
        assert f.first_token_s[1] == pytest.approx(t2 + cm.step_time_s([(64, 0)]), rel=1e-12)
    else:
        assert f.first_token_s[1] == pytest.approx(f.finish_s[0] + cm.step_time_s([(64, 0)]),
                                                   rel=1e-12)
    # vLLM admits on the prompt's blocks alone: r1 prefills right after r0 either way
    g = _run(toy_deployment, cm, trace_file, rows, "vllm", kv_blocks=20)
    assert g.first_token_s[1] < f.finish_s[0]


def test_prompts_admitted_together_reserve_their_whole_outputs(toy_deployment, toy_cm, trace_file):
    # 12 blocks (192 tokens), two 64 x 64 requests at once: the first fits alone (an idle
    # engine admits the head of the queue); the second needs 64 + 64 < 192 - 64 (the first's
    # prompt) - 64 (its outputs, counted whole in the same iteration): no, so it waits for the
    # first to finish. vLLM takes both prompts in one iteration
    cm = toy_cm
    rows = [(64, 64, 0.0), (64, 64, 0.0)]
    f = _run(toy_deployment, cm, trace_file, rows, "sglang", kv_blocks=12)
    t1 = cm.step_time_s([(64, 0)])
    assert f.first_token_s[0] == pytest.approx(t1, rel=1e-12)
    assert f.first_token_s[1] == pytest.approx(f.finish_s[0] + t1, rel=1e-12)
    g = _run(toy_deployment, cm, trace_file, rows, "vllm", kv_blocks=12)
    assert g.first_token_s.tolist() == pytest.approx([cm.step_time_s([(64, 0), (64, 0)])] * 2,
                                                     rel=1e-12)


def test_a_refusal_latches_and_the_estimate_falls_meanwhile(toy_deployment, toy_cm, trace_file,
                                                           monkeypatch):
    # 400 blocks (6,400 tokens). r0 (16 in, 5,000 out, counted as 4,096) and r2 (16 in, 60 out)
    # go in at once; r1 (16 in, 3,600 out) is refused: 3,616 >= 6,368 free - 4,096 - 60. The
    # refusal latches (SGLang's batch_is_full) until r2 finishes, 59 decode-only iterations
    # later; by then new_token_ratio is 0.7 - 59 x 0.001003 = 0.641 and r1 needs 3,616 <
    # (395 blocks x 16 + 4 spare in r0's last block) - 0.641 x 4,096 = 3,699: it goes in next.
    # Held at 0.7 the estimate would leave 3,457: r1 waits for r0
    cm = toy_cm
    rows = [(16, 5000, 0.0), (16, 60, 0.0), (16, 3600, 0.0)]  # r0, r2, r1 in queue order
    f = _run(toy_deployment, cm, trace_file, rows, "sglang", kv_blocks=400)
    t1 = cm.step_time_s([(16, 0)] * 2)
    assert f.first_token_s[:2].tolist() == pytest.approx([t1, t1], rel=1e-12)
    assert f.first_token_s[2] == pytest.approx(f.finish_s[1] + cm.step_time_s([(16, 0)]), rel=1e-12)
    monkeypatch.setattr("sim.scheduler.RATIO_DECAY", 0.0)
    g = _run(toy_deployment, cm, trace_file, rows, "sglang", kv_blocks=400)
    assert g.first_token_s[2] == pytest.approx(g.finish_s[0] + cm.step_time_s([(16, 0)]), rel=1e-12)


def test_decodes_riding_along_take_a_token_each(toy_deployment, toy_cm, trace_file):
    # as the first boundary, under --enable-mixed-chunk: r0's decode rides in r1's prefill
    # batch and takes a token of the room (256 - 70 - 1 = 185), so 120 outputs go in, 121 wait
    cm = toy_cm
    t1 = cm.step_time_s([(64, 0)])
    for out1, admitted in ((120, True), (121, False)):
        dep = replace(toy_deployment(max_num_batched_tokens=256), engine="sglang")
        wl = parse_workload(f"trace:{trace_file([(64, 101, 0.0), (64, out1, t1 / 2)])}")
        f = simulate(dep, wl, num_requests=2, seed=0, keep_requests=True, policy="prefill_mixed",
                     watermark=0.0, kv_blocks=20, cost_models={"colocated": cm},
                     warmup_fraction=0, cooldown_fraction=0).requests
        assert (f.first_token_s[1] < f.finish_s[0]) == admitted


def test_a_new_running_batch_lifts_the_latch(toy_deployment, toy_cm, trace_file):
    # 12 blocks: r0 (64 in, 64 out) and r1 (64 in, 15 out) at once. r1 is refused beside r0
    # (79 >= 128 free - 64, r0's outputs counted whole) and the refusal latches; r0 then starts
    # a new running batch, whose latch is clear (SGLang swaps in the prefill batch), and r1
    # needs 79 < 128 - 0.7 x 63 = 83.9: it prefills right after r0, not after r0 finishes
    cm = toy_cm
    f = _run(toy_deployment, cm, trace_file, [(64, 64, 0.0), (64, 15, 0.0)], "sglang", kv_blocks=12)
    t1 = cm.step_time_s([(64, 0)])
    assert f.first_token_s.tolist() == pytest.approx([t1, t1 + cm.step_time_s([(64, 0)])], rel=1e-12)


def test_a_prefill_server_counts_one_output_token(tiny_model, toy_gpu, toy_cm, trace_file):
    # SGLang's disaggregated prefill server sets max_new_tokens to 1 before its PrefillAdder
    # sees a request: two 64 x 200 prompts in 20 blocks prefill together (colocated, the
    # second would wait for 200 outputs of room)
    pools = tuple(PoolConfig(role=r, gpu=toy_gpu, max_num_batched_tokens=256, block_size=16)
                  for r in ("prefill", "decode"))
    dep = Deployment(model=tiny_model, pools=pools, mode="disaggregated", engine="sglang")
    wl = parse_workload(f"trace:{trace_file([(64, 200, 0.0), (64, 200, 0.0)])}")
    f = simulate(dep, wl, num_requests=2, seed=0, keep_requests=True, policy="prefill_only",
                 watermark=0.0, kv_blocks=20, cost_models={"prefill": toy_cm, "decode": toy_cm},
                 warmup_fraction=0, cooldown_fraction=0).requests
    both = toy_cm.step_time_s([(64, 0), (64, 0)])
    assert f.first_token_s.tolist() == pytest.approx([both, both], rel=1e-12)
