"""MoE planning: the EP / attention-DP layouts searched, their launch lines, the explanation of
why a layout won, and the plan's reproduction in the simulator."""

from __future__ import annotations

import pytest

from costmodel.specs import MODEL_PRESETS
from planner import plan
from planner.launch import launch_lines
from planner.space import moe_layouts
from sim import SLO, Deployment, parse_workload, simulate
from sim.deployment import PoolConfig, SpecConfig


def test_layouts_searched():
    ds = MODEL_PRESETS["deepseek-v3"]
    assert moe_layouts(MODEL_PRESETS["llama-3.1-8b"], 8, 1, (1, 2, 4), 16) == [(1, 1)]
    # TP, EP inside TP, then DP attention with EP over tp x dp (within 16 GPUs)
    assert moe_layouts(ds, 4, 1, (1, 2, 4, 8), 16) == [(1, 1), (4, 1), (8, 2), (16, 4)]
    assert moe_layouts(ds, 4, 2, (1, 2, 4, 8), 16) == [(1, 1), (4, 1)]  # no DP with PP
    # Mixtral's 8 experts: EP over 16 GPUs would leave GPUs without an expert
    assert moe_layouts(MODEL_PRESETS["mixtral-8x7b"], 4, 1, (1, 2, 4), 16) == [(1, 1), (4, 1), (8, 2)]


def test_dp_ranks_search_split_token_budgets():
    from planner.space import (
        Constraints,
        SearchSpace,
        Shape,
        knobs_for,
        make_pool,
        rank_token_budgets,
    )

    assert rank_token_budgets((2048, 4096, 8192), 1) == (2048, 4096, 8192)
    assert rank_token_budgets((2048, 4096, 8192), 4) == (512, 1024, 2048)
    assert rank_token_budgets((2048, 4096, 8192), 16) == (256, 512)  # floor 256, deduplicated
    space, cons = SearchSpace(), Constraints(precisions=("auto",))
    dp4 = Shape("colocated", "h200-sxm", 2, 1, "auto", "bf16", ep=8, dp=4)
    assert knobs_for(dp4, space, cons).max_num_batched_tokens == (512, 1024, 2048)
    # prefill and decode pools keep their own budgets
    assert knobs_for(Shape("prefill", "h200-sxm", 2, 1, "auto", "bf16", ep=8, dp=4), space,
                     cons).max_num_batched_tokens == space.prefill_batched_tokens
    # vLLM refuses a token budget below max_num_seqs: the seat cap comes down to the budget
    pool = make_pool(dp4, 512, None, SpecConfig(), None, 0.9)
    assert pool.max_num_batched_tokens == 512 and pool.max_num_seqs == 512
    assert make_pool(dp4, 512, 128, SpecConfig(), None, 0.9).max_num_seqs == 128


def _pool(role="colocated", **kw):
    base = dict(max_num_seqs=256, max_num_batched_tokens=8192, gpu_memory_utilization=0.9)
    return PoolConfig(role, kw.pop("gpu", "h200"), **(base | kw))


def test_launch_lines_single_node_dp_ep():
    dep = Deployment(model="qwen3-235b-a22b", pools=(_pool(gpu="h100", tp=4, dp=2, ep=8),))
    v, s = launch_lines(dep)["vllm"], launch_lines(dep)["sglang"]
    assert "on 8 x h100" in v[0] and "ep=8, dp=2" in v[0]
    assert "--tensor-parallel-size 4 --pipeline-parallel-size 1 --data-parallel-size 2 --enable-expert-parallel" in v[1]
    assert "--data-parallel-address" not in v[1] and len(v) == 2
    assert "--tp 8 --dp 2 --enable-dp-attention --ep-size 8 --moe-a2a-backend deepep" in s[1]
    # the pool's limits are per rank: vLLM's flags are per DP engine, SGLang divides by --dp
    assert "--max-num-seqs 256 --max-num-batched-tokens 8192" in v[1]
    assert ("--max-running-requests 512 --chunked-prefill-size 16384 --max-prefill-tokens 8192"
            in s[1])
    # EP inside TP, no DP: vLLM's flag alone, SGLang's --ep-size
    dep = Deployment(model="qwen3-235b-a22b", pools=(_pool(gpu="h100", tp=8, ep=8),))
    lines = launch_lines(dep)
    assert "--enable-expert-parallel" in lines["vllm"][1] and "--data-parallel-size" not in lines["vllm"][1]
    assert "--tp 8 --ep-size 8 " in lines["sglang"][1] and "--enable-dp-attention" not in lines["sglang"][1]


def test_launch_lines_across_two_nodes_and_disaggregated():
    pools = (_pool("prefill", tp=8, dp=2, ep=16, precision="auto"), _pool("decode", tp=1, dp=8, ep=8, precision="auto"))
    dep = Deployment(model="deepseek-v3", pools=pools, mode="disaggregated")
    v, s = launch_lines(dep)["vllm"], launch_lines(dep)["sglang"]
    head, other = v[1], v[3]
    assert "--data-parallel-size 2 --data-parallel-size-local 1 --data-parallel-address HEAD_IP" in head
    assert "--headless" in other and "--data-parallel-start-rank 1" in other
    assert "--kv-transfer-config" in head and "--quantization" not in head  # the checkpoint is fp8 already
    assert "--nnodes 2 --node-rank 0" in s[1] and "--nnodes 2 --node-rank 1" in s[3]
    assert "--disaggregation-mode prefill" in s[1]
    decode_v = next(x for x in v if "--port 8200" in x)
    assert "--data-parallel-size 8 --enable-expert-parallel" in decode_v and "--headless" not in decode_v


@pytest.fixture(scope="module")
def moe_plan():
    return plan(model="qwen3-30b-a3b", gpus="h100:2", workload="fixed:512,128", rate=8.0,
                ttft_slo_s=0.5, tpot_slo_s=0.05, workers=1)


def test_moe_plan_explains_and_reproduces(moe_plan):
    p = moe_plan
    assert p.feasible
    pools = p.deployment["pools"]
    assert all({"ep", "dp"} <= set(q) for q in pools)
    moe = p.why["moe"]
    assert moe["summary"] and "best of each kind" in moe["summary"][0]
    for role in moe["kinds"]:
        assert set(moe["kinds"][role]) == {"tp", "ep", "dp"}
    # every colocated layout that fits was simulated (verified, or failed and dropped), not only
    # what the screen ranked first: the screen cannot rank layouts it prices within a few percent
    for kind in moe["kinds"]["colocated"].values():
        if kind["fits"]:
            assert kind["verified_per_gpu"] is not None or kind["failed_per_gpu"] is not None, kind
    s = p.simulation
    m = simulate(Deployment.from_dict(p.deployment), parse_workload(s["workload"], rate=s["rate_rps"]),
                 num_requests=s["num_requests"], seed=s["seed"], slo=SLO(**s["slo"])).metrics
    for key in ("ttft_p90_s", "tpot_p90_s", "goodput_rps", "slo_attainment"):
        assert getattr(p.predicted, key) == getattr(m, key), key


def test_dense_plans_carry_no_moe_explanation():
    p = plan(model="llama-3.2-1b", gpus="h100:1", workload="fixed:256,64", rate=2.0,
             ttft_slo_s=0.5, tpot_slo_s=0.05, workers=1)
    assert "moe" not in p.why
    assert all((q["ep"], q["dp"]) == (1, 1) for q in p.deployment["pools"])
