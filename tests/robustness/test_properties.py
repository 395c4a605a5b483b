"""Property-based tests (hypothesis) over random model specs, deployments and workloads.

For any input the library raises nothing but ServePlanError. For valid input the simulator
conserves requests (completed + rejected == arrived) and output tokens, never fills more than
the KV cache it has, keeps each request's timestamps in causal order (arrival <= first scheduled
<= first token <= finish) and TTFT <= E2E. The planner never returns a plan that does not fit
memory, nor a feasible plan whose `predicted` block misses its SLO when the plan's own recorded
simulation (workload, load, requests, seed) is run again.

CI runs a fixed, derandomized profile (reproducible, about a minute); `-m slow` runs many more.
Each property counts its draws: a draw the library refuses as bad input (a tp that does not
divide the heads, a model that does not fit) checks nothing, so a property fails when fewer than
half of its draws ran to completion; a change that made every draw fail cannot pass silently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costmodel.errors import ServePlanError
from costmodel.specs import ModelSpec

CI = settings(deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SIM_EXAMPLES, SLOW_SIM_EXAMPLES = 800, 20000
PLAN_EXAMPLES, SLOW_PLAN_EXAMPLES = 10, 80
SPEC_EXAMPLES = 1500
GPUS = ("l4", "l40s", "a100-80g", "h100")
MIN_COMPLETED = 0.5  # fraction of a property's draws that must run to completion


def run_counted(strategy: st.SearchStrategy, body, profile: settings) -> tuple[int, int]:
    """Run `body(value)` on hypothesis draws of `strategy` (`body` returns True when the draw
    ran to completion and was checked, False when the library refused it as bad input) and
    fail unless at least MIN_COMPLETED of the draws completed. Returns (completed, drawn)."""
    counts = [0, 0]

    @profile
    @given(strategy)
    def prop(value):
        counts[1] += 1
        counts[0] += bool(body(value))

    prop()
    done, drawn = counts
    print(f"{getattr(body, '__name__', body)}: {done} of {drawn} draws ran to completion")
    assert drawn > 0, "hypothesis drew nothing"
    assert done >= MIN_COMPLETED * drawn, (
        f"only {done} of {drawn} draws ran to completion (the rest were refused as bad input): "
        f"the property checked too little")
    return done, drawn


@st.composite
def model_fields(draw, valid: bool = True) -> dict:
    """ModelSpec fields of tiny Llama-style (optionally MoE) models; `valid=False` puts a
    nonsense value (0, negative, 10^12, a float, a string, None) in one field."""
    heads = draw(st.sampled_from([1, 2, 4, 8]))
    kv = draw(st.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0]))
    head_dim = draw(st.sampled_from([8, 16, 32, 64]))
    experts = draw(st.sampled_from([0, 0, 0, 4, 8]))
    spec = dict(name="prop", num_layers=draw(st.integers(1, 4)), hidden_size=heads * head_dim,
                num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                intermediate_size=draw(st.integers(8, 512)), vocab_size=draw(st.integers(16, 4096)),
                num_experts=experts, experts_per_token=draw(st.integers(1, 2)) if experts else 0,
                max_position=draw(st.sampled_from([512, 2048, 8192])))
    if not valid:
        key = draw(st.sampled_from(sorted(k for k in spec if k != "name")))
        spec[key] = draw(st.one_of(st.integers(-3, 0), st.integers(10**9, 10**12),
                                   st.just(1.5), st.just("x"), st.none()))
    return spec


def model_specs() -> st.SearchStrategy[ModelSpec]:
    return model_fields().map(lambda d: ModelSpec(**d))


@st.composite
def pools(draw, role: str, model: ModelSpec):
    from sim.deployment import PoolConfig, SpecConfig

    spec = SpecConfig()
    if role != "prefill" and draw(st.booleans()):
        method = draw(st.sampled_from(["self", "ngram"]))
        spec = SpecConfig(method=method, num_speculative_tokens=draw(st.integers(0, 6)),
                          acceptance=draw(st.floats(0.0, 0.95)), adaptive=draw(st.booleans()))
    return PoolConfig(
        role=role, gpu=draw(st.sampled_from(GPUS)), tp=draw(st.sampled_from([1, 1, 2])),
        pp=draw(st.sampled_from([1, 1, 2])) if model.num_layers >= 2 else 1,
        replicas=draw(st.integers(1, 3)),
        max_num_seqs=draw(st.one_of(st.none(), st.integers(1, 64))),
        max_num_batched_tokens=draw(st.one_of(st.none(), st.integers(16, 4096))),
        chunk_size=draw(st.one_of(st.none(), st.integers(1, 512))),
        enable_chunked_prefill=draw(st.booleans()),
        kv_dtype=draw(st.sampled_from(["auto", "bf16", "fp8"])),
        gpu_memory_utilization=draw(st.one_of(st.none(), st.floats(0.3, 0.95))),
        kv_budget_tokens=draw(st.one_of(st.none(), st.integers(16, 512))),
        spec=spec)


@st.composite
def deployments(draw, model: ModelSpec):
    from sim.deployment import Deployment

    router = draw(st.sampled_from(["round_robin", "least_tokens", "prefix_affinity"]))
    if draw(st.integers(0, 3)) == 0:
        return Deployment(model=model, pools=(draw(pools("prefill", model)), draw(pools("decode", model))),
                          mode="disaggregated", router=router,
                          kv_link_bw_bytes_s=draw(st.one_of(st.none(), st.floats(1e8, 1e12))))
    return Deployment(model=model, pools=(draw(pools("colocated", model)),), router=router)


@st.composite
def workloads(draw):
    from sim import parse_workload

    kind = draw(st.sampled_from(["fixed", "uniform", "lognormal"]))
    a, b = draw(st.integers(1, 400)), draw(st.integers(1, 200))
    text = {"fixed": f"fixed:{a},{b}",
            "uniform": f"uniform:1-{a},1-{b}",
            "lognormal": f"lognormal:{a},{b},{draw(st.floats(0.1, 1.5)):.2f}"}[kind]
    arrival = draw(st.sampled_from(["poisson", "gamma", "closed"]))
    if arrival == "closed":
        return parse_workload(text, concurrency=draw(st.integers(1, 64)))
    rate = draw(st.floats(0.01, 1e5))
    cv = draw(st.floats(0.2, 5.0)) if arrival == "gamma" else 1.0
    return parse_workload(text, rate=rate, burstiness_cv=cv)


def check_run(res, n: int) -> None:
    """The simulator's invariants on one run (keep_requests=True)."""
    m, f = res.metrics, res.requests
    assert m.num_requests == n == len(f)
    assert m.num_completed + m.num_rejected == n
    done = ~f.rejected.to_numpy(bool)
    assert int(done.sum()) == m.num_completed
    # every output token of every completed request is generated exactly once
    assert m.output_tokens == int(f.output_len[done].sum())
    assert 0.0 <= m.kv_peak_fraction <= 1.0 + 1e-12
    for r in (res.timeline or {}).get("replicas", []):
        assert all(0.0 <= x <= 1.0 + 1e-12 for x in r["kv_fraction"])
    g = f[done]
    assert np.isfinite(g.finish_s).all() and np.isfinite(g.first_token_s).all()
    assert (g.arrival_s <= g.first_scheduled_s).all()
    assert (g.first_scheduled_s <= g.first_token_s).all()
    assert (g.first_token_s <= g.finish_s).all()
    assert (g.ttft_s <= g.e2e_s + 1e-12).all()
    for q in ("p50", "p90", "p99"):
        t, e = getattr(m, f"ttft_{q}_s"), getattr(m, f"e2e_{q}_s")
        assert math.isnan(t) or t <= e + 1e-9
    assert 0.0 <= m.slo_attainment <= 1.0


def _simulate_case(data) -> bool:
    """Draw and run one model x deployment x workload: True when it ran (and its invariants
    hold), False when refused as bad input."""
    from sim import simulate

    model = data.draw(model_specs())
    kv_small = data.draw(st.booleans())
    try:
        dep = data.draw(deployments(model))
        wl = data.draw(workloads())
        n = data.draw(st.integers(1, 40))
        kv_blocks = data.draw(st.integers(2, 64)) if kv_small else None
        res = simulate(dep, wl, num_requests=n, seed=data.draw(st.integers(0, 2**32)),
                       keep_requests=True, kv_blocks=kv_blocks,
                       policy=data.draw(st.sampled_from(["decode_first", "prefill_first"])))
    except ServePlanError:
        return False  # a valid refusal (e.g. tp that does not divide the heads, does not fit)
    check_run(res, n)
    return True


def test_simulator_invariants():
    run_counted(st.data(), _simulate_case, settings(CI, max_examples=SIM_EXAMPLES))


@pytest.mark.slow
def test_simulator_invariants_many():
    run_counted(st.data(), _simulate_case,
                settings(CI, max_examples=SLOW_SIM_EXAMPLES, derandomize=False))


@settings(CI, max_examples=SPEC_EXAMPLES)
@given(model_fields(valid=False), st.sampled_from(GPUS), st.sampled_from([1, 2, 4]))
def test_any_model_spec_is_a_cost_model_or_a_serveplan_error(fields, gpu, tp):
    from costmodel.memory import memory_plan
    from costmodel.model import CostModel

    try:
        cm = CostModel(ModelSpec(**fields), gpu, tp=tp)
        t = cm.step_time_s(prefill=[(16, 0)], n_decode=2, decode_ctx_sum=64)
        mem = memory_plan(cm)
    except ServePlanError:
        return
    assert math.isfinite(t) and t > 0
    assert mem.kv_capacity_tokens >= 0


def test_the_draw_count_fails_a_property_that_mostly_refuses():
    with pytest.raises(AssertionError, match="only 0 of 20 draws ran to completion"):
        run_counted(st.integers(0, 1000), lambda v: False, settings(CI, max_examples=20))
    with pytest.raises(AssertionError, match="draws ran to completion"):
        run_counted(st.integers(0, 99), lambda v: v < 30, settings(CI, max_examples=100))
    done, drawn = run_counted(st.integers(0, 99), lambda v: v < 70, settings(CI, max_examples=100))
    assert drawn == 100 and done >= 50


# --- the planner -----------------------------------------------------------------------------

@st.composite
def plan_inputs(draw) -> dict:
    isl, osl = draw(st.integers(16, 512)), draw(st.integers(4, 128))
    kw = dict(model=draw(st.sampled_from(["llama-3.2-1b", "qwen3-0.6b"])),
              gpus=f"{draw(st.sampled_from(['l4', 'l40s', 'a100-80g']))}:{draw(st.integers(1, 2))}",
              workload=draw(st.sampled_from([f"fixed:{isl},{osl}", f"uniform:8-{isl},4-{osl}",
                                             f"lognormal:{isl},{osl},0.6"])),
              ttft_slo_s=draw(st.sampled_from([0.05, 0.3, 1.0, 3.0])),
              tpot_slo_s=draw(st.sampled_from([0.01, 0.03, 0.1])),
              slo_percentile=draw(st.sampled_from([50.0, 90.0, 99.0])),
              attainment=draw(st.sampled_from([0.5, 0.9])),
              objective=draw(st.sampled_from(["goodput", "cost"])),
              kv_dtype=draw(st.sampled_from(["auto", "bf16"])),
              num_requests=100, seed=draw(st.integers(0, 1000)), workers=1)
    if draw(st.booleans()):
        kw["rate"] = draw(st.sampled_from([0.5, 2.0, 20.0, 500.0]))
    else:
        kw["concurrency"] = draw(st.sampled_from([1, 4, 32]))
    if draw(st.integers(0, 3)) == 0:
        kw.update(spec_method="ngram", spec_acceptance=draw(st.sampled_from([0.3, 0.7])))
    return kw


def check_plan(p) -> None:
    """A returned plan fits memory on every pool, and a feasible plan's prediction is what its
    own recorded simulation gives, within its SLO."""
    from costmodel.memory import memory_plan
    from sim import SLO, simulate
    from sim.deployment import Deployment
    from sim.engine import cost_model_for
    from sim.workload import parse_workload

    dep = Deployment.from_dict(p.deployment)
    for pool in dep.resolved().pools:
        cm = cost_model_for(pool, dep.model)
        mem = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                          pool.max_num_seqs, pool.block_size)
        assert mem.kv_blocks >= 1, (pool, mem)
    if not p.feasible:
        return
    s = p.simulation
    wl = parse_workload(s["workload"], rate=s["rate_rps"], concurrency=s["concurrency"],
                        burstiness_cv=s["burstiness_cv"])
    slo = SLO(s["slo"]["ttft_s"], s["slo"]["tpot_s"], s["slo"]["percentile"], s["slo"]["attainment"])
    m = simulate(dep, wl, num_requests=s["num_requests"], seed=s["seed"], slo=slo).metrics
    assert m.slo_met, (p.predicted, m)
    assert m.ttft_p90_s == pytest.approx(p.predicted.ttft_p90_s, rel=1e-9)
    assert m.tpot_p90_s == pytest.approx(p.predicted.tpot_p90_s, rel=1e-9)
    assert m.slo_attainment >= s["slo"]["attainment"]


def _plan_case(kw) -> bool:
    from planner import plan

    try:
        p = plan(**kw)
    except ServePlanError:
        return False
    check_plan(p)
    return True


def test_planner_plans_fit_and_meet_their_own_prediction():
    run_counted(plan_inputs(), _plan_case, settings(CI, max_examples=PLAN_EXAMPLES))


@pytest.mark.slow
def test_planner_plans_fit_and_meet_their_own_prediction_many():
    run_counted(plan_inputs(), _plan_case,
                settings(CI, max_examples=SLOW_PLAN_EXAMPLES, derandomize=False))
