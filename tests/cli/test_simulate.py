"""`serveplan simulate` in-process: JSON out, flags for every deployment kind, plan files, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from planner.cli import app
from sim import Deployment, PoolConfig

runner = CliRunner()
CORE = ["ttft_mean_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_mean_s", "tpot_p50_s",
        "tpot_p90_s", "tpot_p99_s", "e2e_mean_s", "e2e_p50_s", "e2e_p90_s", "e2e_p99_s",
        "throughput_tok_s", "goodput_rps", "slo_attainment", "preemptions", "kv_peak_fraction",
        "sim_wall_s"]


def sim(*args):
    r = runner.invoke(app, ["simulate", *args])
    return r


def test_json_run_from_flags_has_design_keys(shared):
    r = sim("--model", "llama-3.1-70b", "--gpu", "h100", "--tp", "4", "--replicas", "2",
            "--workload", f"trace:{shared}/data/traces/AzureLLMInferenceTrace_conv.csv",
            "--rate", "4", "--requests", "300", "--seed", "1", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert all(k in d for k in CORE)
    assert d["num_completed"] == 300 and len(d["utilisation"]) == 2


def test_closed_loop_speculative_and_slo_flags():
    r = sim("--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:256,128",
            "--concurrency", "8", "--requests", "40", "--seed", "0", "--spec-method", "ngram",
            "--spec-k", "3", "--spec-acceptance", "0.6", "--ttft-slo", "0.5", "--tpot-slo", "0.02",
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert 1.5 < d["mean_accepted_tokens_per_step"] < 2.5
    assert d["slo_ttft_s"] == 0.5 and d["notes"] == []


def test_disaggregated_flags_and_table_output():
    r = sim("--model", "llama-3.1-8b", "--gpu", "h100", "--disaggregated", "--prefill-replicas", "2",
            "--decode-replicas", "1", "--workload", "fixed:1024,64", "--rate", "5", "--requests", "60")
    assert r.exit_code == 0, r.output
    assert "TTFT (ms)" in r.stdout and "prefill: 2 x 1" in r.stdout


def test_plan_file_bare_and_wrapped(tmp_path):
    dep = Deployment(model="llama-3.1-8b", pools=(PoolConfig(role="colocated", gpu="h100", replicas=2),))
    bare = tmp_path / "dep.json"
    bare.write_text(json.dumps(dep.to_dict()))
    wrapped = tmp_path / "plan.json"
    wrapped.write_text(json.dumps({"deployment": dep.to_dict(), "predicted": {}}))
    outs = []
    for p in (bare, wrapped):
        r = sim("--plan", str(p), "--workload", "fixed:128,16", "--rate", "10", "--requests", "50", "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        d.pop("sim_wall_s")
        outs.append(d)
    assert outs[0] == outs[1]


def test_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases = [
        (["--plan", str(bad), "--workload", "fixed:1,1", "--rate", "1"], "line 1"),
        (["--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:1,1", "--rate", "0"], "rate"),
        (["--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:1,1"], "needs a rate"),
        (["--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:1,1", "--rate", "1",
          "--spec-method", "draft", "--spec-acceptance", "0.5"], "draft model"),
        (["--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:1,1", "--rate", "1",
          "--spec-method", "ngram"], "--spec-acceptance"),
        (["--workload", "fixed:1,1", "--rate", "1"], "--plan FILE, or --model"),
        (["--model", "llama-3.1-405b", "--gpu", "h100", "--workload", "fixed:1,1", "--rate", "1"],
         "does not fit"),
    ]
    for args, msg in cases:
        r = sim(*args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_spec_k_0_with_a_method_is_adaptive():
    base = ["simulate", "--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:256,64",
            "--rate", "2", "--requests", "40", "--json"]
    spec = ["--spec-method", "ngram", "--spec-acceptance", "0.7"]
    off = json.loads(CliRunner().invoke(app, base).stdout)
    k0 = json.loads(CliRunner().invoke(app, base + spec + ["--spec-k", "0"]).stdout)
    ad = json.loads(CliRunner().invoke(app, base + spec + ["--spec-adaptive"]).stdout)
    assert off["mean_accepted_tokens_per_step"] == pytest.approx(1.0)
    assert k0["mean_accepted_tokens_per_step"] > 1.5
    k0.pop("sim_wall_s"), ad.pop("sim_wall_s")
    assert k0 == ad


def test_a_profile_with_run_intervals_puts_them_around_the_simulated_latencies(tmp_path):
    # a profile fitted on engine runs (SGLang, TP 2 and 4, 256 output tokens) carries 80%
    # intervals of TTFT and TPOT; `simulate` reports them around its own means and p90s, and
    # says how this vLLM TP 1 deployment at 128 output tokens differs from those runs
    import math

    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration
    from planner.cli.common import ms_text

    domain = {"engines": ["sglang"], "models": ["llama-3.1-8b"], "modes": ["colocated"], "tp": [2, 4],
              "precisions": ["bf16"], "kv_dtypes": ["bf16"], "input_tokens": [200.0, 300.0],
              "output_tokens": [256.0, 256.0]}
    prof = tmp_path / "runs.json"
    prof.write_text(json.dumps(CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        default_efficiencies("h100-sxm"), {}, 0.0, {}, {"ttft": [-0.2, 0.1], "tpot": [-0.05, 0.08]},
        domain)}).to_dict()))
    args = ["--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:256,128", "--concurrency",
            "4", "--requests", "40", "--seed", "0", "--calibration", str(prof)]
    r = sim(*args, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    li = d["uncertainty"]["latency_interval_80"]
    assert li["ttft_s"]["mean"] == pytest.approx([d["ttft_mean_s"] * math.exp(-0.2), d["ttft_mean_s"] * math.exp(0.1)])
    assert li["tpot_s"]["p90"] == pytest.approx([d["tpot_p90_s"] * math.exp(-0.05), d["tpot_p90_s"] * math.exp(0.08)])
    assert li["unlike_runs"] == ["h100-sxm: engine vllm; the runs: sglang",
                                 "h100-sxm: TP 1 (colocated); the runs: TP 2, 4",
                                 "h100-sxm: mean output 128 tokens; the runs: 256"]
    t = sim(*args)
    assert t.exit_code == 0, t.output
    lo, hi = (ms_text(d["ttft_mean_s"] * math.exp(x)) for x in (-0.2, 0.1))
    assert (f"80% interval of the mean TTFT (from held-out calibration runs): {lo}-{hi} ms "
            "(x0.82-x1.11 the prediction)") in t.stdout
    assert "unlike the runs behind that interval: h100-sxm: engine vllm; the runs: sglang" in t.stdout
    # without a calibration, or with one that has no run intervals, nothing of it
    plain = json.loads(sim(*args[:-2], "--json").stdout)
    assert "uncertainty" not in plain and plain["ttft_mean_s"] == pytest.approx(d["ttft_mean_s"])
    # one output token: no TPOT to put a range around, only the ratio, and the text says so
    one = sim(*[a if a != "fixed:256,128" else "fixed:256,1" for a in args], "--json")
    li = json.loads(one.stdout)["uncertainty"]["latency_interval_80"]
    assert "tpot_s" not in li and li["tpot_log_ratio"] == [-0.05, 0.08] and "mean" in li["ttft_s"]
    txt = sim(*[a if a != "fixed:256,128" else "fixed:256,1" for a in args]).stdout
    assert "80% interval of the mean TPOT (from held-out calibration runs): x0.95-x1.08 the prediction, " \
           "which this run has none of" in txt
    # intervals fitted on another GPU: one line saying so, and no note about ranges not given
    other = sim(*[a if a != "h100" else "l40s" for a in args], "--json")
    li = json.loads(other.stdout)["uncertainty"]["latency_interval_80"]
    assert set(li) == {"missing"} and li["missing"][0].startswith("no TTFT interval: the calibration has none for l40s")


def test_latencies_print_in_ms_without_exponents():
    from planner.cli.common import ms_text

    assert [ms_text(x) for x in (1.3914, 0.0249, 0.00317, 0.1, 12.5)] == ["1,391", "24.9", "3.17", "100", "12,500"]


def test_a_percentile_the_runs_measured_gets_its_own_interval(tmp_path):
    # runs that measured p90 TTFT (aiperf, or vllm bench with --metric-percentiles 90) left an
    # interval of their own for it: the p90's range uses it, the p50's falls back to the mean's
    import math

    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration
    from planner.cli.common import ms_text

    prof = tmp_path / "runs.json"
    prof.write_text(json.dumps(CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        default_efficiencies("h100-sxm"), {}, 0.0, {},
        {"ttft": [-0.2, 0.1], "ttft_p90": [-0.5, 0.3], "tpot": [-0.05, 0.08]})}).to_dict()))
    args = ["--model", "llama-3.1-8b", "--gpu", "h100", "--workload", "fixed:256,128", "--concurrency",
            "4", "--requests", "40", "--seed", "0", "--calibration", str(prof)]
    d = json.loads(sim(*args, "--json").stdout)
    li = d["uncertainty"]["latency_interval_80"]
    assert li["ttft_measured_stats"] == ["mean", "p90"] and li["tpot_measured_stats"] == ["mean"]
    assert li["ttft_s"]["p90"] == pytest.approx([d["ttft_p90_s"] * math.exp(-0.5), d["ttft_p90_s"] * math.exp(0.3)])
    assert li["ttft_s"]["p50"] == pytest.approx([d["ttft_p50_s"] * math.exp(-0.2), d["ttft_p50_s"] * math.exp(0.1)])
    assert li["ttft_log_ratio"] == [-0.2, 0.1]
    lo, hi = (ms_text(d["ttft_p90_s"] * math.exp(x)) for x in (-0.5, 0.3))
    assert f"; of the p90: {lo}-{hi} ms" in sim(*args).stdout
