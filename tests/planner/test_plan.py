"""planner.plan() end to end on a small case, its reproduction in the simulator, its JSON round
trip, and every bad input named (the CLI's own tests are in tests/cli)."""

from __future__ import annotations

import json

import pytest

from costmodel.errors import DoesNotFitError, ServePlanError
from planner import plan
from planner.plan_types import Plan
from planner.space import SearchSpace
from sim import SLO, Deployment, parse_workload, simulate

SMALL = dict(model="llama-3.1-8b", gpus="h100:2", workload="fixed:512,128", rate=10.0,
             ttft_slo_s=0.5, tpot_slo_s=0.03)


@pytest.fixture(scope="module")
def small_plan() -> Plan:
    return plan(**SMALL, workers=1)


def test_small_plan_is_feasible_and_uses_what_it_needs(small_plan):
    p = small_plan
    assert p.feasible and p.binding is None
    # one H100 serves ~40 req/s of this workload within the SLO: 10 req/s needs one GPU
    assert p.predicted.gpus == 1
    assert p.predicted.slo_attainment >= 0.9
    assert p.capacity["unit_goodput"] > 10.0
    assert p.search["simulated"] > 0 and p.search["candidates"] >= p.search["verified"] > 0
    assert p.launch["vllm"] and p.launch["sglang"]
    assert p.alternatives and all(a.predicted.gpus >= 1 for a in p.alternatives)


def test_predicted_block_is_what_the_simulator_says(small_plan):
    p = small_plan
    s = p.simulation
    m = simulate(Deployment.from_dict(p.deployment),
                 parse_workload(s["workload"], rate=s["rate_rps"]), num_requests=s["num_requests"],
                 seed=s["seed"], slo=SLO(**s["slo"])).metrics
    for key in ("ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s", "throughput_tok_s",
                "goodput_rps", "slo_attainment"):
        assert getattr(p.predicted, key) == getattr(m, key), key


def test_plan_json_round_trip(small_plan):
    d = json.loads(json.dumps(small_plan.to_dict()))
    assert Plan.from_dict(d).to_dict() == small_plan.to_dict()


@pytest.mark.parametrize("kwargs, words", [
    (dict(gpus="tpu:8"), "unknown GPU"),
    (dict(gpus="h100:0"), "at least 1 GPU"),
    (dict(ttft_slo_s=0.0), "TTFT SLO"),
    (dict(tpot_slo_s=-0.01), "TPOT SLO"),
    (dict(rate=-1.0), "rate"),
    (dict(model="gpt-5"), "unknown model"),
    (dict(objective="latency"), "objective"),
    (dict(attainment=1.5), "attainment"),
    (dict(kv_dtype="fp4"), "KV dtype"),
    (dict(spec_method="draft"), "draft model"),
    (dict(rate=None, objective="cost"), "target load"),
    (dict(backend="slurm"), "backend"),
])
def test_bad_inputs_are_named(kwargs, words):
    with pytest.raises(ServePlanError, match=words):
        plan(**{**SMALL, **kwargs, "workers": 1})


def test_a_model_that_fits_nowhere_says_how_many_gpus_it_needs():
    with pytest.raises(DoesNotFitError, match=r"needs at least \d+ x h100-sxm"):
        plan(model="llama-3.1-405b", gpus="h100:4", workload="fixed:512,128", rate=1.0,
             ttft_slo_s=1.0, tpot_slo_s=0.1, workers=1)


def test_an_unreachable_slo_returns_the_closest_plan_and_what_binds():
    # no engine step of an 8B model takes under a millisecond: TPOT 1 ms cannot be met
    p = plan(**{**SMALL, "tpot_slo_s": 0.001, "rate": 2.0}, workers=1)
    assert not p.feasible and p.binding == "tpot"
    assert p.deployment["pools"] and p.predicted.slo_attainment < 0.9


def test_calibration_uncertainty_is_reported():
    from costmodel.calibration import CalibrationProfile, GpuCalibration
    from costmodel.efficiencies import Efficiencies

    cal = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(Efficiencies(), {}, 0.1)})
    p = plan(**{**SMALL, "gpus": "h100:1", "kv_dtype": "bf16"}, calibration=cal, workers=1,
             space=SearchSpace(modes=("colocated",), max_num_seqs=(None,),
                               max_num_batched_tokens=(8192,)))
    u = p.uncertainty
    g = p.capacity["unit_goodput"]
    assert u["step_time_rel_1sigma"] == 0.1
    assert u["unit_goodput_range"] == pytest.approx([g / 1.1, g / 0.9])
    assert "--calibration" in p.simulation["command"]
    assert not any("no calibration" in n for n in p.notes)  # the GPU is calibrated


def test_an_uncalibrated_plan_says_where_its_parameters_come_from(small_plan):
    assert any(n.startswith("cost model for h100-sxm: no calibration, Hopper defaults")
               for n in small_plan.notes)


def test_held_out_latency_intervals_bound_the_plans_ttft_and_tpot():
    import math

    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration

    # engine-run calibration: measured / predicted within [e^-0.2, e^0.1] (TTFT), [e^-0.05, e^0.08]
    cal = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        default_efficiencies("h100-sxm"), {}, 0.0, {}, {"ttft": [-0.2, 0.1], "tpot": [-0.05, 0.08]})})
    cal = CalibrationProfile.from_dict(cal.to_dict())  # as a profile file holds it
    p = plan(**{**SMALL, "gpus": "h100:1", "kv_dtype": "bf16"}, calibration=cal, workers=1,
             space=SearchSpace(modes=("colocated",), max_num_seqs=(None,),
                               max_num_batched_tokens=(8192,)))
    li = p.uncertainty["latency_interval_80"]
    assert "step_time_rel_1sigma" not in p.uncertainty  # no step-time residuals in this profile
    pr = p.predicted
    assert li["ttft_s"]["p90"] == pytest.approx([pr.ttft_p90_s * math.exp(-0.2), pr.ttft_p90_s * math.exp(0.1)])
    assert li["tpot_s"]["p50"] == pytest.approx([pr.tpot_p50_s * math.exp(-0.05), pr.tpot_p50_s * math.exp(0.08)])
    assert li["ttft_log_ratio"] == [-0.2, 0.1]
    assert Plan.from_dict(json.loads(json.dumps(p.to_dict()))).uncertainty == p.uncertainty
    # without engine-run intervals there is no latency block
    bare = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(default_efficiencies("h100-sxm"), {}, 0.1)})
    q = plan(**{**SMALL, "gpus": "h100:1", "kv_dtype": "bf16"}, calibration=bare, workers=1,
             space=SearchSpace(modes=("colocated",), max_num_seqs=(None,),
                               max_num_batched_tokens=(8192,)))
    assert "latency_interval_80" not in q.uncertainty


def test_a_plan_unlike_the_runs_behind_its_interval_is_told_how():
    # an interval measured on SGLang runs at TP 2-4 with 256 output tokens: a vLLM plan at TP 1
    # with 128 gets it, and four lines saying how it differs; a plan like the runs gets none
    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration

    domain = {"engines": ["sglang"], "models": ["llama-3.1-8b"], "modes": ["colocated"], "tp": [2, 4],
              "precisions": ["bf16"], "kv_dtypes": ["fp8"], "input_tokens": [512.0, 2048.0],
              "output_tokens": [256.0, 256.0]}
    cal = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        default_efficiencies("h100-sxm"), {}, 0.0, {}, {"ttft": [-0.2, 0.1], "tpot": [-0.05, 0.08]},
        domain)})
    cal = CalibrationProfile.from_dict(cal.to_dict())  # as a profile file holds it
    assert cal.gpus["h100-sxm"].latency_domain == domain
    space = SearchSpace(modes=("colocated",), max_num_seqs=(None,), max_num_batched_tokens=(8192,))
    p = plan(**{**SMALL, "gpus": "h100:1", "kv_dtype": "bf16"}, calibration=cal, workers=1, space=space)
    li = p.uncertainty["latency_interval_80"]
    assert li["unlike_runs"] == ["h100-sxm: engine vllm; the runs: sglang",
                                 "h100-sxm: TP 1 (colocated); the runs: TP 2, 4",
                                 "h100-sxm: KV cache bf16 (colocated); the runs: fp8",
                                 "h100-sxm: mean output 128 tokens; the runs: 256"]
    assert "no held-out run tested" in li["unlike_runs_note"] and li["ttft_log_ratio"] == [-0.2, 0.1]
    like = dict(domain, engines=["vllm"], tp=[1, 2], kv_dtypes=["bf16"], output_tokens=[100.0, 256.0])
    cal.gpus["h100-sxm"].latency_domain = like
    q = plan(**{**SMALL, "gpus": "h100:1", "kv_dtype": "bf16"}, calibration=cal, workers=1, space=space)
    assert "unlike_runs" not in q.uncertainty["latency_interval_80"]


def test_a_pool_on_a_gpu_without_an_interval_gets_none_of_another_gpu_s():
    # a mixed disaggregated plan: prompts on an H200 the runs never calibrated, decodes on the
    # calibrated H100; the H100's TTFT interval says nothing of the H200's prefill
    import math

    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration
    from planner.uncertainty import latency_intervals
    from sim.deployment import Deployment, PoolConfig

    cal = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        default_efficiencies("h100-sxm"), {}, 0.0, {}, {"ttft": [-0.2, 0.1], "tpot": [-0.05, 0.08]})})
    m = {"ttft_p90_s": 0.3, "tpot_p90_s": 0.02}
    dep = Deployment("llama-3.1-8b", (PoolConfig("prefill", "h200-sxm"), PoolConfig("decode", "h100-sxm")), "disaggregated")
    latency, missing = latency_intervals(cal, dep, m)
    assert "ttft_s" not in latency and latency["tpot_log_ratio"] == [-0.05, 0.08]
    assert missing == ["no TTFT interval: the calibration has none for h200-sxm (prefill)"]
    flipped = Deployment("llama-3.1-8b", (PoolConfig("prefill", "h100-sxm"), PoolConfig("decode", "h200-sxm")), "disaggregated")
    latency, missing = latency_intervals(cal, flipped, m)
    assert latency["ttft_s"]["p90"] == pytest.approx([0.3 * math.exp(-0.2), 0.3 * math.exp(0.1)])
    assert "tpot_s" not in latency and missing == ["no TPOT interval: the calibration has none for h200-sxm (decode)"]
    both = Deployment("llama-3.1-8b", (PoolConfig("prefill", "h100-sxm"), PoolConfig("decode", "h100-sxm")), "disaggregated")
    assert latency_intervals(cal, both, m)[1] == []
