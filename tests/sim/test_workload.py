"""Workload strings, trace formats, arrival processes, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel.errors import ServePlanError
from sim import generate_requests, length_stats, parse_workload
from sim.workload import with_load


def rng(seed=0):
    return np.random.default_rng(seed)


def test_poisson_and_gamma_rates_and_burstiness():
    for cv in (1.0, 3.0):
        w = parse_workload("fixed:100,10", rate=20.0, burstiness_cv=cv)
        assert w.arrival == ("poisson" if cv == 1.0 else "gamma")
        t = generate_requests(w, 40_000, rng()).arrival_s
        gaps = np.diff(t)
        assert 1 / gaps.mean() == pytest.approx(20.0, rel=0.03)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_evenly_spaced_arrivals():
    # cv 0: the gamma's limit as its shape grows (vLLM --burstiness inf, aiperf constant)
    w = parse_workload("fixed:100,10", rate=4.0, burstiness_cv=0.0)
    assert w.arrival == "gamma"
    t = generate_requests(w, 5, rng()).arrival_s
    assert np.allclose(t, [0.25, 0.5, 0.75, 1.0, 1.25])
    assert with_load(w, rate=8.0).burstiness_cv == 0.0
    for bad in (-0.1, float("nan"), 21):
        with pytest.raises(ServePlanError, match=r"\[0, 20\]"):
            parse_workload("fixed:100,10", rate=4.0, burstiness_cv=bad)


def test_trace_replay_rescaled_and_wrapped(shared):
    w = parse_workload("azure-conv", rate=11.06)
    assert w.arrival == "trace" and w.trace.num_requests == 19366
    own = parse_workload("azure-conv")
    assert own.trace.rate_rps == pytest.approx(5.53, rel=0.01)
    a = generate_requests(w, 25_000, rng())
    b = generate_requests(own, 25_000, rng())
    # the replayed stretch itself arrives at the target mean rate, keeping the trace's shape:
    # every gap is the trace's own gap times one factor
    assert (len(a) - 1) / a.arrival_s[-1] == pytest.approx(11.06, rel=1e-9)
    factor = (b.arrival_s[-1] - b.arrival_s[0]) / a.arrival_s[-1]
    assert np.allclose(a.arrival_s, (b.arrival_s - b.arrival_s[0]) / factor)
    assert (a.input_len[:19366] == own.trace.input_len).all()
    assert (a.input_len[19366:] == own.trace.input_len[:25_000 - 19366]).all()
    assert np.all(np.diff(a.arrival_s) >= 0)
    # a short replay of a bursty trace is rescaled to the rate too, not left at its local rate
    short = generate_requests(w, 300, rng()).arrival_s
    assert 299 / short[-1] == pytest.approx(11.06, rel=1e-9)


def test_trace_lengths_resampled_under_poisson_and_lengths_only_trace(shared):
    w = parse_workload("arxiv", rate=3.0)
    assert w.arrival == "poisson" and w.trace.arrival_s is None
    a = generate_requests(w, 5000, rng())
    assert np.isin(a.input_len, w.trace.input_len).all()
    s = length_stats(w)
    assert s["input_mean"] == pytest.approx(w.trace.input_len.mean())
    with pytest.raises(ServePlanError, match="needs a rate"):
        parse_workload("arxiv")


def test_mooncake_hashes_and_wrap_gets_fresh_ids(shared):
    w = parse_workload("mooncake-synthetic")
    n = w.trace.num_requests
    a = generate_requests(w, n + 10, rng())
    assert a.hash_ids is not None and len(a.hashes(0)) == -(-a.input_len[0] // 512)
    assert set(a.hashes(n).tolist()).isdisjoint(a.hashes(0).tolist())


def test_length_stats_closed_forms():
    assert length_stats(parse_workload("fixed:1024,128", rate=1.0))["output_p90"] == 128
    u = length_stats(parse_workload("uniform:100-300,10-20", rate=1.0))
    assert u["input_mean"] == 200 and u["input_p90"] == pytest.approx(280)
    ln = parse_workload("lognormal:1000,200,0.5", rate=1.0)
    s = length_stats(ln)
    x = generate_requests(ln, 200_000, rng()).input_len
    assert x.mean() == pytest.approx(s["input_mean"], rel=0.01)
    assert np.percentile(x, 90) == pytest.approx(s["input_p90"], rel=0.01)


def test_closed_loop_and_exactly_one_of_rate_concurrency():
    w = parse_workload("fixed:1024,1024", concurrency=64)
    assert w.closed_loop and (generate_requests(w, 10, rng()).arrival_s == 0).all()
    with pytest.raises(ServePlanError, match="not both"):
        parse_workload("fixed:1,1", rate=1.0, concurrency=2)
    with pytest.raises(ServePlanError, match="needs a rate"):
        parse_workload("fixed:1,1")


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf")])
def test_bad_rate(rate):
    with pytest.raises(ServePlanError, match="rate"):
        parse_workload("fixed:10,10", rate=rate)


@pytest.mark.parametrize("spec", ["fixed:10", "fixed:-5,10", "fixed:a,b", "zipf:1,2", "uniform:5-1,1-2", ""])
def test_bad_workload_strings(spec):
    with pytest.raises(ServePlanError, match="workload"):
        parse_workload(spec, rate=1.0)


def test_unknown_trace_format_names_file_and_line(tmp_path):
    p = tmp_path / "odd.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ServePlanError, match=rf"{p}.* line 1: unknown trace format"):
        parse_workload(f"trace:{p}", rate=1.0)


def test_negative_length_names_file_and_line(tmp_path):
    p = tmp_path / "neg.csv"
    p.write_text("input_len,output_len\n10,5\n20,6\n30,-4\n")
    with pytest.raises(ServePlanError, match=rf"{p} line 4: .*-4"):
        parse_workload(f"trace:{p}", rate=1.0)
    az = tmp_path / "az.csv"
    az.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,5\n"
                  "2023-11-16 18:15:47.00,-3,5\n")
    with pytest.raises(ServePlanError, match=rf"{az} line 3"):
        parse_workload(f"trace:{az}")
    mc = tmp_path / "m.jsonl"
    mc.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [1]}\n'
                  '{"timestamp": 5, "input_length": 5, "output_length": 0, "hash_ids": [1]}\n')
    with pytest.raises(ServePlanError, match=rf"{mc} line 2"):
        parse_workload(f"trace:{mc}")


def test_missing_trace_file_and_bad_azure_timestamp(tmp_path):
    with pytest.raises(ServePlanError, match="not found"):
        parse_workload(f"trace:{tmp_path / 'nope.csv'}", rate=1.0)
    az = tmp_path / "az.csv"
    az.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,5\nyesterday,3,5\n")
    with pytest.raises(ServePlanError, match=rf"{az} line 3: TIMESTAMP"):
        parse_workload(f"trace:{az}")


def test_with_load_switches_between_open_and_closed_loop():
    wl = parse_workload("fixed:128,16", rate=1.0)
    closed = with_load(wl, concurrency=8)
    assert closed.arrival == "closed" and closed.concurrency == 8 and closed.rate_rps is None
    again = with_load(closed, rate=3.0)
    assert again.arrival == "poisson" and again.rate_rps == 3.0
    with pytest.raises(ValueError, match="rate"):
        with_load(wl, rate=0.0)
