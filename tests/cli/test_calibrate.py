"""`serveplan calibrate` and `serveplan cost eval`: fit on native rows and score held-out ones,
predictions written per row, batches that overflow the KV cache left unscored, bad formats named."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.errors import ServePlanError
from planner.cli import app


def test_eval_and_calibrate_cli(tmp_path, synthetic_rows):
    rows = synthetic_rows(np.random.default_rng(5), 150)
    f = tmp_path / "rows.csv"
    rows.to_csv(f, index=False)
    run = CliRunner()
    cal = tmp_path / "calib.json"
    res = run.invoke(app, ["calibrate", "--measured", str(f), "--format", "native", "--out", str(cal),
                           "--fit-fraction", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["held_out"]["mape"] < 0.01 and doc["fit_rows"] < len(rows)
    out = tmp_path / "pred.csv"
    res = run.invoke(app, ["cost", "eval", "--measured", str(f), "--format", "native",
                           "--calibration", str(cal), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["mape"] < 0.01 and set(doc["by_op"]) == {"gemm", "attn_decode"}
    pred = pd.read_csv(out)
    assert {"measured_s", "predicted_s", "rel_err"} <= set(pred.columns) and len(pred) == len(rows)
    res = run.invoke(app, ["cost", "eval", "--measured", str(f), "--format", "vidur", "--gpu", "a100",
                           "--out", str(out)])
    assert res.exit_code == 2 and "no Vidur profile files" in res.output


def test_calibrate_holds_out_whole_configurations(tmp_path, synthetic_rows):
    """Rows measured twice (same inputs) fall on one side of --fit-fraction's split: the held-out
    score is over configurations the fit never saw."""
    from costmodel.fit import holdout_split
    from costmodel.importers import load_measured

    rows = synthetic_rows(np.random.default_rng(6), 60)
    again = rows.assign(measured_s=rows["measured_s"] * 1.01)
    both = pd.concat([rows, again], ignore_index=True)
    f = tmp_path / "rows.csv"
    both.to_csv(f, index=False)
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(f), "--format", "native", "--out",
                                   str(tmp_path / "c.json"), "--fit-fraction", "0.5", "--seed", "2",
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    mask = holdout_split(load_measured(f, "native"), 0.5, 2)
    n = len(rows)
    assert np.array_equal(mask[:n], mask[n:])  # each row and its repeat on one side
    assert doc["fit_rows"] == int(mask.sum()) and doc["held_out"]["n"] == int((~mask).sum())


def test_cost_eval_reports_overflow_rows(shared, tmp_path):
    out = tmp_path / "pred.csv"
    r = subprocess.run([sys.executable, "-m", "planner.cli", "cost", "eval", "--measured",
                        str(shared / "data/profiles/splitwise/perf_model_a100.csv"),
                        "--format", "splitwise", "--model", "llama-2-70b", "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # Splitwise's TP 2 batch of 64 x (512 + 128): 5 measured lines, a prefill and a decode row each
    assert s["skipped_kv_overflow"] == 10
    df = pd.read_csv(out)
    bad = df[~df["fits_kv"]]
    assert set(zip(bad["tp"], bad["batch_size"], strict=True)) == {(2, 64)}
    assert s["n"] == len(df) - 10


# --- benchmark runs (planner/cli/calibrate_runs.py) ------------------------------------------

RUNS = Path(__file__).resolve().parents[1] / "sim" / "fixtures" / "runs"
L8B_FLAGS = ["--model", "llama-3.1-8b", "--gpu", "h200-sxm", "--precision", "fp8", "--kv-dtype", "fp8"]
# small runs of the silicon CSV: Qwen3-32B on H100, 1024x128 and 2048x128 at 16 clients, TP 2/4/8
SMALL_RUNS = ("1024x128_c16_tp2_", "1024x128_c16_tp4_", "1024x128_c16_tp8_", "2048x128_c16_tp2_",
              "2048x128_c16_tp8_")


def _small_csv(shared, tmp_path) -> Path:
    df = pd.read_csv(shared / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv")
    keep = df[df["id"].str.contains("|".join(SMALL_RUNS)) & df["id"].str.contains("qwen3_32b")
              & (df["mode"] == "agg") & (df["backend_version"] == "0.5.1.post1")]
    assert len(keep) == len(SMALL_RUNS)
    p = tmp_path / "silicon.csv"
    keep.to_csv(p, index=False)
    return p


def test_calibrate_from_runs_reports_before_after_sources_and_intervals(shared, tmp_path):
    csv = _small_csv(shared, tmp_path)
    out, plot = tmp_path / "calib.json", tmp_path / "calib.html"
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(csv), "--format", "aic-silicon",
                                   "--out", str(out), "--plot", str(plot), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["runs"]) == len(SMALL_RUNS)
    (g,) = doc["gpus"]
    assert g["gpu"] == "h100-sxm" and g["after"]["ttft"] < g["before"]["ttft"]
    # SGLang overlaps host time with GPU time: these busy runs say nothing of it
    assert {"host_overhead_s", "host_per_seq_s"} <= set(g["not_informed"])
    params = {p["param"]: p for p in doc["parameters"]}
    assert params["prefill_time_scale"]["fitted"] and "5 sglang runs" in params["prefill_time_scale"]["source"]
    assert not params["host_overhead_s"]["fitted"] and "not informed" in params["host_overhead_s"]["source"]
    for r in doc["runs"]:
        assert r["ttft_measured_s"] > 0 and r["ttft_before_s"] > 0 and r["ttft_held_out_s"] > 0
    prof = CalibrationProfile.load(out)
    cal = prof.gpus["h100-sxm"]
    assert cal.params.prefill_time_scale == pytest.approx(params["prefill_time_scale"]["value"])
    lo, hi = cal.latency_interval["ttft"]
    assert lo < 0 < hi or lo < hi  # an interval, from held-out runs
    assert "plotly" in plot.read_text()
    # and what those runs were, for plans unlike them
    dom = cal.latency_domain
    assert dom == doc["latency_domain"]["h100-sxm"]
    assert dom["engines"] == ["sglang"] and dom["models"] == ["qwen3-32b"] and dom["modes"] == ["colocated"]
    assert dom["tp"] == sorted({int(r["tp"]) for r in doc["runs"]}) == [2, 4, 8]
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(csv), "--format", "aic-silicon",
                                   "--out", str(out)])
    assert res.exit_code == 0 and "measured on sglang; qwen3-32b; colocated; TP " in res.output


def test_calibrate_from_runs_keeps_a_kernel_profile_and_its_sources(shared, tmp_path):
    kernel = CalibrationProfile(source="serveplan validate on h100", gpus={"h100-sxm": GpuCalibration(
        replace(default_efficiencies("h100-sxm"), gemm_compute_eff=0.61), {}, 0.05,
        {"gemm_compute_eff": "fit: rows of torch:matmul"})})
    kin, out = tmp_path / "kernel.json", tmp_path / "both.json"
    kernel.save(kin)
    csv = _small_csv(shared, tmp_path)
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(csv), "--format", "aic-silicon",
                                   "--calibration", str(kin), "--out", str(out), "--no-held-out",
                                   "--json"])
    assert res.exit_code == 0, res.output
    cal = CalibrationProfile.load(out).gpus["h100-sxm"]
    assert cal.params.gemm_compute_eff == 0.61 and cal.uncertainty_rel == 0.05
    assert cal.sources["gemm_compute_eff"] == "fit: rows of torch:matmul"
    assert cal.sources["decode_time_scale"].startswith("fit: 5 sglang runs")
    assert "not informed" in cal.sources["host_overhead_s"]
    assert json.loads(res.stdout)["calibration_in"] == str(kin)


def test_calibrate_a_client_file_with_deployment_flags_or_plan(tmp_path):
    f = RUNS / "vllm_bench_llama8b_detailed.json"
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(f), "--format", "vllm-bench",
                                   *L8B_FLAGS, "--params", "decode_time_scale", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    (r,) = doc["runs"]
    assert r["engine"] == "vllm" and r["concurrency"] == 4 and r["workload"].startswith("per-request:")
    assert [p["param"] for p in doc["parameters"] if p["fitted"]] == ["decode_time_scale"]
    assert doc["out"] is None and doc["gpus"][0]["interval_log"] == {}  # one run: no held-out
    # the text report: one table row per run, the parameters and their sources
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(f), "--format", "vllm-bench",
                                   *L8B_FLAGS, "--params", "decode_time_scale"])
    assert res.exit_code == 0, res.output
    assert "decode_time_scale" in res.output and "fit: 1 vllm runs" in res.output


@pytest.mark.parametrize("edit, args, message", [
    (lambda d: d.pop("mean_ttft_ms"), L8B_FLAGS, "r.json run 1: missing field 'mean_ttft_ms'"),
    (lambda d: d.update(completed=0), L8B_FLAGS, "r.json run 1: completed=0: no request completed"),
    (lambda d: d.update(model_id="meta-llama/Llama-3.1-70B-Instruct"),
     ["--model", "llama-3.1-70b", "--gpu", "l4"], "r.json run 1: deployment (colocated pool)"),
    (None, [], "does not say which deployment served it; give --plan FILE"),
    (None, ["--model", "llama-3.1-8b"], "needs both --model and --gpu"),
    (None, ["--tp", "2"], "--tp given without --model and --gpu"),
])
def test_bad_run_input_is_one_line_naming_file_and_field(tmp_path, edit, args, message):
    d = json.loads((RUNS / "vllm_bench_llama8b_detailed.json").read_text())
    if edit is not None:
        edit(d)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(d))
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(f), "--format", "vllm-bench", *args])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    assert "Traceback" not in res.output


def test_manifest_excludes_per_file_flags(tmp_path):
    res = CliRunner().invoke(app, ["calibrate", "--manifest", str(RUNS / "manifest.yaml"),
                                   "--measured", str(RUNS / "vllm_bench_llama8b_c160.json")])
    assert res.exit_code == 2 and "--measured cannot be given with it" in res.output
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(RUNS / "manifest.yaml"),
                                   "--format", "aic-silicon", "--fit-fraction", "0.5"])
    assert res.exit_code == 2 and "--fit-fraction: options of operator-table calibration" in res.output


def test_calibrate_from_a_manifest_of_client_files(tmp_path):
    out = tmp_path / "calib.json"
    res = CliRunner().invoke(app, ["calibrate", "--manifest", str(RUNS / "manifest.yaml"), "--no-held-out",
                                   "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["runs"]) == 5 and {r["engine"] for r in doc["runs"]} == {"vllm", "sglang"}
    assert {r["source"] for r in doc["runs"]} == {"vllm_bench_llama8b_c160.json", "sglang_bench_llama8b.jsonl",
                                                  "profile_export_aiperf.csv", "profile_export_genai_perf.json"}
    (g,) = doc["gpus"]
    # every parameter has a source, fitted or not, and the profile loads back
    assert all(p["source"] for p in doc["parameters"]) and g["gpu"] == "h200-sxm"
    assert CalibrationProfile.load(out).gpus["h200-sxm"].sources.keys() >= {"decode_time_scale"}
    # two engines in one fit: the profile says so
    assert any("the runs are of sglang and vllm" in m for m in doc["messages"]), doc["messages"]


def test_calibrate_gpu_selects_the_runs_of_an_aic_silicon_file(shared):
    # DESIGN's `calibrate --measured PATH --format ... --gpu G`: a file that names each run's
    # deployment keeps the runs on G (and on --model M)
    from planner.cli.calibrate_runs import select_runs
    from sim.runs import load_runs

    csv = shared / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv"
    runs = load_runs(csv, "aic-silicon")
    h200 = select_runs(runs, None, "h200", csv)
    assert h200 and {r.deployment.model for r in h200} == {"llama-3.1-8b"}
    assert len(select_runs(runs, "qwen3-32b", "h100", csv)) == len(runs) - len(h200)
    with pytest.raises(ServePlanError, match="no run of qwen3-32b on h200-sxm; the file's runs are of "
                                             "llama-3.1-8b on h200-sxm, qwen3-32b on h100-sxm"):
        select_runs(runs, "qwen3-32b", "h200", csv)


@pytest.mark.parametrize("args, msg", [
    (["--format", "aic-silicon", "--gpu", "h100", "--tp", "2"], "--tp cannot be given (--model and --gpu select"),
    (["--format", "aic-silicon", "--engine", "vllm"], "engine cannot be given"),
    (["--format", "aic-silicon", "--gpu", "l4"], "no run of l4; the file"),
    (["--format", "vllm"], "--format 'vllm'; expected one of operator tables: vidur"),
])
def test_calibrate_refuses_what_an_aic_silicon_file_already_says(shared, tmp_path, args, msg):
    csv = shared / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv"
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(csv), *args, "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 2 and msg in res.output, res.output
    assert "Traceback" not in res.output


def test_calibrate_workers_give_the_same_profile_and_bad_counts_are_named(tmp_path, synthetic_rows):
    # the runs' replays in two processes: the same fitted values as in one (sim.runs.workers)
    docs = []
    for n in ("1", "2"):
        res = CliRunner().invoke(app, ["calibrate", "--manifest", str(RUNS / "manifest.yaml"), "--no-held-out",
                                       "--params", "decode_time_scale,request_latency_s", "--workers", n, "--json"])
        assert res.exit_code == 0, res.output
        docs.append(json.loads(res.stdout))
    assert docs[0]["parameters"] == docs[1]["parameters"] and docs[0]["runs"] == docs[1]["runs"]
    for bad in ("0", "100000"):
        res = CliRunner().invoke(app, ["calibrate", "--manifest", str(RUNS / "manifest.yaml"), "--workers", bad])
        assert res.exit_code == 2 and f"workers {bad}; expected an integer in [1, " in res.output, res.output
    f = tmp_path / "rows.csv"
    synthetic_rows(np.random.default_rng(5), 20).to_csv(f, index=False)
    res = CliRunner().invoke(app, ["calibrate", "--measured", str(f), "--format", "native", "--out",
                                   str(tmp_path / "c.json"), "--workers", "2"])
    assert res.exit_code == 2 and "--workers: an option of calibration from benchmark runs" in res.output
