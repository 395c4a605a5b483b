"""Bisection on the load, the dominance rule, and how a verified unit is sized for a fleet."""

from __future__ import annotations

import pytest

from planner.fleet import parse_fleet
from planner.options import Option, dominated
from planner.search import DISAGG_RATIOS, nearest_ratio
from planner.sizing import carried, fill, scale_of, size
from planner.verify import Bisection
from sim.deployment import PoolConfig
from sim.slo import SLO

SLO_ = SLO(1.0, 0.05)


def metrics(met: bool) -> dict:
    return {"slo_met": met, "slo_attainment": 0.95 if met else 0.5, "ttft_p90_s": 0.5,
            "tpot_p90_s": 0.04 if met else 0.08}


def run(b: Bisection, threshold: float) -> Bisection:
    while (x := b.next_load()) is not None:
        b.record(x, metrics(x <= threshold), SLO_)
    return b


@pytest.mark.parametrize("guess", [8.0, 10.0, 11.0, 2.0, 40.0])
def test_bisection_brackets_the_threshold_within_tolerance(guess):
    b = run(Bisection(guess, rel_tol=0.025), 10.0)
    assert b.goodput <= 10.0 < b.lowest_fail.load
    if 0.8 * 10 <= guess <= 1.2 * 10:  # a screen within 20%: tolerance reached in ~5 simulations
        assert b.goodput >= 10.0 / 1.025 and b.lowest_fail.load <= b.goodput * 1.025
        assert len(b.probes) <= 6
    else:  # a far guess spends the probe budget (9) on the bracket: within 10%
        assert b.goodput >= 0.9 * 10.0 and len(b.probes) <= 9


def test_integer_loads_for_closed_loops():
    b = run(Bisection(30.0, integer=True), 37.0)
    assert b.goodput == 37.0 and b.lowest_fail.load == 38.0
    assert all(p.load == int(p.load) for p in b.probes)


def test_nothing_meets_the_slo():
    b = run(Bisection(5.0, max_probes=4), 0.0)
    assert b.goodput == 0.0 and b.best is None and len(b.probes) == 4


P1 = PoolConfig("prefill", "h100", tp=1).resolved()
D1 = PoolConfig("decode", "h100", tp=1).resolved()
C4 = PoolConfig("colocated", "h100", tp=4).resolved()


def option(unit, mode, bisection=None) -> Option:
    return Option(mode, unit, bisection or Bisection(1.0), 0.0, "", "lp")


def test_fill_spends_leftover_gpus_on_the_binding_pool():
    o = option(((P1, 3), (D1, 2)), "disaggregated")
    # 8 GPUs: one 3:2 unit (5 GPUs), then prefill 4, decode 3, prefill 5: 1.5 units' worth
    pools = fill(o, [3, 2], parse_fleet("h100:8"))
    assert [k for _, k in pools] == [5, 3] and scale_of(o, pools) == pytest.approx(1.5)


def test_leftover_gpus_go_to_the_pool_that_binds_and_count():
    """A 4:1 unit whose prefill pool ran out first (TTFT) on a fleet two units do not fit: the
    leftover GPUs go to prefill while the decode pool (the screen says 3x the unit's load per
    replica) has room, and the deployment carries prefill replicas x the prefill capacity."""
    P2 = PoolConfig("prefill", "h100", tp=2).resolved()
    D4 = PoolConfig("decode", "h100", tp=4).resolved()
    b = Bisection(8.0)
    b.record(8.0, metrics(True), SLO_)
    b.record(9.0, {"slo_met": False, "slo_attainment": 0.5, "ttft_p90_s": 3.0,
                   "tpot_p90_s": 0.01}, SLO_)
    o = Option("disaggregated", ((P2, 4), (D4, 1)), b, 8.0, "ttft", "lp",
               screen_caps=(2.0, 24.0), slo=SLO_)
    pools = fill(o, [4, 1], parse_fleet("h100:16"))
    assert [k for _, k in pools] == [6, 1]  # 12 + 4 GPUs
    assert scale_of(o, pools) == pytest.approx(1.0)  # whole units: one
    assert carried(o, pools) == pytest.approx(6 * 8.0 / 4)  # what six prefill replicas carry
    # with the decode pool binding instead (TPOT failed), extra prefill replicas count for nothing
    b2 = Bisection(8.0)
    b2.record(8.0, metrics(True), SLO_)
    b2.record(9.0, metrics(False), SLO_)
    o2 = Option("disaggregated", ((P2, 4), (D4, 1)), b2, 8.0, "tpot", "lp",
                screen_caps=(20.0, 8.0), slo=SLO_)
    assert carried(o2, ((P2, 6), (D4, 1))) == pytest.approx(8.0)


def test_size_for_a_target_and_for_the_whole_fleet():
    b = Bisection(1.0)
    b.record(6.0, metrics(True), SLO_)
    o = option(((C4, 1),), "colocated", b)
    assert size(o, 13.0, parse_fleet("h100:16")) == ((C4, 3),)  # ceil(13 / 6)
    assert size(o, None, parse_fleet("h100:16")) == ((C4, 4),)  # 16 GPUs / 4
    assert size(o, 100.0, parse_fleet("h100:16")) == ((C4, 4),)  # capped by the fleet


def test_nearest_ratio_stays_in_the_space():
    assert nearest_ratio(5, 3) == (3, 2) and nearest_ratio(22, 5) == (4, 1)
    assert nearest_ratio(1, 9) == (1, 4) and all(nearest_ratio(a, b) in DISAGG_RATIOS
                                                  for a in range(1, 12) for b in range(1, 12))


def test_an_option_that_cannot_catch_the_leader_stops():
    lead, slow, close = Bisection(1.0), Bisection(1.0), Bisection(1.0)
    lead.record(6.0, metrics(True), SLO_)
    slow.record(2.0, metrics(True), SLO_)
    slow.record(2.4, metrics(False), SLO_)  # at best 2.4 per 4 GPUs < the leader's 6 per 4
    close.record(5.0, metrics(True), SLO_)
    close.record(7.0, metrics(False), SLO_)  # might still reach 7 > 6: keep refining
    opts = [option(((C4, 1),), "colocated", b) for b in (lead, slow, close)]
    assert dominated(opts, "goodput", None, parse_fleet("h100:8"), {"h100-sxm": 4.9}) == {1}


def test_a_unit_larger_than_the_leaders_deployment_stops_before_it_finds_a_ceiling():
    # target 4 req/s: the leader's one 4-GPU replica carries 6, so any unit of 8 GPUs loses on
    # GPUs whatever goodput it climbs to; a 4-GPU unit might still win on goodput per GPU
    lead, big, same = Bisection(1.0), Bisection(1.0), Bisection(1.0)
    lead.record(6.0, metrics(True), SLO_)
    big.record(30.0, metrics(True), SLO_)  # no failing probe yet
    same.record(5.0, metrics(True), SLO_)
    c8 = PoolConfig("colocated", "h100", tp=8).resolved()
    opts = [option(((C4, 1),), "colocated", lead), option(((c8, 1),), "colocated", big),
            option(((C4, 1),), "colocated", same)]
    fleet = parse_fleet("h100:16")
    assert dominated(opts, "goodput", 4.0, fleet, {"h100-sxm": 4.9}) == {1}
    # with no target every unit may still carry the most: nothing stops without a ceiling
    assert dominated(opts, "goodput", None, fleet, {"h100-sxm": 4.9}) == set()


def test_two_probes_per_round_trisect_the_log_bracket():
    b = Bisection(10.0)
    b.record(10.0, metrics(True), SLO_)
    b.record(13.31, metrics(False), SLO_)
    # r = 1.331 = 1.1^3: the points 10 x 1.1 and 10 x 1.21 cut it in three equal log-steps
    assert b.next_loads(2) == pytest.approx([11.0, 12.1])
    assert b.next_loads(1) == pytest.approx([b.next_load()])


def test_spare_probes_step_on_and_do_not_count_against_the_probe_budget():
    b = Bisection(10.0, max_probes=2)
    assert b.next_loads(2) == pytest.approx([10.0, 8.0])  # first round: the guess, then a step down
    b.record(10.0, metrics(True), SLO_)
    b.record(8.0, metrics(True), SLO_)
    assert b.extra == 1 and not b.done()  # two rounds allowed: one spent
    assert b.next_loads(2) == pytest.approx([12.0, 14.4])  # stepping up x1.2, twice


def fake_verifier(threshold: float, parallel: int):
    from types import SimpleNamespace

    log = []

    def run_(items):
        log.append(len(items))
        return [metrics(x <= threshold) for _, x, _ in items]
    return SimpleNamespace(run=run_, parallel=parallel, slo=SLO_, expired=False), log


def test_spare_workers_finish_a_lone_bisection_in_fewer_rounds():
    from planner.verify import Verifier

    rounds = {}
    for parallel in (1, 2):
        v, log = fake_verifier(10.0, parallel)
        b = Bisection(13.0)
        Verifier.bisect(v, [(None, b)])
        assert b.goodput <= 10.0 < b.lowest_fail.load <= 1.025 * b.goodput
        rounds[parallel] = len(log)
        assert max(log) == parallel
    assert rounds[2] < rounds[1]


def test_a_priced_deployment_reuses_the_unpriced_units_simulation():
    from dataclasses import replace

    from planner.verify import Verifier
    from sim.deployment import Deployment
    from sim.workload import parse_workload

    v = Verifier(parse_workload("fixed:128,16", rate=1.0), SLO_, 40, 0, workers=1)
    pool = PoolConfig("colocated", "h100", tp=1).resolved()
    plain = Deployment("llama-3.1-8b", (pool,))
    priced = Deployment("llama-3.1-8b", (replace(pool, gpu_price_per_hour_usd=4.9),))
    a, b = v.run([(plain, 2.0)]), v.run([(priced, 2.0)])
    v.close()
    assert v.sims == 1 and a == b


def test_variants_include_the_kv_twin_of_the_best_and_of_the_other_hardware():
    from planner.candidates import Candidate
    from planner.search import kv_twin, variants

    def cand(role, tp, kv, cap):
        pool = PoolConfig(role, "h100", tp=tp, kv_dtype=kv).resolved()
        return Candidate(pool, cap, cap, "ttft", 10_000, 1.0 * tp)

    p2b, p2f = cand("prefill", 2, "bf16", 10.0), cand("prefill", 2, "fp8", 9.0)
    p4b, p4f = cand("prefill", 4, "bf16", 19.8), cand("prefill", 4, "fp8", 19.0)
    d8b, d8f = cand("decode", 8, "bf16", 40.0), cand("decode", 8, "fp8", 38.0)
    cands = [p2b, p2f, p4b, p4f, d8b, d8f]
    unit = ((p4b, 2), (d8b, 1))
    assert kv_twin(unit, cands) == ((p4f, 2), (d8f, 1))
    assert kv_twin(unit, [p4b, p4f, d8b]) is None  # no fp8 decode screened: no twin
    out = variants(unit, cands, "gpus")
    # the other hardware (tp2 prefill, 4 replicas for the same capacity) and its fp8 twin
    assert ((p2b, 4), (d8b, 1)) in out and ((p2f, 4), (d8f, 1)) in out
    assert ((p4f, 2), (d8f, 1)) in out


def test_each_moe_layout_gets_a_verification():
    """An MoE model whose MILP picks are all experts-TP: the best screened EP and DP+EP replicas
    are verified beside them (one each), a dense model gets none."""
    from types import SimpleNamespace

    from planner.candidates import Candidate
    from planner.search import _each_moe_layout

    def cand(tp, ep=1, dp=1, cap=1.0):
        pool = PoolConfig("colocated", "h200", tp=tp, ep=ep, dp=dp).resolved()
        return Candidate(pool, cap, cap, "tpot", 10_000, 1.0)

    tp8, ep8, ep8b, dp2 = cand(8, cap=9.0), cand(8, 8, cap=10.0), cand(8, 8, cap=8.0), cand(4, 8, 2, cap=8.5)
    verified = [((tp8, 1),)]
    moe = SimpleNamespace(model=SimpleNamespace(is_moe=True))
    extra = _each_moe_layout(moe, verified, [tp8, ep8, ep8b, dp2], "gpus")
    assert [(m, [c.pool.ep for c, _ in u], [c.pool.dp for c, _ in u]) for m, u in extra] == [
        ("colocated", [8], [2]), ("colocated", [8], [1])]
    assert extra[1][1][0][0] is ep8  # the better EP replica
    dense = SimpleNamespace(model=SimpleNamespace(is_moe=False))
    assert _each_moe_layout(dense, verified, [tp8, ep8, dp2], "gpus") == []


def test_a_mode_cut_short_is_explained():
    """A disaggregated unit whose only probe failed and that stopped there (even at that load it
    could not beat the leader) has no goodput, so no alternative: `why.not_refined` says what
    it missed, where, and why it was not refined; a mode never simulated is not listed."""
    from types import SimpleNamespace

    from planner.planning import _not_refined

    lead, cut = Bisection(1.0), Bisection(1.0)
    lead.record(6.0, metrics(True), SLO_)
    cut.record(8.0, {"slo_met": False, "slo_attainment": 0.2, "ttft_p90_s": 3.0,
                     "tpot_p90_s": 0.01}, SLO_)
    p4, d4 = (PoolConfig(r, "h100", tp=4).resolved() for r in ("prefill", "decode"))
    win = option(((C4, 1),), "colocated", lead)
    dis = option(((p4, 1), (d4, 1)), "disaggregated", cut)  # 8 GPUs: at best 1 per GPU < 1.5
    never = option(((P1, 1), (D1, 1)), "disaggregated", Bisection(1.0))
    req = SimpleNamespace(objective="goodput", load=None, fleet=parse_fleet("h100:16"), slo=SLO_,
                          load_unit="requests/s")
    out = _not_refined([win, dis, never], win, [], req, {"h100-sxm": 4.9})
    assert len(out) == 1 and out[0]["mode"] == "disaggregated"
    assert out[0]["unit"] == dis.label()
    assert "missed ttft at 8 requests/s (1 per GPU on 8 GPUs)" in out[0]["why"]
    assert "not refined" in out[0]["why"]
    # a mode the plan shows (here as the winner's) is not listed again
    assert _not_refined([win, dis], dis, [], req, {"h100-sxm": 4.9}) == []
