"""Readers of benchmark-client result files: vllm bench serve, SGLang bench_serving, aiperf and
GenAI-Perf, read into MeasuredRuns and replayed.

The fixture files (tests/sim/fixtures/runs, README there) hold rows of
../shared/data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv in each tool's schema; bad inputs
are those files edited in tmp_path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from costmodel.errors import ServePlanError
from sim import parse_workload, simulate
from sim.deployment import Deployment, PoolConfig
from sim.runs import load_runs
from sim.runs.replay import replay

FIX = Path(__file__).parent / "fixtures" / "runs"
# the deployment of the fixture rows: Llama-3.1-8B-Instruct on H200, fp8 weights and KV cache
L8B = {"model": "llama-3.1-8b", "gpu": "h200-sxm", "tp": 1, "precision": "fp8", "kv_dtype": "fp8"}


def _doc(name: str) -> dict:
    return json.loads((FIX / name).read_text())


def _write(tmp_path, name: str, *docs) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    return p


def test_vllm_summary_is_the_run_as_it_ran():
    (run,) = load_runs(FIX / "vllm_bench_llama8b_c160.json", "vllm-bench", deployment=L8B)
    assert (run.engine, run.engine_version, run.run_id) == ("vllm", "", "1")
    assert (run.workload, run.concurrency, run.rate_rps, run.num_requests) == ("fixed:1000,100", 160, None, 1600)
    # ms -> s; median -> p50; the mean E2E is TTFT + 99 TPOT of the CSV row
    assert run.measured["ttft_mean_s"] == pytest.approx(1.61227)
    assert run.measured["tpot_mean_s"] == pytest.approx(0.02698)
    assert run.measured["ttft_p50_s"] == pytest.approx(1.61227)
    assert run.measured["ttft_p99_s"] == pytest.approx(1.25 * 1.61227)
    assert run.measured["e2e_mean_s"] == pytest.approx(1.61227 + 99 * 0.02698)
    assert "ttft_p90_s" not in run.measured  # vLLM writes p99 only by default
    assert "means of total_input_tokens and total_output_tokens" in run.note


def test_vllm_detailed_keeps_each_successful_requests_lengths():
    (run,) = load_runs(FIX / "vllm_bench_llama8b_detailed.json", "vllm-bench", deployment=L8B)
    # request 3 failed (output 0, an error): the other 7 keep their lengths, in file order
    assert run.input_lens == (1000, 812, 950, 640, 1000, 1000, 733)
    assert run.output_lens == (100, 87, 100, 64, 100, 91, 100)
    assert run.workload == "per-request:876,92" and run.num_requests == 8
    assert run.mean_lengths == pytest.approx((np.mean(run.input_lens), np.mean(run.output_lens)))
    w = run.to_workload()
    assert (w.lengths, w.concurrency) == ("trace", 4)
    assert w.trace.input_len.tolist() == list(run.input_lens)


def test_vllm_detailed_lengths_all_alike_are_fixed(tmp_path):
    d = _doc("vllm_bench_llama8b_detailed.json")
    d.update(input_lens=[1000] * 8, output_lens=[100] * 7 + [0], total_input_tokens=7000,
             total_output_tokens=700)
    d["errors"] = [""] * 7 + ["timeout"]
    (run,) = load_runs(_write(tmp_path, "r.json", d), "vllm-bench", deployment=L8B)
    assert run.workload == "fixed:1000,100" and run.input_lens is None


def test_vllm_open_loop_keeps_its_rate_and_burstiness(tmp_path):
    d = _doc("vllm_bench_llama8b_c160.json") | {"max_concurrency": None, "request_rate": 20.0,
                                                 "request_throughput": 19.6,
                                                  "burstiness": 4.0}
    (run,) = load_runs(_write(tmp_path, "r.json", d), "vllm-bench", deployment=L8B)
    # vLLM draws gaps from a gamma of shape `burstiness`: coefficient of variation 1/sqrt(4)
    assert (run.concurrency, run.rate_rps, run.burstiness_cv) == (None, 20.0, 0.5)
    assert run.to_workload().arrival == "gamma"


@pytest.mark.parametrize("throughput, conc, rate", [(19.5, None, 20.0), (9.0, 160, None)])
def test_rate_under_a_concurrency_cap_is_whichever_bound(tmp_path, throughput, conc, rate):
    d = _doc("vllm_bench_llama8b_c160.json") | {"request_rate": 20.0, "request_throughput": throughput}
    (run,) = load_runs(_write(tmp_path, "r.json", d), "vllm-bench", deployment=L8B)
    assert (run.concurrency, run.rate_rps) == (conc, rate)
    assert ("never bound" if rate else "the cap bound") in run.note


def test_vllm_appended_results_are_one_run_per_line(tmp_path):
    a = _doc("vllm_bench_llama8b_c160.json")
    # 8 clients: the throughput scaled with them, as Little's law asks (test_little_s_law_...)
    b = a | {"max_concurrency": 8, "request_throughput": a["request_throughput"] * 8 / 160,
             "backend": "openai-chat"}
    runs = load_runs(_write(tmp_path, "r.json", a, b), "vllm-bench", deployment=L8B)
    assert [(r.run_id, r.concurrency) for r in runs] == [("1", 160), ("2", 8)]
    assert "engine vllm (the file does not say" in runs[1].note  # backend openai names no engine


def test_sglang_lines_are_runs_with_version_and_fixed_lengths():
    f = FIX / "sglang_bench_llama8b.jsonl"  # run 1 on TP1, run 2 on TP2 (server_info.tp_size)
    runs = load_runs(f, "sglang-bench", deployment=L8B, runs=[1]) + load_runs(
        f, "sglang-bench", deployment=L8B | {"tp": 2}, runs=[2])
    assert [(r.run_id, r.concurrency, r.num_requests, r.deployment.pools[0].tp) for r in runs] == [
        ("1", 160, 1600, 1), ("2", 240, 2400, 2)]
    r2 = runs[1]
    assert (r2.engine, r2.engine_version, r2.workload) == ("sglang", "0.5.6.post2", "fixed:1000,100")
    assert r2.measured["ttft_mean_s"] == pytest.approx(0.66904)
    assert r2.measured["tpot_mean_s"] == pytest.approx(0.03062)
    assert r2.measured["e2e_p50_s"] == pytest.approx(0.66904 + 99 * 0.03062)
    assert "range ratio 1" in r2.note


@pytest.mark.parametrize("edit, workload", [
    # totals at the range's middle, as such a run sends
    ({"random_range_ratio": 0.5, "total_input_tokens": 1600 * 750, "total_output_tokens": 1600 * 75},
     "uniform:500-1000,50-100"),
    ({"random_range_ratio": 0.0, "total_input_tokens": 1600 * 500, "total_output_tokens": 1600 * 50},
     "uniform:1-1000,1-100"),  # SGLang's default: [1, L]
    ({"dataset_name": "sharegpt", "total_input_tokens": 1600 * 412}, "fixed:412,100"),
])
def test_sglang_lengths_follow_its_dataset(tmp_path, edit, workload):
    line = json.loads((FIX / "sglang_bench_llama8b.jsonl").read_text().splitlines()[0]) | edit
    (run,) = load_runs(_write(tmp_path, "s.jsonl", line), "sglang-bench", deployment=L8B)
    assert run.workload == workload


def test_sglang_against_a_vllm_server_is_a_vllm_run(tmp_path):
    line = json.loads((FIX / "sglang_bench_llama8b.jsonl").read_text().splitlines()[0])
    line = line | {"backend": "vllm", "server_info": None, "max_concurrency": None, "request_rate": 8,
                   "request_throughput": 7.9}
    (run,) = load_runs(_write(tmp_path, "s.jsonl", line), "sglang-bench", deployment=L8B)
    assert (run.engine, run.engine_version, run.rate_rps) == ("vllm", "", 8.0)


def test_aiperf_layouts_read_the_same_run():
    kw = {"deployment": L8B, "engine": "sglang", "engine_version": "0.5.6.post2"}
    cur = load_runs(FIX / "profile_export_aiperf.json", "aiperf", **kw)[0]
    early = load_runs(FIX / "profile_export_aiperf_early.json", "aiperf", **kw)[0]
    csv = load_runs(FIX / "profile_export_aiperf.csv", "aiperf", concurrency=352, **kw)[0]
    for r in (cur, early, csv):
        assert (r.workload, r.concurrency, r.num_requests) == ("fixed:1000,500", 352, 3520)
        assert r.measured["ttft_mean_s"] == pytest.approx(0.90711)
        assert r.measured["tpot_mean_s"] == pytest.approx(0.03934)  # inter_token_latency: a TPOT
    assert cur.measured["ttft_p90_s"] == pytest.approx(1.15 * 0.90711)
    # the CSV rounds to 2 decimals of a ms; the early layout has no inter_chunk_latency
    assert csv.measured == pytest.approx(cur.measured, abs=6e-6)
    assert early.measured == {k: v for k, v in cur.measured.items() if not k.startswith("itl")}


def test_genai_perf_load_from_its_arguments(tmp_path):
    (run,) = load_runs(FIX / "profile_export_genai_perf.json", "aiperf", engine="sglang",
                       deployment=L8B | {"tp": 8})
    assert (run.concurrency, run.workload, run.num_requests) == (448, "fixed:1000,100", 4480)  # input_config.request_count
    assert run.measured["tpot_mean_s"] == pytest.approx(0.03408)
    d = _doc("profile_export_genai_perf.json")
    d["input_config"] = {"perf_analyzer": {"stimulus": {"concurrency": 64}}}
    (run,) = load_runs(_write(tmp_path, "g.json", d), "aiperf", engine="vllm", deployment=L8B)
    assert run.concurrency == 64


@pytest.mark.parametrize("unit, scale", [("ns", 1e-9), ("us", 1e-6), ("sec", 1.0), ("ms", 1e-3)])
def test_aiperf_times_convert_by_their_unit(tmp_path, unit, scale):
    d = _doc("profile_export_aiperf.json")
    d["time_to_first_token"] = {"unit": unit, "avg": 0.90711 / scale}
    (run,) = load_runs(_write(tmp_path, "a.json", d), "aiperf", engine="sglang", deployment=L8B)
    assert run.measured["ttft_mean_s"] == pytest.approx(0.90711)
    d["time_to_first_token"] = {"unit": "ns", "avg": 907.11}  # 0.9 us: no TTFT is that short
    with pytest.raises(ServePlanError, match="ttft_mean_s = 9.07e-07 s; a latency lies between"):
        load_runs(_write(tmp_path, "b.json", d), "aiperf", engine="sglang", deployment=L8B)


def _edited(tmp_path, name, fn):
    if name.endswith(".csv"):
        p = tmp_path / name
        p.write_text(fn((FIX / name).read_text()))
        return p
    if name.endswith(".jsonl"):
        return _write(tmp_path, name, fn(json.loads((FIX / name).read_text().splitlines()[0])))
    return _write(tmp_path, name, fn(_doc(name)))


def _drop(key):
    return lambda d: {k: v for k, v in d.items() if k != key}


V, S, A = "vllm_bench_llama8b_c160.json", "sglang_bench_llama8b.jsonl", "profile_export_aiperf.json"
BAD = [
    (V, "vllm-bench", _drop("mean_ttft_ms"), {}, "missing field 'mean_ttft_ms'"),
    (V, "vllm-bench", lambda d: d | {"completed": 0}, {}, "completed=0"),
    (V, "vllm-bench", lambda d: d | {"mean_tpot_ms": 0.0}, {}, "mean_tpot_ms=0.0"),
    (V, "vllm-bench", lambda d: d | {"mean_ttft_ms": "fast"}, {}, "mean_ttft_ms='fast'"),
    (V, "vllm-bench", lambda d: _drop("request_rate")(d) | {"max_concurrency": None}, {},
     "no concurrency and no finite"),
    (V, "vllm-bench", lambda d: d | {"ramp_up_strategy": "linear"}, {}, "ramp_up_strategy='linear'"),
    (V, "vllm-bench", _drop("total_output_tokens"), {}, "missing field 'total_output_tokens'"),
    (V, "vllm-bench", lambda d: d | {"input_lens": [1000] * 3, "output_lens": [100] * 3},
     {}, "hold 3 successful requests but completed=1600"),
    (V, "vllm-bench", lambda d: d | {"input_lens": [1000, 9], "output_lens": [100]}, {},
     "input_lens has 2 requests, output_lens 1"),
    (V, "vllm-bench", lambda d: d, {"concurrency": 8}, "concurrency is 160 but 8 was given"),
    (V, "vllm-bench", lambda d: d, {"deployment": None}, "do not say which deployment"),
    (V, "vllm-bench", lambda d: d, {"deployment": L8B | {"model": "qwen3-8b"}},
     "ran model 'meta-llama/Llama-3.1-8B-Instruct' (llama-3.1-8b) but the deployment given is qwen3-8b"),
    (V, "vllm-bench", _drop("model_id"),
     {"deployment": {"model": "llama-3.1-70b", "gpu": "h100", "precision": "bf16"}}, "does not fit"),
    (V, "vllm-bench", lambda d: d | {"input_lens": [10_000_000] + [1000] * 1599,
                                     "total_input_tokens": 11_599_000,
                                     "output_lens": [100] * 1600}, {}, "holds 10,000,100 tokens, more than "
     "llama-3.1-8b's context of 131,072"),
    (V, "vllm-bench", lambda d: d | {"input_lens": [100_000] + [1000] * 1599,  # in context, not in memory
                                     "total_input_tokens": 1_699_000, "output_lens": [100] * 1600},
     {"deployment": L8B | {"gpu": "l4", "precision": "bf16", "kv_dtype": "bf16"}}, "does not fit"),
    (V, "vllm-bench", lambda d: d | {"p99_ttft_ms": 10 ** 400}, {}, "p99_ttft_ms=1000000000000"),
    (V, "vllm-bench", lambda d: d | {"p99_ttft_ms": 1.0}, {}, "ttft p99 0.001 s is below its p50 1.612 s"),
    (V, "vllm-bench", lambda d: d | {"num_prompts": 1}, {}, "num_prompts=1 but completed=1600"),
    (V, "vllm-bench", lambda d: d | {"burstiness": 0}, {}, "burstiness=0; expected a gamma shape > 0"),
    (V, "vllm-bench", lambda d: d | {"max_concurrency": 10 ** 20}, {}, "concurrency 100000000000000000000"),
    (V, "vllm-bench", lambda d: d | {"max_concurrency": None, "request_rate": 1e-320}, {},
     "request rate 1e-320; expected requests/s in"),
    (S, "sglang-bench", lambda d: d | {"request_rate": "trace"}, {}, "request_rate='trace'"),
    (S, "sglang-bench", _drop("mean_tpot_ms"), {}, "missing field 'mean_tpot_ms'"),
    (S, "sglang-bench", lambda d: d | {"completed": 0}, {}, "completed=0"),
    (A, "aiperf", lambda d: d, {"engine": None}, "do not say which engine"),
    (A, "aiperf", _drop("time_to_first_token"), {}, "missing metric 'time_to_first_token'"),
    (A, "aiperf", lambda d: d | {"time_to_first_token": {"avg": 900.0}}, {},
     "time_to_first_token has unit None"),  # a metric without its unit is named, not dropped
    (A, "aiperf", lambda d: d | {"inter_token_latency": {"unit": "fortnights", "avg": 3.0}}, {},
     "inter_token_latency has unit 'fortnights'"),
    (A, "aiperf", lambda d: d | {"request_count": {"unit": "requests", "avg": 0.0}}, {},
     "request_count=0"),
    (A, "aiperf", _drop("input_sequence_length"), {}, "missing input_sequence_length.avg"),
    # latencies a thousand times too small for the load (seconds in the _ms fields)
    (V, "vllm-bench", lambda d: d | {k: v / 1e3 for k, v in d.items() if k.endswith("_ms")}, {},
     "gives 0.16 requests in flight on average (Little's law), against a concurrency of 160"),
    # fixed lengths at a mean of 1.4 output tokens would be one-token outputs, with no TPOT
    (V, "vllm-bench", lambda d: d | {"total_output_tokens": 2240}, {}, "1.4 tokens per request"),
    (V, "vllm-bench", lambda d: d | {"backend": "tgi"}, {}, "backend='tgi': the client measured a server"),
    (V, "vllm-bench", lambda d: d | {"spec_decode_acceptance_length": 2.8}, {},
     "spec_decode_acceptance_length=2.8: the run decoded speculatively"),
    (V, "vllm-bench", lambda d: d | {"mean_ttft_ms": "inf"}, {}, "expected a finite number of ms"),
    ("vllm_bench_llama8b_detailed.json", "vllm-bench", lambda d: d | {"num_prompts": d["num_prompts"] + 1},
     {}, "but input_lens lists"),
    (S, "sglang-bench", lambda d: d | {"server_info": d["server_info"] | {"tp_size": 4}}, {},
     "server_info.tp_size=4 but the deployment given runs tp x dp=1"),
    (S, "sglang-bench", lambda d: d, {"engine_version": "0.4.0"},
     "the file's server ran sglang 0.5.6.post2 but engine version 0.4.0 was given"),
    (S, "sglang-bench", lambda d: d | {"accept_length": 3.1}, {}, "accept_length=3.1: the run decoded"),
    (S, "sglang-bench", lambda d: d | {"backend": "trt"}, {}, "backend='trt'"),
    (S, "sglang-bench", lambda d: d, {"runs": [2]}, "runs [2] asked for, but the file holds 1 run"),
    (A, "aiperf", lambda d: d | {"input_config": {"loadgen": {"request_rate": 20.0,
                                                            "arrival_pattern": "bursty"}}},
     {}, "arrival_pattern='bursty' with a request rate; expected one of poisson, gamma, constant"),
    (A, "aiperf", lambda d: d | {"output_sequence_length": {"unit": "tokens", "avg": 1.4, "min": 1, "max": 3}},
     {}, "output_sequence_length.avg is 1.4 tokens per request"),
    ("profile_export_aiperf.csv", "aiperf", lambda t: t, {}, "no concurrency and no finite"),
    ("profile_export_aiperf.csv", "aiperf", lambda t: t.replace("Time to First Token (ms),907.11",
                                                                 "Time to First Token (ms),soon"),
     {"concurrency": 352}, "Time to First Token (ms) avg='soon'"),
]


@pytest.mark.parametrize("name, fmt, edit, kw, msg", BAD, ids=[b[4][:40] for b in BAD])
def test_bad_files_name_the_file_and_field(tmp_path, name, fmt, edit, kw, msg):
    p = _edited(tmp_path, name, edit)
    kw = {"deployment": L8B, "engine": "sglang" if fmt == "aiperf" else None} | kw
    with pytest.raises(ServePlanError) as e:
        load_runs(p, fmt, **kw)
    assert p.name in str(e.value)
    assert msg in str(e.value)


def test_a_rate_run_whose_peak_stayed_under_its_cap_ran_open_loop(tmp_path):
    # vLLM sends its last request at num_prompts / rate: with a long tail the throughput falls
    # under 0.9 x the rate although the cap never bound; the peak in flight says so
    d = _doc("vllm_bench_llama8b_c160.json") | {"request_rate": 2.0, "max_concurrency": 256,
                                                 "request_throughput": 1.66}
    (run,) = load_runs(_write(tmp_path, "peak.json", d | {"max_concurrent_requests": 12}),
                       "vllm-bench", deployment=L8B)
    assert (run.concurrency, run.rate_rps) == (None, 2.0)
    assert "at most 12 requests in flight" in run.note
    # without the peak, a closed loop of 256 clients would hold 7 requests in flight: refused
    with pytest.raises(ServePlanError, match="against a concurrency of 256"):
        load_runs(_write(tmp_path, "nopeak.json", {k: v for k, v in d.items()
                                                   if k != "max_concurrent_requests"}),
                  "vllm-bench", deployment=L8B)


def test_an_openai_backend_takes_the_engine_given_and_another_engine_s_needs_one(tmp_path):
    d = _doc("vllm_bench_llama8b_c160.json")
    # `vllm bench serve --backend vllm` is an OpenAI completions client: it may measure SGLang
    (run,) = load_runs(_write(tmp_path, "v.json", d), "vllm-bench", deployment=L8B, engine="sglang")
    assert run.engine == "sglang" and "the client's backend 'vllm' speaks an API" in run.note
    (run,) = load_runs(_write(tmp_path, "o.json", d | {"backend": "openai-chat"}), "vllm-bench",
                       deployment=L8B, engine="sglang")
    assert run.engine == "sglang"
    (run,) = load_runs(_write(tmp_path, "t.json", d | {"backend": "tensorrt-llm"}), "vllm-bench",
                       deployment=L8B, engine="vllm")
    assert run.engine == "vllm" and "the client's backend is 'tensorrt-llm'" in run.note


def test_a_file_of_runs_on_two_deployments_reads_each_with_its_own():
    f = FIX / "sglang_bench_llama8b.jsonl"
    with pytest.raises(ServePlanError, match="run 2: server_info.tp_size=2 but the deployment given runs tp x dp=1"):
        load_runs(f, "sglang-bench", deployment=L8B)
    (run,) = load_runs(f, "sglang-bench", deployment=L8B | {"tp": 2}, runs=(2,))
    assert (run.run_id, run.concurrency) == ("2", 240)
    for bad in ([], [0], ["1"], 1):
        with pytest.raises(ServePlanError, match="expected a list of run numbers >= 1"):
            load_runs(f, "sglang-bench", deployment=L8B, runs=bad)


def test_genai_perf_csv_groups_thousands_and_writes_na(tmp_path):
    # GenAI-Perf's CSV exporter formats every value with a thousands separator ("1,190.16")
    # and writes N/A where a statistic has no value
    p = tmp_path / "profile_export_genai_perf.csv"
    p.write_text('Metric,avg,min,max,p99,p90,p75\n'
                 'Time To First Token (ms),"1,190.16",905.00,"1,502.40","1,480.00","1,300.00","1,250.00"\n'
                 'Inter Token Latency (ms),36.55,30.10,41.00,40.90,39.00,38.00\n'
                 'Request Latency (ms),"37,700.00","36,000.00","39,000.00",N/A,N/A,N/A\n'
                 'Input Sequence Length (tokens),"1,000.00","1,000.00","1,000.00","1,000.00","1,000.00","1,000.00"\n'
                 'Output Sequence Length (tokens),"1,000.00","1,000.00","1,000.00","1,000.00","1,000.00","1,000.00"\n'
                 '\nMetric,Value\nOutput Token Throughput (tokens/sec),"9,400.00"\n'
                 'Request Throughput (per sec),9.40\nRequest Count (count),"3,520.00"\n')
    (run,) = load_runs(p, "aiperf", deployment=L8B, engine="sglang", concurrency=352)
    assert run.measured["ttft_mean_s"] == pytest.approx(1.19016)
    assert run.measured["ttft_p99_s"] == pytest.approx(1.48)
    assert run.measured["e2e_mean_s"] == pytest.approx(37.7)
    assert "e2e_p99_s" not in run.measured  # N/A
    assert (run.workload, run.num_requests) == ("fixed:1000,1000", 3520)


def test_an_aiperf_rate_names_its_arrivals(tmp_path):
    d = _doc("profile_export_aiperf.json")
    for mode, note in (("poisson", None), (None, "Poisson arrivals (aiperf's default")):
        load = {"request_rate": 20.0} | ({"request_rate_mode": mode} if mode else {})
        (run,) = load_runs(_write(tmp_path, f"{mode}.json", d | {"input_config": {"loadgen": load}}),
                           "aiperf", deployment=L8B, engine="sglang")
        assert (run.rate_rps, run.concurrency) == (20.0, None)
        assert note is None or note in run.note


@pytest.mark.parametrize("text, msg", [
    ("{\"completed\": 5,\n \"mean_ttft_ms\": }", "line 2 column 18: not valid JSON"),
    ("[1, 2]", "run 1 is a JSON list"),
    ("", "not valid JSON"),
    ('{"completed": ' + "9" * 5000 + "}", "not valid JSON (ValueError"),  # past Python's int limit
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # nesting past the parser's recursion
])
def test_unreadable_files_are_one_error(tmp_path, text, msg):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ServePlanError, match="bad.json") as e:
        load_runs(p, "vllm-bench", deployment=L8B)
    assert msg in str(e.value)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ServePlanError, match="bad.json: not a readable text file"):
        load_runs(p, "sglang-bench", deployment=L8B)


def test_aic_silicon_takes_no_deployment(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("id\n1\n")
    with pytest.raises(ServePlanError, match="deployment, engine cannot be given"):
        load_runs(p, "aic-silicon", deployment=L8B, engine="vllm")


# --- every colocated row of the shared CSV, written in each client's schema ----------------------
def _as_vllm(r) -> dict:
    n = 10 * r.concurrency
    isl, osl = r.lengths
    return {"backend": "openai", "model_id": "x", "num_prompts": n, "request_rate": "inf",
            "burstiness": 1.0, "max_concurrency": r.concurrency, "completed": n,
            "total_input_tokens": n * isl, "total_output_tokens": n * osl,
            "mean_ttft_ms": r.measured["ttft_mean_s"] * 1e3,
            "mean_tpot_ms": r.measured["tpot_mean_s"] * 1e3}


def _as_sglang(r) -> dict:
    isl, osl = r.lengths
    return {"backend": "sglang", "dataset_name": "random", "request_rate": math.inf,
            "max_concurrency": r.concurrency, "random_input_len": isl, "random_output_len": osl,
            "random_range_ratio": 1.0, "completed": 10 * r.concurrency,
            "mean_ttft_ms": r.measured["ttft_mean_s"] * 1e3,
            "mean_tpot_ms": r.measured["tpot_mean_s"] * 1e3}


def _as_aiperf(r) -> dict:
    isl, osl = r.lengths
    return {"time_to_first_token": {"unit": "ms", "avg": r.measured["ttft_mean_s"] * 1e3},
            "inter_token_latency": {"unit": "ms", "avg": r.measured["tpot_mean_s"] * 1e3},
            "input_sequence_length": {"unit": "tokens", "avg": isl, "min": isl, "max": isl},
            "output_sequence_length": {"unit": "tokens", "avg": osl, "min": osl, "max": osl},
            "request_count": {"unit": "requests", "avg": 10 * r.concurrency},
            "input_config": {"loadgen": {"concurrency": r.concurrency}}}


def test_every_csv_row_reads_alike_in_every_schema(shared, tmp_path):
    rows = [r for r in load_runs(shared / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv", "aic-silicon")
            if r.deployment.mode == "colocated"]
    assert len(rows) == 130
    for i, row in enumerate(rows):
        for fmt, doc in (("vllm-bench", _as_vllm(row)), ("sglang-bench", _as_sglang(row)),
                         ("aiperf", _as_aiperf(row))):
            (run,) = load_runs(_write(tmp_path, f"{i}.json", doc), fmt, deployment=row.deployment,
                               engine=row.engine, engine_version=row.engine_version)
            assert (run.workload, run.concurrency, run.num_requests) == (
                row.workload, row.concurrency, row.num_requests), (fmt, row.run_id)
            assert run.measured == pytest.approx(row.measured, rel=1e-12), (fmt, row.run_id)


# --- replay ---------------------------------------------------------------------------------------
REPLAYED = [
    ("vllm_bench_llama8b_c160.json", "vllm-bench", {}),
    ("vllm_bench_llama8b_detailed.json", "vllm-bench", {}),
    ("sglang_bench_llama8b.jsonl", "sglang-bench", {"runs": [1]}),  # run 1 ran on TP1
    ("profile_export_aiperf.json", "aiperf", {"engine": "sglang"}),
    ("profile_export_aiperf_early.json", "aiperf", {"engine": "sglang"}),
    ("profile_export_aiperf.csv", "aiperf", {"engine": "sglang", "concurrency": 352}),
    ("profile_export_genai_perf.json", "aiperf", {"engine": "sglang"}),
]


@pytest.mark.parametrize("name, fmt, kw", REPLAYED, ids=[r[0] for r in REPLAYED])
def test_replay_runs_a_run_of_each_format(name, fmt, kw):
    run = load_runs(FIX / name, fmt, deployment=L8B, **kw)[0]
    rep = replay(run, num_requests=12)
    assert rep.num_requests == 12
    # the simulator predicts TTFT, TPOT and E2E (not ITL) for each statistic the file measured
    assert set(rep.predicted) == {k for k in run.measured if not k.startswith("itl")}
    assert all(math.isfinite(v) and v > 0 for v in rep.predicted.values())


def test_per_request_replay_equals_the_same_lengths_as_a_trace_file(tmp_path):
    (run,) = load_runs(FIX / "vllm_bench_llama8b_detailed.json", "vllm-bench", deployment=L8B)
    trace = tmp_path / "lengths.csv"
    trace.write_text("input_len,output_len\n" + "".join(
        f"{a},{b}\n" for a, b in zip(run.input_lens, run.output_lens, strict=True)))
    res = simulate(run.deployment, parse_workload(f"trace:{trace}", concurrency=4), num_requests=8,
                   seed=0, warmup_fraction=0.0, cooldown_fraction=0.0)
    assert replay(run).predicted["ttft_mean_s"] == res.metrics.ttft_mean_s
    assert replay(run).predicted["tpot_mean_s"] == res.metrics.tpot_mean_s


def test_open_loop_replay_draws_its_gaps_at_the_rate(tmp_path):
    d = _doc("vllm_bench_llama8b_c160.json") | {"max_concurrency": None, "request_rate": 5.0,
                                                 "request_throughput": 4.9}
    (run,) = load_runs(_write(tmp_path, "r.json", d), "vllm-bench", deployment=L8B)
    rep = replay(run, num_requests=20)
    assert set(rep.predicted) >= {"ttft_mean_s", "tpot_mean_s"}
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h200-sxm", precision="fp8",
                                                 kv_dtype="fp8"),))
    same = simulate(dep, parse_workload("fixed:1000,100", rate=5.0), num_requests=20, seed=0,
                    warmup_fraction=0.0, cooldown_fraction=0.0)
    assert rep.predicted["ttft_mean_s"] == same.metrics.ttft_mean_s


def test_names_no_filesystem_holds_are_unknown_not_crashes(tmp_path):
    with pytest.raises(ServePlanError, match="no such results file"):
        load_runs(tmp_path / ("x" * 300), "vllm-bench", deployment=L8B)
    d = _doc("vllm_bench_llama8b_c160.json") | {"model_id": "m" * 300}  # an alias: not checked
    (run,) = load_runs(_write(tmp_path, "long.json", d), "vllm-bench", deployment=L8B)
    assert run.deployment.model == "llama-3.1-8b"
    with pytest.raises(ServePlanError, match="cannot read plan file"):
        load_runs(FIX / "vllm_bench_llama8b_c160.json", "vllm-bench", deployment="a\x00b.json")


def test_infinite_or_duplicated_aiperf_values_are_one_error(tmp_path):
    d = _doc("profile_export_aiperf.json")
    for key, val, msg in (("output_sequence_length", {"unit": "tokens", "avg": "inf"}, "expected 1 to"),
                          ("request_count", {"unit": "requests", "avg": "inf"}, "request_count=inf"),
                          ("request_count", {"unit": "requests", "avg": 1.5}, "request_count=1.5")):
        with pytest.raises(ServePlanError, match="a.json") as e:
            load_runs(_write(tmp_path, "a.json", d | {key: val}), "aiperf", deployment=L8B, engine="sglang")
        assert msg in str(e.value)
    text = (FIX / "profile_export_aiperf.csv").read_text().replace("Metric,avg,min", "Metric,avg,avg", 1)
    p = tmp_path / "dup.csv"
    p.write_text(text)
    with pytest.raises(ServePlanError, match="names a column twice"):
        load_runs(p, "aiperf", deployment=L8B, engine="sglang", concurrency=352)


def test_an_sglang_dp_attention_server_reports_tp_times_dp(tmp_path):
    # ServePlan launches SGLang DP attention as --tp tp*dp --dp dp --enable-dp-attention, so its
    # server_info.tp_size is tp x dp
    line = json.loads((FIX / "sglang_bench_llama8b.jsonl").read_text().splitlines()[1])  # tp_size 2
    line["server_info"] = line["server_info"] | {"model_path": "Qwen/Qwen3-30B-A3B"}
    moe = {"model": "qwen3-30b-a3b", "gpu": "h200-sxm", "tp": 1, "dp": 2, "ep": 2}
    f = _write(tmp_path, "dp.jsonl", line)
    (run,) = load_runs(f, "sglang-bench", deployment=moe)
    assert (run.deployment.pools[0].tp, run.deployment.pools[0].dp) == (1, 2)
    with pytest.raises(ServePlanError, match="tp_size=2 but the deployment given runs tp x dp=4"):
        load_runs(f, "sglang-bench", deployment=moe | {"tp": 2})
