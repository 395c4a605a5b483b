"""Input that used to be accepted with a wrong result, or to end in a traceback, now refused
with one line: a measurement read twice, output paths that cannot be written, an empty
--params or --fit-fraction share, and a calibration profile with a key it does not know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costmodel.calibration import CalibrationProfile
from costmodel.errors import ServePlanError
from sim.runs import load_manifest, load_runs

FIX = Path(__file__).parent / "fixtures" / "runs"
VB = str(FIX / "vllm_bench_llama8b_c160.json")
RUNS = ["calibrate", "--measured", VB, "--format", "vllm-bench", "--model", "llama-3.1-8b",
        "--gpu", "h200", "--precision", "fp8", "--kv-dtype", "fp8"]


def _cli(argv):
    from planner.cli import app

    r = CliRunner().invoke(app, argv)
    return r.exit_code, r.output + (r.stderr if r.stderr_bytes is not None else ""), r.exception


def test_a_manifest_reading_one_run_twice_is_refused(tmp_path):
    for name in ("vllm_bench_llama8b_c160.json", "sglang_bench_llama8b.jsonl"):
        (tmp_path / name).write_text((FIX / name).read_text())
    dep = {"model": "llama-3.1-8b", "gpu": "h200-sxm", "tp": 1, "precision": "fp8", "kv_dtype": "fp8"}
    entry = {"file": "vllm_bench_llama8b_c160.json", "format": "vllm-bench", "deployment": dep}
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"runs": [entry, entry | {"deployment": dep | {"tp": 2}}]}))
    with pytest.raises(ServePlanError, match=r"runs\[2\] \(vllm_bench_llama8b_c160.json\): run 1 is "
                                              r"read by runs\[1\] too"):
        load_manifest(m)
    # the same file, different runs of it: fine
    s = {"file": "sglang_bench_llama8b.jsonl", "format": "sglang-bench", "deployment": dep}
    m.write_text(json.dumps({"runs": [s | {"runs": [1]}, s | {"runs": [2], "deployment": dep | {"tp": 2}}]}))
    assert [r.run_id for r in load_manifest(m)] == ["1", "2"]


def test_an_aic_silicon_file_with_one_id_twice_is_refused(tmp_path, shared):
    lines = (shared / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv").read_text().splitlines()
    p = tmp_path / "aic.csv"
    p.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ServePlanError, match="is on more than one row"):
        load_runs(p, "aic-silicon")


@pytest.mark.parametrize("extra, msg", [
    (["--out", "{tmp}"], "--out {tmp} is a folder; expected a file to write"),
    (["--out", "{tmp}/c.json", "--plot", "{tmp}"], "--plot {tmp} is a folder"),
    (["--out", "{tmp}/c.json", "--params", ","], "--params ','; expected comma-separated"),
])
def test_calibrate_refuses_before_it_fits(tmp_path, extra, msg):
    code, out, exc = _cli(RUNS + [a.replace("{tmp}", str(tmp_path)) for a in extra])
    assert code == 2 and msg.replace("{tmp}", str(tmp_path)) in out, (out, exc)
    assert not (tmp_path / "c.json").exists()


def test_output_folders_that_do_not_exist_are_made(tmp_path):
    from planner.cli.common import output_paths

    output_paths(out=tmp_path / "new" / "sub" / "c.json")  # created when written: not refused
    with pytest.raises(ServePlanError, match="--requests-csv .* is a folder"):
        output_paths(requests_csv=tmp_path)


def test_a_fit_fraction_that_leaves_no_rows(tmp_path, shared):
    code, out, _ = _cli(["calibrate", "--measured", str(shared / "data/profiles/splitwise"), "--format",
                         "splitwise", "--gpu", "a100", "--fit-fraction", "1e-9", "--out",
                         str(tmp_path / "t.json")])
    assert code == 2 and "--fit-fraction 1e-09 leaves none of the" in out


def test_a_profile_with_an_unknown_key_is_refused(tmp_path):
    good = {"schema": "serveplan.calibration", "version": 2, "gpus": {"h200-sxm": {
        "params": {"decode_time_scale": 1.1}, "latency_interval": {"ttft": [-0.2, 0.3]}}}}
    CalibrationProfile.from_dict(json.loads(json.dumps(good)))
    g = good["gpus"]["h200-sxm"]
    for doc, msg in ((good | {"gpu": {}}, "'gpu' is not a profile key"),
                     (good | {"gpus": {"h200-sxm": g | {"latency_intervals": {}}}},
                      "gpus.h200-sxm.latency_intervals is not a GPU entry's key"),
                     (good | {"gpus": {"h200-sxm": g | {"latency_interval": {"ttft": [0.3, -0.2]}}}},
                      r"ttft = \[0.3, -0.2\]")):
        with pytest.raises(ServePlanError, match=msg):
            CalibrationProfile.from_dict(doc)


def test_one_token_outputs_with_a_tpot_are_refused(tmp_path):
    d = json.loads((FIX / "vllm_bench_llama8b_detailed.json").read_text())
    n = len(d["output_lens"])
    d |= {"output_lens": [1] * n, "total_output_tokens": n}
    p = tmp_path / "v.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ServePlanError, match="every request in output_lens made one token"):
        load_runs(p, "vllm-bench", deployment={"model": "llama-3.1-8b", "gpu": "h200-sxm"})
    a = json.loads((FIX / "profile_export_aiperf.json").read_text())
    a["output_sequence_length"] = {"unit": "tokens", "avg": 1.0, "min": 1, "max": 1}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(a))
    with pytest.raises(ServePlanError, match="every request made one output token"):
        load_runs(p, "aiperf", deployment={"model": "llama-3.1-8b", "gpu": "h200-sxm"}, engine="sglang")


@pytest.mark.parametrize("edit, msg", [
    ({"failed": 500}, "completed=1600 and failed=500; a run completes or fails at most"),
    ({"input_lens": [1000] * 1600, "output_lens": [100] * 1600, "total_input_tokens": 999_999},
     "the successful requests' lengths sum to 1,600,000 but total_input_tokens=999,999"),
    ({"input_lens": [1000] * 1600, "output_lens": [100] * 1600, "errors": "boom"}, "errors is str"),
])
def test_a_vllm_file_at_odds_with_itself(tmp_path, edit, msg):
    d = json.loads((FIX / "vllm_bench_llama8b_c160.json").read_text()) | edit
    p = tmp_path / "v.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ServePlanError, match=msg):
        load_runs(p, "vllm-bench", deployment={"model": "llama-3.1-8b", "gpu": "h200-sxm"})


def test_a_vllm_file_without_tpot_fields_takes_it_from_e2e(tmp_path):
    # vllm bench serve --percentile-metrics ttft,itl,e2el writes no *_tpot_ms fields
    d = json.loads((FIX / "vllm_bench_llama8b_c160.json").read_text())
    d = {k: v for k, v in d.items() if "tpot" not in k}
    p = tmp_path / "v.json"
    p.write_text(json.dumps(d))
    dep = {"model": "llama-3.1-8b", "gpu": "h200-sxm"}
    (run,) = load_runs(p, "vllm-bench", deployment=dep)
    # fixed 100-token outputs: (4283.29 - 1612.27) / 99 ms
    assert run.measured["tpot_mean_s"] == pytest.approx((4.28329 - 1.61227) / 99)
    assert "from the mean E2E and TTFT over 99 tokens" in run.note
    p.write_text(json.dumps({k: v for k, v in d.items() if "e2el" not in k}))
    with pytest.raises(ServePlanError, match="missing field 'mean_tpot_ms'"):
        load_runs(p, "vllm-bench", deployment=dep)
    n = 1600
    p.write_text(json.dumps(d | {"input_lens": [1000] * n, "output_lens": [50, 150] * (n // 2)}))
    with pytest.raises(ServePlanError, match="missing field 'mean_tpot_ms'; .* and these vary"):
        load_runs(p, "vllm-bench", deployment=dep)


def test_tpot_from_e2e_needs_outputs_known_to_be_alike(tmp_path):
    d = json.loads((FIX / "vllm_bench_llama8b_c160.json").read_text())
    d = {k: v for k, v in d.items() if "tpot" not in k}
    p = tmp_path / "v.json"
    dep = {"model": "llama-3.1-8b", "gpu": "h200-sxm"}
    for edit, msg in (({"total_output_tokens": 96_800}, "and these vary"),  # a mean of 60.5
                      ({"mean_e2el_ms": 0.0}, "no mean E2E to take it from"),
                      ({"std_tpot_ms": 2.7}, "missing field 'mean_tpot_ms'$")):  # some tpot fields
        p.write_text(json.dumps(d | edit))
        with pytest.raises(ServePlanError, match=msg):
            load_runs(p, "vllm-bench", deployment=dep)


def test_list_totals_are_checked_in_both_layouts_and_failures_count(tmp_path):
    dep = {"model": "llama-3.1-8b", "gpu": "h200-sxm"}
    s = json.loads((FIX / "sglang_bench_llama8b.jsonl").read_text().splitlines()[0])
    n = 1600
    s = {k: v for k, v in s.items() if not k.startswith("total_")}
    lists = {"input_lens": [1000] * n, "output_lens": [100] * n, "errors": [""] * n}
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps(s | {"total_input": 1000 * n, "total_output": 1, "details": lists}))
    with pytest.raises(ServePlanError, match="sum to 160,000 but total_output=1"):
        load_runs(p, "sglang-bench", deployment=dep)
    # a vLLM run with real failures: listed, zero output, counted in `failed`
    v = json.loads((FIX / "vllm_bench_llama8b_c160.json").read_text())
    ins, outs = [1000] * n, [100] * (n - 2) + [0, 0]
    v |= {"num_prompts": n, "completed": n - 2, "failed": 2, "input_lens": ins, "output_lens": outs,
          "errors": [""] * (n - 2) + ["timeout", "timeout"], "total_input_tokens": 1000 * (n - 2),
          "total_output_tokens": 100 * (n - 2)}
    p = tmp_path / "v.json"
    p.write_text(json.dumps(v))
    (run,) = load_runs(p, "vllm-bench", deployment=dep)
    assert run.workload == "fixed:1000,100"
    p.write_text(json.dumps({k: x for k, x in v.items() if k != "num_prompts"} | {"failed": 1}))
    with pytest.raises(ServePlanError, match="failed=1 but input_lens lists 1600 requests"):
        load_runs(p, "vllm-bench", deployment=dep)


def test_a_manifest_entry_whose_plan_file_is_missing_is_named(tmp_path):
    (tmp_path / "v.json").write_text((FIX / "vllm_bench_llama8b_c160.json").read_text())
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"runs": [{"file": "v.json", "format": "vllm-bench",
                                       "deployment": "nope_plan.json"}]}))
    with pytest.raises(ServePlanError, match=r"runs\[1\] \(v.json\): deployment: .*nope_plan.json"):
        load_manifest(m)
