"""A GPU that is not a preset: its datasheet figures in a calibration profile's `hardware` block
make it a name every command accepts with `--calibration` (plan, simulate, cost step)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from planner.cli import app

A40 = {"name": "a40", "bf16_flops": 149.7e12, "fp8_flops": 0, "hbm_bytes": 48 * 1024**3,
       "hbm_bw_bytes_s": 696e9, "nvlink_bw_bytes_s": 56.25e9, "pcie_bw_bytes_s": 32e9,
       "network_bw_bytes_s": 12.5e9, "gpus_per_node": 8, "price_per_hour_usd": 1.0,
       "price_source": "user", "vendor": "nvidia", "sm_count": 84, "gemm_row_tile": 0}


def _profile(tmp_path):
    p = tmp_path / "a40.json"
    p.write_text(json.dumps({"schema": "serveplan.calibration", "version": 2, "source": "datasheet",
                             "gpus": {"a40": {"params": {}, "hardware": A40}}}))
    return p


def test_plan_and_simulate_on_a_gpu_from_a_profile(tmp_path):
    cal = _profile(tmp_path)
    out = tmp_path / "plan.json"
    args = ["--workload", "fixed:512,128", "--rate", "2", "--ttft-slo", "1", "--tpot-slo", "0.05",
            "--calibration", str(cal)]
    r = CliRunner().invoke(app, ["plan", "--model", "llama-3.1-8b", "--gpu", "a40:2", *args,
                                 "--workers", "1", "--json", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    plan = json.loads(out.read_text())
    assert plan["feasible"] and {p["gpu"] for p in plan["deployment"]["pools"]} == {"a40"}
    # the plan's own simulation command, given the same profile, reproduces `predicted`
    cmd = plan["simulation"]["command"].split()
    assert cmd[:4] == ["serveplan", "simulate", "--plan", "PLAN.json"]
    sim_args = [str(out) if a == "PLAN.json" else str(cal) if a == "CALIBRATION.json" else a
                for a in cmd[3:]]
    r = CliRunner().invoke(app, ["simulate", "--plan", *sim_args])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    for k in ("ttft_p90_s", "tpot_p90_s", "goodput_rps", "slo_attainment"):
        assert metrics[k] == plan["predicted"][k], k
    # the A40's datasheet shows in the cost model: a decode step reads 16 GB of weights at 696 GB/s
    r = CliRunner().invoke(app, ["cost", "step", "--model", "llama-3.1-8b", "--gpu", "a40", "--tp", "1",
                                 "--decode", "1x100", "--calibration", str(cal), "--json"])
    assert r.exit_code == 0, r.output
    step_s = json.loads(r.stdout)["step_time_s"]
    assert 16e9 / 696e9 < step_s < 2 * 16e9 / 696e9


def test_without_the_profile_the_name_is_unknown(tmp_path):
    r = CliRunner().invoke(app, ["plan", "--model", "llama-3.1-8b", "--gpu", "nosuchgpu:2", "--workload",
                                 "fixed:512,128", "--rate", "2", "--ttft-slo", "1", "--tpot-slo", "0.05"])
    assert r.exit_code == 2 and "unknown GPU 'nosuchgpu'" in r.output
