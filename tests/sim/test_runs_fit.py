"""Calibrating engine parameters from runs: the surrogate, and a fit that recovers known values."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.efficiencies import PARAM_BOUNDS
from costmodel.errors import ServePlanError
from sim.deployment import Deployment
from sim.runs import MeasuredRun
from sim.runs.fit import _cost_models, _replay, fit_runs
from sim.runs.profile import profile_of
from sim.runs.surrogate import RunSurrogate

GPU = "h100-sxm"


def _run(tp: int, isl: int, osl: int, conc: int, measured=None) -> MeasuredRun:
    dep = Deployment.colocated("llama-3.2-1b", GPU, tp=tp)
    return MeasuredRun("synthetic.csv", f"tp{tp}_{isl}x{osl}_c{conc}", "vllm", "0.12", dep,
                       f"fixed:{isl},{osl}", concurrency=conc, num_requests=4 * conc,
                       measured=measured or {"ttft_mean_s": 0.1, "tpot_mean_s": 0.01})


def _profile(eff) -> CalibrationProfile:
    return CalibrationProfile(gpus={GPU: GpuCalibration(eff)})


def _three_runs_measured_at(eff) -> list[MeasuredRun]:
    """Three small runs (TP 1 and 2) whose measured means are their replays under `eff`."""
    runs = []
    for tp, isl, osl, c in [(1, 512, 32, 4), (1, 1024, 16, 8), (2, 256, 48, 8)]:
        r = _run(tp, isl, osl, c)
        _, m = _replay(r, _profile(eff), record=False)
        runs.append(replace(r, measured=m))
    return runs


def test_surrogate_reproduces_the_replay_it_recorded_and_follows_a_change():
    run = _run(2, 512, 32, 8)
    base = default_efficiencies(GPU)
    res, pred = _replay(run, _profile(base), record=True)
    s = RunSurrogate(run, res, _cost_models(run, _profile(base)), base)
    assert s.predict(base) == pytest.approx(pred, rel=1e-9)
    # slower decode work: TPOT follows the replay of that change within a few percent
    slow = replace(base, decode_time_scale=1.3)
    _, truth = _replay(run, _profile(slow), record=False)
    got = s.predict(slow)
    assert got["tpot_mean_s"] == pytest.approx(truth["tpot_mean_s"], rel=0.05)
    assert got["tpot_mean_s"] > pred["tpot_mean_s"] * 1.05  # a 1B model: host time is half of it


def test_surrogate_adds_a_change_of_request_latency_to_every_ttft():
    # a longer fixed latency lengthens every recorded TTFT by the change and leaves TPOT alone;
    # the full replay at that latency agrees within a few percent (its closed loop returns a
    # little later to a schedule that moved a little)
    run = _run(1, 512, 16, 8)
    base = default_efficiencies(GPU)
    res, pred = _replay(run, _profile(base), record=True)
    s = RunSurrogate(run, res, _cost_models(run, _profile(base)), base)
    later = replace(base, request_latency_s=0.05)
    _, truth = _replay(run, _profile(later), record=False)
    got = s.predict(later)
    assert got["ttft_mean_s"] == pytest.approx(pred["ttft_mean_s"] + 0.05, rel=1e-9)
    assert got["ttft_mean_s"] == pytest.approx(truth["ttft_mean_s"], rel=0.03)
    assert got["tpot_mean_s"] == pytest.approx(truth["tpot_mean_s"], rel=0.03)


def test_fit_finds_a_request_latency_beside_the_prefill_scale():
    # TTFT = latency + each client's place in the prefill queue: runs at 4 and 64 clients tell
    # the intercept from the slope (the prefill scale), which one concurrency could not
    truth = replace(default_efficiencies(GPU), request_latency_s=0.08, prefill_time_scale=1.2)
    runs = []
    for tp, isl, osl, c in [(1, 2048, 16, 4), (1, 2048, 16, 64), (1, 1024, 32, 32)]:
        r = _run(tp, isl, osl, c)
        _, m = _replay(r, _profile(truth), record=False)
        runs.append(replace(r, measured=m))
    (f,) = fit_runs(runs, params=["request_latency_s", "prefill_time_scale"], held_out=False)
    assert "request_latency_s" in f.fitted and not f.rejected
    assert f.params.request_latency_s == pytest.approx(0.08, rel=0.1)
    assert f.params.prefill_time_scale == pytest.approx(1.2, rel=0.1)
    assert f.summary()["after"]["ttft"] < 0.02


def test_fit_recovers_engine_parameters_from_runs_made_with_them():
    truth = replace(default_efficiencies(GPU), host_per_seq_s=80e-6, decode_time_scale=0.8,
                    prefill_time_scale=1.25)
    shapes = [(1, 512, 32, 4), (1, 512, 32, 32), (2, 2048, 16, 8), (2, 256, 64, 64), (1, 1024, 48, 16)]
    runs = []
    for tp, isl, osl, c in shapes:
        r = _run(tp, isl, osl, c)
        _, m = _replay(r, _profile(truth), record=False)
        runs.append(replace(r, measured=m))
    (f,) = fit_runs(runs, params=["host_per_seq_s", "decode_time_scale", "prefill_time_scale"],
                    held_out=True)
    assert f.params.decode_time_scale == pytest.approx(0.8, rel=0.1)
    assert f.params.prefill_time_scale == pytest.approx(1.25, rel=0.1)
    assert f.params.host_per_seq_s == pytest.approx(80e-6, rel=0.3)
    s = f.summary()
    assert s["after"]["tpot"] < 0.02 and s["after"]["tpot"] < s["before"]["tpot"]
    assert set(f.interval) == {"ttft", "tpot"}
    # runs made with the same values: a fit without any one of them moves nothing, so each
    # held-out prediction is the run's full replay at the fitted values
    for r in f.rows:
        for k in ("ttft_mean_s", "tpot_mean_s"):
            assert r.held_out[k] == pytest.approx(r.after[k], rel=0.02)
    prof = profile_of([f])
    g = prof.gpus[GPU]
    assert "fit: 5 vllm runs (synthetic.csv)" == g.sources["decode_time_scale"]
    assert g.latency_interval["tpot"][0] <= g.latency_interval["tpot"][1]
    back = CalibrationProfile.from_dict(prof.to_dict())
    assert back.gpus[GPU].latency_interval == g.latency_interval
    # what those runs were, for plans unlike them (costmodel.run_domain)
    isl = sorted(float(r.run.lengths[0]) for r in f.rows)
    osl = sorted(float(r.run.lengths[1]) for r in f.rows)
    assert g.latency_domain == {"engines": ["vllm"], "models": ["llama-3.2-1b"], "modes": ["colocated"],
                                "tp": sorted({r.run.deployment.pools[0].tp for r in f.rows}),
                                "precisions": ["bf16"], "kv_dtypes": ["bf16"], "input_tokens": [isl[0], isl[-1]],
                                "output_tokens": [osl[0], osl[-1]]}
    assert back.gpus[GPU].latency_domain == g.latency_domain


def test_parameters_the_runs_do_not_inform_stay_put():
    runs = [_run(1, 512, 16, 4)]  # TP 1: no collectives
    (f,) = fit_runs(runs, held_out=False, rounds=1)
    assert "comm_bw_eff" in f.not_informed and "comm_latency_s" in f.not_informed
    assert f.params.comm_bw_eff == default_efficiencies(GPU).comm_bw_eff


def test_bad_fit_inputs_are_named():
    with pytest.raises(ServePlanError, match="no runs"):
        fit_runs([])
    with pytest.raises(ServePlanError, match="parameters \\['gpu_magic'\\]"):
        fit_runs([_run(1, 128, 8, 2)], params=["gpu_magic"], held_out=False)


def test_a_fit_that_replays_a_metric_worse_is_set_aside(monkeypatch):
    import sim.runs.fit as fit_mod

    base = default_efficiencies(GPU)
    runs = _three_runs_measured_at(base)  # the defaults replay these runs exactly
    # a surrogate optimum the simulator disagrees with: decodes 3x slower, and a loss that
    # does not see it (the search's own guard compares losses; this one checks each metric)
    monkeypatch.setattr(fit_mod, "_solve", lambda surr, est, names, start, radius=None:
                        replace(est, decode_time_scale=3.0))
    losses = iter(range(100, 0, -1))
    monkeypatch.setattr(fit_mod, "_robust_loss", lambda preds, runs: float(next(losses)))
    (f,) = fit_runs(runs, params=["decode_time_scale"], held_out=True, rounds=1)
    assert f.rejected and "TPOT" in f.rejected and f.fitted == ()
    assert f.params == base and all(r.after == r.before == r.held_out for r in f.rows)
    g = profile_of([f]).gpus[GPU]
    assert "set aside" in g.sources["decode_time_scale"]


def test_a_fit_that_trades_a_metric_is_refitted_with_that_metric_weighted_up(monkeypatch):
    # the plain fit mends TTFT (prompts 2x slower, as measured) but lands on a surrogate optimum
    # that replays TPOT worse (decodes 1.5x slower too); fitted again with TPOT's log errors
    # counting twice it finds the truth: that fit is kept,
    # its weights are kept with it, and the leave-one-out refits minimise the same loss
    import sim.runs.fit as fit_mod
    from sim.runs.loss import current_weights

    base = default_efficiencies(GPU)
    truth = replace(base, prefill_time_scale=2.0)
    runs = _three_runs_measured_at(truth)
    seen = []

    def solve(surr, est, names, start, radius=None):
        seen.append(current_weights())
        return replace(est, prefill_time_scale=2.0, decode_time_scale=1.0 if seen[-1].get("tpot") else 1.5)

    monkeypatch.setattr(fit_mod, "_solve", solve)
    losses = iter(range(100, 0, -1))  # the search's own check never takes a step back
    monkeypatch.setattr(fit_mod, "_robust_loss", lambda preds, runs: float(next(losses)))
    msgs = []
    (f,) = fit_runs(runs, params=["prefill_time_scale", "decode_time_scale"], held_out=True, rounds=1,
                    log=msgs.append)
    assert not f.rejected and f.weights == {"tpot": 2.0}, msgs
    assert set(f.fitted) == {"prefill_time_scale", "decode_time_scale"}
    assert (f.params.prefill_time_scale, f.params.decode_time_scale) == (2.0, 1.0)
    assert seen[0] == {} and seen[1:] == [{"tpot": 2.0}] * (len(seen) - 1) and len(seen) >= 1 + 1 + 3
    assert any("fitting again with TPOT x2" in m for m in msgs)
    assert f.summary()["metric_weights"] == {"tpot": 2.0} and f.summary()["after"]["tpot"] < 0.01
    prof = profile_of([f])
    assert prof.gpus[GPU].sources["decode_time_scale"].endswith("TPOT x2 in the loss")
    assert any("fitted with TPOT x2 in the loss" in m for m in prof.messages)


def test_metric_weights_are_scoped_and_checked():
    from sim.runs.loss import current_weights, metric_weights, objective, residuals

    r = _run(1, 256, 16, 4, measured={"ttft_mean_s": 1.0, "tpot_mean_s": 0.01})
    pred = [{"ttft_mean_s": np.e, "tpot_mean_s": 0.01 * np.e ** 2}]
    with metric_weights({"tpot": 3.0}):
        assert current_weights() == {"tpot": 3.0}
        assert residuals(pred, [r], weighted=True).tolist() == pytest.approx([1.0, 6.0])
        assert residuals(pred, [r]).tolist() == pytest.approx([1.0, 2.0])  # reports: unweighted
        assert objective(pred, [r]) == pytest.approx({"ttft": np.e - 1, "tpot": np.e ** 2 - 1})
    assert current_weights() == {}
    with pytest.raises(ValueError, match="metric weights {'tpot': 0.0}; expected positive"):
        with metric_weights({"tpot": 0.0}):
            pass


def test_a_parameter_at_a_bound_is_named_with_the_side_it_sits_on():
    from sim.runs.fit import RunsFit

    base = default_efficiencies(GPU)
    at = replace(base, decode_time_scale=PARAM_BOUNDS["decode_time_scale"][1],  # upper bound
                 prefill_time_scale=PARAM_BOUNDS["prefill_time_scale"][0],  # lower bound, > 0
                 request_latency_s=PARAM_BOUNDS["request_latency_s"][1] * 1e-4,  # search floor
                 host_per_seq_s=40e-6)  # inside
    names = ("decode_time_scale", "prefill_time_scale", "request_latency_s", "host_per_seq_s")
    f = RunsFit(GPU, at, base, names, (), [], {}, 1, 0.0)
    msgs = [m for m in profile_of([f]).messages if "sits at" in m]
    assert len(msgs) == 3
    up, low, floor = (next(m for m in msgs if m.startswith(f"{GPU} (engine runs): {n} ")) for n in names[:3])
    assert "upper bound" in up and "ask for more than it can give" in up
    assert "lowest value" in low and "ask for less than it can give" in low
    # a fixed time the runs push to the search's floor: they want none of it, not more of it
    assert "lowest value" in floor and "want none of it" in floor and "more" not in floor


def test_held_out_interval_covers_80_percent_of_the_next_run_in_expectation():
    """The k-th smallest of n exchangeable errors has F = k / (n + 1) on average, so order
    statistics interpolated at (n + 1) x 0.1 and (n + 1) x 0.9 cover the next error about 80% of
    the time: checked by drawing n + 1 errors (normal and heavy-tailed) many times. The ranks of
    split-conformal prediction (floor / ceil of those positions) cover at least 80%: 85-87% at
    the 14 and 25 fitted runs of the benchmark, more than the issue's "near 80%"; plain sample
    quantiles cover less (74% at 25)."""
    from sim.runs.fit import held_out_interval

    e = list(range(1, 26))  # positions 2.6 and 23.4
    assert held_out_interval(e) == pytest.approx([2.6, 23.4])
    # too few for the order statistics (the extremes would cover 50% at 3): the normal
    # prediction interval, mean +- t(0.9, 2) x sd x sqrt(1 + 1/3)
    assert held_out_interval([0.3, -0.1, 0.2]) == pytest.approx([0.1333 - 0.4532, 0.1333 + 0.4532], abs=1e-3)
    rng = np.random.default_rng(0)
    for n in (3, 5, 8):
        for draw, lo_ok, hi_ok in ((rng.standard_normal, 0.78, 0.82), (lambda size: rng.standard_t(3, size), 0.76, 0.84)):
            x = draw(size=(20000, n + 1))
            hits = sum(lo <= row[n] <= hi for row in x for lo, hi in [held_out_interval(row[:n])])
            assert lo_ok <= hits / len(x) <= hi_ok, (n, hits / len(x))
    for n in (14, 25, 60):
        for draw in (rng.standard_normal, lambda size: rng.standard_t(3, size)):
            x = draw(size=(4000, n + 1))
            hits = 0
            for row in x:
                lo, hi = held_out_interval(row[:n])
                hits += lo <= row[n] <= hi
            # interpolating between the tail's order statistics adds 1-3 points (81-83% here)
            assert 0.795 <= hits / len(x) <= 0.84, n


def test_fit_finds_the_api_servers_chunk_time_from_runs_that_back_it_up():
    # a 1B model's decode step at 128 clients takes ~10 ms (mostly host time); 128 chunks of 120 us
    # take 15 ms, so the API server, not the engine, paces what the clients see there; at 4
    # clients it never backs up. Runs replayed with a known chunk time give it back (a grid
    # point), and the decode scale stays where the runs put it.
    truth = replace(default_efficiencies(GPU), frontend_stream_s=120e-6)
    runs = []
    for tp, isl, osl, c in [(1, 256, 32, 128), (1, 512, 32, 4), (1, 128, 24, 48)]:
        r = _run(tp, isl, osl, c)
        _, m = _replay(r, _profile(truth), record=False)
        runs.append(replace(r, measured=m))
    _, m0 = _replay(runs[0], _profile(default_efficiencies(GPU)), record=False)
    assert runs[0].measured["tpot_mean_s"] > 1.2 * m0["tpot_mean_s"]  # it does back up
    (f,) = fit_runs(runs, params=["frontend_stream_s", "decode_time_scale"], held_out=False, rounds=2)
    assert "frontend_stream_s" in f.fitted and not f.rejected
    assert f.params.frontend_stream_s == pytest.approx(120e-6, rel=1e-9)
    assert f.params.decode_time_scale == pytest.approx(1.0, rel=0.05)
    assert f.summary()["after"]["tpot"] < 0.01


def _big_run(isl: int, osl: int, conc: int) -> MeasuredRun:
    # Qwen3-32B on one H100: ~9 GiB of KV cache beside its 61 GiB of weights
    dep = Deployment.colocated("qwen3-32b", GPU, tp=1)
    return MeasuredRun("synthetic.csv", f"{isl}x{osl}_c{conc}", "vllm", "0.12", dep,
                       f"fixed:{isl},{osl}", concurrency=conc, num_requests=3 * conc,
                       measured={"ttft_mean_s": 0.1, "tpot_mean_s": 0.01})


def test_fit_finds_memory_the_engine_holds_from_runs_that_queue_for_kv_cache():
    # 4 GiB less cache (a grid point) leaves ~20k tokens: 32 clients of 4,160 tokens queue for it,
    # 4 clients of 544 do not; runs replayed with it give it back, and a run that never fills
    # the cache informs nothing
    truth = replace(default_efficiencies(GPU), mem_reserved_gib=4.0)
    runs = []
    for isl, osl, c in [(4096, 64, 32), (512, 32, 4)]:
        r = _big_run(isl, osl, c)
        _, m = _replay(r, _profile(truth), record=False)
        runs.append(replace(r, measured=m))
    _, m0 = _replay(runs[0], _profile(default_efficiencies(GPU)), record=False)
    assert runs[0].measured["ttft_mean_s"] > 1.2 * m0["ttft_mean_s"]  # it does queue
    (f,) = fit_runs(runs, params=["mem_reserved_gib", "decode_time_scale"], held_out=False, rounds=2)
    assert "mem_reserved_gib" in f.fitted and not f.rejected
    assert f.params.mem_reserved_gib == 4.0
    assert f.summary()["after"]["ttft"] < 0.01
    (g,) = fit_runs(runs[1:], params=["mem_reserved_gib"], held_out=False, rounds=1)
    assert "mem_reserved_gib" in g.not_informed and g.params.mem_reserved_gib == 0.0


def test_memory_the_engine_holds_comes_out_of_the_kv_cache():
    from costmodel.memory import memory_plan
    from costmodel.model import CostModel

    base = default_efficiencies(GPU)
    a = memory_plan(CostModel("llama-3.1-8b", GPU, calibration=_profile(base)))
    b = memory_plan(CostModel("llama-3.1-8b", GPU, calibration=_profile(replace(base, mem_reserved_gib=2.5))))
    assert a.kv_bytes - b.kv_bytes == pytest.approx(2.5 * 2**30)
    assert b.reserved_bytes - a.reserved_bytes == pytest.approx(2.5 * 2**30)


def test_a_gpu_named_by_its_alias_is_calibrated_as_the_gpu():
    """`--gpu h100` names h100-sxm: the fit's replays must run at the values it fits (they did
    not: the profile was keyed 'h100', the cost model looked up 'h100-sxm', and every replay ran
    on the defaults while the fit reported its values)."""
    truth = replace(default_efficiencies(GPU), decode_time_scale=0.8, prefill_time_scale=1.25)
    runs = []
    for tp, isl, osl, c in [(1, 512, 32, 4), (1, 1024, 48, 16), (1, 256, 64, 32)]:
        r = _run(tp, isl, osl, c)
        _, m = _replay(r, _profile(truth), record=False)
        alias = Deployment.colocated("llama-3.2-1b", "h100", tp=tp)
        runs.append(replace(r, deployment=alias, measured=m))
    (f,) = fit_runs(runs, params=["decode_time_scale", "prefill_time_scale"], held_out=False)
    assert f.gpu == GPU
    assert f.params.decode_time_scale == pytest.approx(0.8, rel=0.1)
    s = f.summary()
    assert s["after"]["tpot"] < 0.02 < s["before"]["tpot"]  # the replays ran at the fitted values


def test_a_profile_keyed_by_an_alias_serves_the_gpu():
    from costmodel.model import CostModel
    from costmodel.specs import load_model

    slow = replace(default_efficiencies(GPU), decode_time_scale=2.0)
    prof = CalibrationProfile(gpus={"h100": GpuCalibration(slow, uncertainty_rel=0.1)})
    assert prof.efficiencies_for(GPU).decode_time_scale == 2.0
    assert prof.efficiencies_for("h100").decode_time_scale == 2.0
    assert prof.uncertainty_for(GPU) == 0.1
    assert prof.calibration_for("H100_SXM") is prof.gpus["h100"]
    assert prof.calibration_for("a100") is None
    m = load_model("llama-3.2-1b")
    slow_cm, base_cm = CostModel(m, "h100", calibration=prof), CostModel(m, GPU)
    assert slow_cm.eff.decode_time_scale == 2.0 and base_cm.eff.decode_time_scale == 1.0


def test_a_profile_naming_one_gpu_twice_is_refused():
    eff = default_efficiencies(GPU).to_dict()
    d = CalibrationProfile(gpus={GPU: GpuCalibration(default_efficiencies(GPU))}).to_dict()
    d["gpus"]["h100"] = {"params": eff}
    with pytest.raises(ServePlanError, match="gpus.h100-sxm and gpus.h100 both name h100-sxm"):
        CalibrationProfile.from_dict(d, "x.json")


def test_a_round_that_replays_worse_goes_back_and_takes_a_shorter_step(monkeypatch):
    """The surrogate is faithful near where it was recorded: a step its full replays do not
    confirm is taken back, and the next is solved within half its length."""
    import sim.runs.fit as fit_mod

    base = default_efficiencies(GPU)
    truth = replace(base, decode_time_scale=1.3)
    runs = _three_runs_measured_at(truth)
    radii = []

    def solve(surr, est, names, start, radius=np.inf):
        radii.append(radius)
        if len(radii) == 1:  # a first step far past the optimum: 4x slower decodes
            return replace(est, decode_time_scale=4.0)
        return replace(est, decode_time_scale=min(1.3, est.decode_time_scale * np.exp(radius)))

    monkeypatch.setattr(fit_mod, "_solve", solve)
    (f,) = fit_runs(runs, params=["decode_time_scale"], held_out=False, rounds=3)
    assert radii[0] == np.inf and radii[1] == pytest.approx(0.5 * np.log(4.0))
    assert not f.rejected and f.params.decode_time_scale == pytest.approx(1.3)
    assert f.summary()["after"]["tpot"] < 0.01


def test_the_printed_coverage_spread_is_that_of_the_interval():
    """`serveplan calibrate` prints how far an 80% interval's coverage of new runs scatters at
    the number of runs it came from: sqrt(0.8 x 0.2 / (n + 2)) (below 9 runs, the table
    SMALL_N_SPREAD), checked against drawing n errors, building the interval and measuring its
    coverage of many new draws."""
    from planner.cli.calibrate_runs import coverage_spread
    from sim.runs.fit import held_out_interval

    rng = np.random.default_rng(1)
    for n in (3, 5, 8, 14, 25):  # below 9: the normal prediction interval's spread
        cov = []
        for _ in range(1500):
            lo, hi = held_out_interval(rng.standard_normal(n))
            new = rng.standard_normal(300)
            cov.append(np.mean((new >= lo) & (new <= hi)))
        assert float(np.std(cov)) == pytest.approx(coverage_spread(n), rel=0.2), n


def test_residuals_keep_their_length_when_a_prediction_is_missing():
    # least squares needs one residual per measured key at every evaluation: a prediction that
    # is no positive number (no request left to average) counts as a miss, not as nothing
    from sim.runs.loss import NO_PREDICTION_S
    from sim.runs.loss import residuals as _residuals

    run = _run(1, 1000, 100, 16, {"ttft_mean_s": 0.5, "tpot_mean_s": 0.02})
    full = _residuals([{"ttft_mean_s": 0.5, "tpot_mean_s": 0.04}], [run])
    assert full == pytest.approx([0.0, np.log(2.0)])
    for bad in (float("nan"), 0.0, -1.0):
        r = _residuals([{"ttft_mean_s": 0.5, "tpot_mean_s": bad}], [run])
        assert r == pytest.approx([0.0, np.log(NO_PREDICTION_S / 0.02)])
    assert len(_residuals([{"ttft_mean_s": 0.5, "tpot_mean_s": 0.04}], [run], ("ttft",))) == 1


def test_a_run_fit_replaces_an_earlier_run_fit_s_messages_and_keeps_the_tables():
    from sim.runs.fit import RunsFit

    base = default_efficiencies(GPU)
    old = CalibrationProfile(source="tables", gpus={GPU: GpuCalibration(base)}, messages=[
        f"{GPU}: fitted gemm_compute_eff sits at its upper bound",  # an operator-table fit's
        f"{GPU} (engine runs): comm_bw_eff = 1 sits at its upper bound 1: ...",  # a run fit's
        f"{GPU} (engine runs): the runs do not inform comm_bw_eff; kept at their starting values",
        "other-gpu (engine runs): the runs do not inform host_overhead_s; kept"])
    f = RunsFit(GPU, base, base, ("decode_time_scale",), ("host_overhead_s",), [], {}, 1, 0.0)
    msgs = profile_of([f], base=old).messages
    assert msgs == [old.messages[0], old.messages[3],
                    f"{GPU} (engine runs): the runs do not inform host_overhead_s; kept at their "
                    "starting values"]


def test_a_parameter_at_its_upper_bound_is_probed_downward():
    # a profile whose run fit ended at a bound (comm_bw_eff = 1) is refitted from there: the
    # sensitivity probe must move it the way it can go, or the runs look uninformative
    from sim.runs.fit import SENSITIVITY, _informed

    class Surrogate:  # TPOT proportional to the decode kernel-speed scale
        def predict(self, eff):
            return {"tpot_mean_s": 0.01 * eff.decode_time_scale, "ttft_mean_s": 0.2}

    top = PARAM_BOUNDS["decode_time_scale"][1]
    for v in (1.0, top):
        at = replace(default_efficiencies(GPU), decode_time_scale=v)
        assert _informed([Surrogate()], at, ["decode_time_scale", "host_overhead_s"]) == ["decode_time_scale"]
    assert SENSITIVITY <= 1.0


def test_a_default_s_source_gives_way_to_the_runs_that_did_not_inform_it():
    from costmodel.arch_defaults import default_source
    from sim.runs.fit import RunsFit

    base = default_efficiencies(GPU)
    src = {"host_overhead_s": default_source(GPU, "host_overhead_s"),  # "an engine run sets it"
           "comm_bw_eff": "fit: 40 rows of nccl all_reduce"}
    start = CalibrationProfile(gpus={GPU: GpuCalibration(base, {}, 0.0, src)})
    f = RunsFit(GPU, base, base, ("decode_time_scale",), ("host_overhead_s", "comm_bw_eff"), [], {}, 1, 0.0)
    got = profile_of([f], base=start).gpus[GPU].sources
    assert got["host_overhead_s"].startswith("not informed by the runs: kept its starting value (default: ")
    assert got["comm_bw_eff"] == "fit: 40 rows of nccl all_reduce"


# what a stand-in replay returns as its SimResult: the fit reads only how many requests did not fit
_NO_REJECTS = SimpleNamespace(metrics=SimpleNamespace(num_rejected=0))


def test_a_longer_chunk_time_must_earn_what_one_more_parameter_costs(monkeypatch):
    # 18 runs, 36 residuals: a chunk time must cut the robust loss by 1 - exp(-2/36) = 5.4%
    # (Akaike's price of a parameter) to be taken. Replays stand in for the simulator here: each
    # run's log errors shrink by `drop` at the grid's top (200 us), as a fit on runs whose API
    # servers never back up can find (TP 4 at 16 and 64 clients: 6.5% at the start, 1.6%
    # between the two fit orders, benchmarks/RESULTS.md 2026-12-07)
    import sim.runs.fit as F

    assert F.stream_tol(36) == pytest.approx(1 - np.exp(-2 / 36))
    from sim.runs.loss import STREAM_TOL

    assert F.stream_tol(10_000) == STREAM_TOL and 0 < F.stream_tol(0) < 1
    runs = [_run(1, 256, 32, 4 + i) for i in range(18)]
    start = default_efficiencies(GPU)

    def fit_with(drop):
        def fake(run, prof, record):
            v = prof.gpus[GPU].params.frontend_stream_s
            shrink = 1 - drop * (v / F.STREAM_GRID_S[-1]) ** 4  # the loss falls only near the top
            return _NO_REJECTS, {k: m * np.exp(shrink) for k, m in run.measured.items()}
        monkeypatch.setattr(F, "_replay", fake)
        return F._fit_stream(GPU, runs, start, None, lambda m: None)[0].frontend_stream_s

    assert fit_with(0.03) == 0.0  # a 3% drop does not pay for the parameter
    assert fit_with(0.20) == F.STREAM_GRID_S[-1]  # a 20% drop does


def test_the_chunk_time_grid_stops_past_a_bottleneck_it_has_bracketed(monkeypatch):
    # the grid is replayed up to STREAM_SEARCH_TOP; the longer values (the slowest replays: the
    # API server backs every client up) only while the lowest loss sits on the largest value
    # replayed, and all of them while no value has moved a prediction yet
    import sim.runs.fit as F

    runs = [_run(1, 256, 32, 4 + i) for i in range(6)]
    start = default_efficiencies(GPU)

    def search(log_error):
        seen = []

        def fake(run, prof, record):
            v = prof.gpus[GPU].params.frontend_stream_s
            seen.append(v)
            return _NO_REJECTS, {k: m * np.exp(log_error(v)) for k, m in run.measured.items()}
        monkeypatch.setattr(F, "_replay", fake)
        est, informed = F._fit_stream(GPU, runs, start, None, lambda m: None)
        return est.frontend_stream_s, informed, sorted(set(seen))

    top = F.STREAM_SEARCH_TOP
    inside = [v for v in F.STREAM_GRID_S if v <= top]
    # runs 30% slow at 0 us, exact at 40 us, then slower again: 120 and 200 us never replayed
    v, informed, seen = search(lambda v: abs(v - 40e-6) / 40e-6 * 0.3)
    assert (v, informed, seen) == (40e-6, True, inside)
    # the loss still falling at the search's top: the grid goes on, one value at a time
    v, informed, seen = search(lambda v: 0.3 * (1 - v / 120e-6) if v <= 120e-6 else 0.3 * (v / 120e-6 - 1))
    assert (v, informed, seen) == (120e-6, True, list(F.STREAM_GRID_S))
    # no value moves a prediction: the whole grid, and not informed
    v, informed, seen = search(lambda v: 0.0)
    assert (v, informed, seen) == (start.frontend_stream_s, False, list(F.STREAM_GRID_S))


def test_runs_that_measured_percentiles_give_intervals_of_their_own():
    # runs whose files carry medians and p99s (vllm bench serve's summary) get held-out
    # intervals of those statistics beside the means' once nine runs measured them (below
    # that the 10% and 90% order statistics are the least and most error); the profile keeps
    # them and reads them back
    import sim.runs.fit as F

    truth = replace(default_efficiencies(GPU), prefill_time_scale=1.3)
    keys = ("ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "tpot_mean_s", "tpot_p50_s")
    shapes = [(1, 512, 64, 4), (1, 1024, 32, 8), (2, 512, 48, 16), (2, 2048, 32, 4), (1, 256, 64, 12),
              (1, 768, 40, 6), (2, 1024, 24, 10), (1, 384, 56, 14), (2, 640, 32, 8)]
    runs = []
    for i, (tp, isl, osl, c) in enumerate(shapes):
        r = _run(tp, isl, osl, c, measured={k: 1.0 for k in keys})
        _, m = _replay(r, _profile(truth), record=False)
        # the last run's file had no p99: eight runs measured it
        have = keys if i < len(shapes) - 1 else tuple(k for k in keys if k != "ttft_p99_s")
        runs.append(replace(r, measured={k: m[k] * (1.0 + 0.03 * (-1) ** i) for k in have}))
    assert F.PERCENTILE_MIN_RUNS == 9
    (f,) = fit_runs(runs, params=["prefill_time_scale", "decode_time_scale"], rounds=2)
    assert set(f.interval) == {"ttft", "ttft_p50", "tpot", "tpot_p50"}  # no ttft_p99: 8 runs
    for k, (lo, hi) in f.interval.items():
        assert -0.5 < lo <= hi < 0.5, k
    prof = CalibrationProfile.from_dict(profile_of([f]).to_dict())
    assert prof.gpus[GPU].latency_interval == {k: list(v) for k, v in f.interval.items()}
    bad = profile_of([f]).to_dict()
    bad["gpus"][GPU]["latency_interval"]["ttft_p42"] = [-0.1, 0.1]
    with pytest.raises(ServePlanError, match="latency_interval.ttft_p42: not a statistic"):
        CalibrationProfile.from_dict(bad)
    alone = profile_of([f]).to_dict()
    del alone["gpus"][GPU]["latency_interval"]["tpot"]
    with pytest.raises(ServePlanError, match="latency_interval.tpot_p50 without tpot"):
        CalibrationProfile.from_dict(alone)
