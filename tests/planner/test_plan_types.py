"""The Plan JSON: every DESIGN.md key present, and to_dict -> JSON -> from_dict is lossless."""

from __future__ import annotations

import json

import pytest

from costmodel.errors import ServePlanError
from planner.launch import launch_lines
from planner.plan_types import PREDICTED_KEYS, Alternative, Plan, Predicted
from sim.deployment import Deployment, PoolConfig

METRICS = {"ttft_p50_s": 0.1, "ttft_p90_s": 0.3, "tpot_p50_s": 0.02, "tpot_p90_s": 0.03,
           "throughput_tok_s": 3600.0, "goodput_rps": 7.5, "slo_attainment": 0.95}


def make_plan() -> Plan:
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", tp=1, replicas=2),)).resolved()
    pred = Predicted.from_metrics(METRICS, gpus=2, cost_per_hour_usd=10.0)
    alt = Alternative("disaggregated", dep.to_dict(), pred, {"unit_goodput": 3.0}, "costs more")
    return Plan(deployment=dep.to_dict(), predicted=pred, launch=launch_lines(dep),
                alternatives=(alt,), why={"winner": {"bound_by": "tpot"}},
                search={"candidates": 10, "simulated": 4, "wall_s": 1.0},
                simulation={"rate_rps": 8.0, "seed": 0, "num_requests": 800},
                capacity={"unit_goodput": 4.0}, inputs={"model": "llama-3.1-8b"},
                notes=("a note",))


def test_cost_per_million_tokens_from_throughput():
    p = Predicted.from_metrics(METRICS, gpus=2, cost_per_hour_usd=10.0)
    # $10/h at 3600 tokens/s = 12.96 M tokens/h -> $0.7716 per million
    assert p.cost_per_mtok_usd == pytest.approx(10.0 / (3600 * 3600) * 1e6)


def test_round_trip_through_json():
    plan = make_plan()
    d = json.loads(json.dumps(plan.to_dict()))
    back = Plan.from_dict(d)
    assert back == plan
    assert back.deployment_obj() == Deployment.from_dict(plan.deployment)


def test_design_keys_present():
    d = make_plan().to_dict()
    for key in ("deployment", "predicted", "launch", "alternatives", "why", "search"):
        assert key in d
    assert set(PREDICTED_KEYS) <= set(d["predicted"])
    assert {"candidates", "simulated", "wall_s"} <= set(d["search"])
    pool = d["deployment"]["pools"][0]
    for key in ("role", "gpu", "tp", "pp", "replicas", "max_num_seqs", "max_num_batched_tokens",
                "chunk_size", "kv_dtype", "gpu_memory_utilization", "kv_budget_tokens", "spec"):
        assert key in pool
    assert {"method", "draft_model", "num_speculative_tokens"} <= set(pool["spec"])
    assert set(d["launch"]) >= {"vllm", "sglang"}


def test_bad_documents_are_named():
    d = make_plan().to_dict()
    with pytest.raises(ServePlanError, match="schema"):
        Plan.from_dict({**d, "schema": "x"})
    with pytest.raises(ServePlanError, match="version"):
        Plan.from_dict({**d, "version": 2})
    bad = dict(d)
    del bad["predicted"]
    with pytest.raises(ServePlanError, match="predicted"):
        Plan.from_dict(bad)
    with pytest.raises(ServePlanError, match="goodput_rps"):
        Plan.from_dict({**d, "predicted": {k: v for k, v in d["predicted"].items() if k != "goodput_rps"}})
