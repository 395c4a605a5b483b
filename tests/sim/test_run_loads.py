"""How run files say their load and lengths, across the tools' versions: arrival patterns
(aiperf's arrival_pattern and config-v2 phases, GenAI-Perf's perf_analyzer default, vLLM's
burstiness inf), the clients' default burst (rate inf, no cap), and SGLang's per-request lists
and token totals as its newer summary writes them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from costmodel.errors import ServePlanError
from sim.runs import load_runs

FIX = Path(__file__).parent / "fixtures" / "runs"
L8B = {"model": "llama-3.1-8b", "gpu": "h200-sxm", "tp": 1, "precision": "fp8", "kv_dtype": "fp8"}


def _doc(name: str) -> dict:
    text = (FIX / name).read_text()
    return json.loads(text.splitlines()[0] if name.endswith(".jsonl") else text)


def _write(tmp_path, name: str, d: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d) + "\n")
    return p


def _aiperf(tmp_path, input_config: dict):
    d = _doc("profile_export_aiperf.json") | {"input_config": input_config}
    (run,) = load_runs(_write(tmp_path, "a.json", d), "aiperf", deployment=L8B, engine="sglang")
    return run


@pytest.mark.parametrize("loadgen, cv, note", [
    ({"arrival_pattern": "poisson"}, 1.0, None),
    ({"arrival_pattern": "constant"}, 0.0, "evenly spaced arrivals"),
    ({"request_rate_mode": "constant"}, 0.0, "evenly spaced arrivals"),  # older aiperf
    ({"arrival_pattern": "gamma", "arrival_smoothness": 0.25}, 2.0, "smoothness 0.25 (CV 2)"),
    ({"arrival_smoothness": 4.0}, 0.5, "gamma arrivals"),  # aiperf reads a bare smoothness as gamma
    ({"arrival_pattern": "gamma"}, 1.0, "smoothness 1"),
    ({}, 1.0, "Poisson arrivals (aiperf's default"),
])
def test_aiperf_arrival_patterns(tmp_path, loadgen, cv, note):
    run = _aiperf(tmp_path, {"loadgen": {"request_rate": 20.0} | loadgen})
    assert (run.rate_rps, run.concurrency, run.burstiness_cv) == (20.0, None, cv)
    assert note is None or note in run.note
    gaps = np.diff(_arrivals(run))
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.1 * max(cv, 0.5))


def _arrivals(run, n=20_000):
    from sim import generate_requests
    return generate_requests(run.to_workload(), n, np.random.default_rng(0)).arrival_s


def test_aiperf_bad_smoothness(tmp_path):
    with pytest.raises(ServePlanError, match="arrival_smoothness=0; expected a gamma shape > 0"):
        _aiperf(tmp_path, {"loadgen": {"request_rate": 20.0, "arrival_pattern": "gamma",
                                       "arrival_smoothness": 0}})


def test_aiperf_config_v2_reads_the_profiling_phase(tmp_path):
    warmup = {"name": "warmup", "kind": "warmup", "type": "concurrency", "requests": 64, "concurrency": 64}
    prof = {"name": "profiling", "kind": "profiling", "type": "concurrency", "requests": 640,
            "concurrency": 352}
    models = {"items": [{"name": "meta-llama/Llama-3.1-8B-Instruct"}]}
    run = _aiperf(tmp_path, {"models": models, "phases": [warmup, prof]})
    assert (run.concurrency, run.rate_rps) == (352, None)
    rate = {"name": "steady", "kind": "profiling", "type": "gamma", "rate": 17.5, "smoothness": 4.0}
    run = _aiperf(tmp_path, {"phases": [warmup, rate]})
    assert (run.concurrency, run.rate_rps, run.burstiness_cv) == (None, 17.5, 0.5)
    for phases, msg in (([warmup], "holds 0 profiling phases"), ([prof, prof], "holds 2 profiling"),
                        ([prof | {"type": "user_centric"}], "type='user_centric'")):
        with pytest.raises(ServePlanError, match=msg):
            _aiperf(tmp_path, {"phases": phases})
    # the model the phases' config names is checked against the deployment
    with pytest.raises(ServePlanError, match="the file ran model"):
        _aiperf(tmp_path, {"models": {"items": [{"name": "Qwen/Qwen3-32B"}]}, "phases": [prof]})


def test_genai_perf_rate_is_evenly_spaced_unless_named(tmp_path):
    d = _doc("profile_export_genai_perf.json")
    own = d["input_config"] | {"concurrency": None}
    for args, cv in (({"request_rate": 105.0}, 0.0),
                     ({"request_rate": 105.0, "request_distribution": "poisson"}, 1.0)):
        d["input_config"] = own | args
        (run,) = load_runs(_write(tmp_path, "g.json", d), "aiperf", engine="sglang",
                           deployment=L8B | {"tp": 8})
        assert (run.rate_rps, run.burstiness_cv) == (105.0, cv)
        assert cv or "perf_analyzer's default request distribution" in run.note


def test_a_throughput_above_the_rate_is_refused(tmp_path):
    # 1600 requests at 20/s span 1599 gaps, at most 4 x sqrt(1599) = 160 gaps short:
    # 20 x 1600 / 1439 = 22.2/s
    d = _doc("vllm_bench_llama8b_c160.json") | {"request_rate": 20.0, "max_concurrency": None}
    with pytest.raises(ServePlanError, match=r"request_throughput 37.35/s is above what 1600 requests "
                                              r"at the request rate 20/s can reach \(22.2/s\)"):
        load_runs(_write(tmp_path, "v.json", d), "vllm-bench", deployment=L8B)
    (run,) = load_runs(_write(tmp_path, "v.json", d | {"request_throughput": 21.5}), "vllm-bench",
                       deployment=L8B)
    assert run.rate_rps == 20.0
    # bursty gaps (CV 3.2) and few requests measure far above their rate, honestly
    few = d | {"num_prompts": 200, "completed": 200, "request_rate": 10.0, "burstiness": 0.1,
               "request_throughput": 13.5, "total_input_tokens": 200_000, "total_output_tokens": 20_000}
    (run,) = load_runs(_write(tmp_path, "v.json", few), "vllm-bench", deployment=L8B)
    assert run.rate_rps == 10.0


def test_open_loop_ceiling_holds_for_honest_runs():
    # Monte Carlo: n requests at rate 1 whose clients sleep a gap before each request after
    # the first; the measured throughput (n over the span) stays under the ceiling
    from sim.runs.loads import open_loop_ceiling

    rng = np.random.default_rng(0)
    for n, cv in ((5, 1.0), (10, 1.0), (100, 1.0), (100, 3.0), (1000, 3.0), (2000, 1.0)):
        shape = 1 / cv**2
        spans = rng.gamma(shape, 1 / shape, (4000, n - 1)).sum(axis=1)
        refused = np.mean(n / spans > open_loop_ceiling(1.0, n, cv))
        assert refused < 0.002, (n, cv, refused)


def test_aiperf_units_checked_by_littles_law(tmp_path):
    d = _doc("profile_export_aiperf.json") | {"input_config": {"loadgen": {"concurrency": 352}}}
    d["request_latency"] = d["request_latency"] | {"unit": "s"}  # values in ms, labelled s
    with pytest.raises(ServePlanError, match="Little's law.*Do the metrics' units match"):
        load_runs(_write(tmp_path, "a.json", d), "aiperf", deployment=L8B, engine="sglang")


def test_vllm_burstiness_inf_is_evenly_spaced(tmp_path):
    d = _doc("vllm_bench_llama8b_c160.json") | {"request_rate": 20.0, "max_concurrency": None,
                                                 "burstiness": "inf", "request_throughput": 19.9}
    (run,) = load_runs(_write(tmp_path, "v.json", d), "vllm-bench", deployment=L8B)
    assert (run.rate_rps, run.burstiness_cv) == (20.0, 0.0)
    assert np.allclose(np.diff(_arrivals(run, 10)), 0.05)


@pytest.mark.parametrize("name, fmt, drop", [
    ("vllm_bench_llama8b_c160.json", "vllm-bench", ()),
    ("sglang_bench_llama8b.jsonl", "sglang-bench", ("max_concurrent_requests",)),
])
def test_the_clients_default_burst_is_one_request_per_client(tmp_path, name, fmt, drop):
    # rate inf and no cap: every prompt sent at t = 0
    d = {k: v for k, v in _doc(name).items() if k not in drop} | {"max_concurrency": None,
                                                                  "request_rate": math.inf}
    (run,) = load_runs(_write(tmp_path, "b.json", d), fmt, deployment=L8B)
    assert (run.concurrency, run.rate_rps, run.num_requests) == (1600, None, 1600)
    assert "all 1600 requests sent at once" in run.note


def test_sglang_lists_under_details_and_short_totals(tmp_path):
    d = _doc("sglang_bench_llama8b.jsonl")
    n = 1600
    ins, outs = [999] * (n - 1) + [500], [100] * n
    newer = {k: v for k, v in d.items() if not k.startswith("total_input") and
             not k.startswith("total_output")}
    newer |= {"total_input": sum(ins), "total_output": sum(outs),
              "details": {"input_lens": ins, "output_lens": outs, "errors": [""] * n}}
    (run,) = load_runs(_write(tmp_path, "s.jsonl", newer), "sglang-bench", deployment=L8B)
    assert run.input_lens is not None and run.input_lens[-1] == 500 and run.num_requests == n
    # no lists: the token totals under their newer names
    del newer["details"]
    newer["dataset_name"] = "sharegpt"
    (run,) = load_runs(_write(tmp_path, "s.jsonl", newer), "sglang-bench", deployment=L8B)
    assert run.workload == f"fixed:{round(sum(ins) / n)},100"


def test_sglang_random_lengths_as_the_totals_say(tmp_path):
    d = _doc("sglang_bench_llama8b.jsonl")
    (run,) = load_runs(_write(tmp_path, "s.jsonl", d | {"total_input_tokens": 999 * 1600}),
                       "sglang-bench", deployment=L8B)
    assert run.workload == "fixed:999,100" and "random_input_len 1000" in run.note
    # settings that disagree with the totals: the totals stand
    (run,) = load_runs(_write(tmp_path, "s.jsonl", d | {"random_input_len": 4000}),
                       "sglang-bench", deployment=L8B)
    assert run.workload == "fixed:1000,100"
    # a range: kept while the totals' means sit at its middle, else the totals with a note
    d = d | {"random_range_ratio": 0.5, "total_input_tokens": 750 * 1600, "total_output_tokens": 75 * 1600}
    (run,) = load_runs(_write(tmp_path, "s.jsonl", d), "sglang-bench", deployment=L8B)
    assert run.workload == "uniform:500-1000,50-100"
    (run,) = load_runs(_write(tmp_path, "s.jsonl", d | {"total_input_tokens": 400 * 1600}),
                       "sglang-bench", deployment=L8B)
    assert run.workload == "fixed:400,75" and "disagree with them" in run.note


def test_an_aiperf_csv_with_a_rate_is_poisson_with_a_note(tmp_path):
    (run,) = load_runs(FIX / "profile_export_aiperf.csv", "aiperf", deployment=L8B, engine="sglang",
                       rate_rps=17.2)
    assert (run.rate_rps, run.burstiness_cv) == (17.2, 1.0)
    assert "the file says neither which tool wrote it" in run.note


@pytest.mark.parametrize("where, settings", [
    ("loadgen", {"request_rate": 10.0, "request_rate_ramp_duration": 120}),
    ("loadgen", {"concurrency": 352, "prefill_concurrency": 8}),
    ("phases", [{"name": "profiling", "type": "poisson", "rate": 10.0, "rate_ramp": 120}]),
    ("phases", [{"name": "profiling", "type": "concurrency", "concurrency": 352, "concurrency_ramp": 60}]),
])
def test_aiperf_loads_that_changed_during_the_run_are_refused(tmp_path, where, settings):
    with pytest.raises(ServePlanError, match="the load was not one steady concurrency or rate"):
        _aiperf(tmp_path, {where: settings})


def test_genai_perf_units_are_checked_with_its_request_count(tmp_path):
    d = _doc("profile_export_genai_perf.json")
    d["request_latency"] = d["request_latency"] | {"unit": "s"}
    with pytest.raises(ServePlanError, match="Little's law"):
        load_runs(_write(tmp_path, "g.json", d), "aiperf", engine="sglang", deployment=L8B | {"tp": 8})


def test_sglang_uniform_lengths_survive_their_draw(tmp_path):
    # 100 requests drawn as SGLang draws them (ratio 0.1 of 4000 / 1000): the totals' means
    # wander from the range's middle by their standard error, and the range stands
    rng = np.random.default_rng(1)
    d = _doc("sglang_bench_llama8b.jsonl") | {"random_input_len": 4000, "random_output_len": 1000,
                                              "random_range_ratio": 0.1, "completed": 100,
                                              "max_concurrency": 160}
    kept = 0
    for _ in range(20):
        ins, outs = rng.integers(400, 4001, 100), rng.integers(100, 1001, 100)
        run_d = d | {"total_input_tokens": int(ins.sum()), "total_output_tokens": int(outs.sum())}
        (run,) = load_runs(_write(tmp_path, "s.jsonl", run_d), "sglang-bench", deployment=L8B)
        kept += run.workload == "uniform:400-4000,100-1000"
    assert kept == 20
