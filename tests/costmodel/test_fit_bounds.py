"""Physical bounds in the fit: a fitted constant never sits silently at a bound or past what a GPU
can do, a value at a bound still loads, and every parameter says where it came from."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from costmodel.bounds import MAX_KERNEL_FIXED_S, bound_messages, fit_bounds
from costmodel.calibration import CalibrationProfile
from costmodel.efficiencies import PARAM_BOUNDS, clock_scale
from costmodel.fit import fit_params, fit_profile
from costmodel.hardware import HardwareSpec, load_gpu
from costmodel.importers import tidy
from planner.cli import app

H200_RUN = "data/gpu_runs/h200_2026-12-04"


def launch_bound_gemms(gpu: str = "h200-sxm", t_s: float = 80e-6) -> pd.DataFrame:
    """Small GEMMs all measured at `t_s`: what eager timing of a launch-bound kernel looks like."""
    rng = np.random.default_rng(0)
    n = 40
    return tidy(pd.DataFrame({"op": "qkv_proj", "gpu": gpu, "kernel": "triton:matmul",
                              "m": rng.integers(1, 64, n), "n": rng.choice([256, 512], n),
                              "k": rng.choice([128, 256], n), "measured_s": t_s}))


def test_gpu_fixed_times_and_efficiencies_are_held_to_physical_ceilings():
    h200 = load_gpu("h200-sxm")
    lo, hi = fit_bounds("kernel_overhead_s", h200)
    assert hi * clock_scale(h200) == pytest.approx(MAX_KERNEL_FIXED_S)
    assert fit_bounds("gemm_mem_eff", h200)[1] == 1.0
    assert fit_bounds("attn_overhead_s", h200)[1] * clock_scale(h200) == pytest.approx(3 * MAX_KERNEL_FIXED_S)
    cpu = HardwareSpec("cpu", 1e11, 0.0, 8e9, 1e10, 0.0, 1e10, 1e9, 8, 0.0, vendor="cpu", sm_count=1)
    assert fit_bounds("kernel_overhead_s", cpu) == PARAM_BOUNDS["kernel_overhead_s"]


def test_launch_bound_rows_end_at_the_ceiling_with_a_message_and_still_load(tmp_path):
    rows = launch_bound_gemms()
    res = fit_params(rows, params=["kernel_overhead_s", "gemm_mem_eff"])
    hi = fit_bounds("kernel_overhead_s", load_gpu("h200-sxm"))[1]
    assert res.params.kernel_overhead_s <= hi  # clipped: exp(log(hi)) may be an ulp above
    assert res.params.kernel_overhead_s == pytest.approx(hi, rel=1e-6)
    msg = [m for m in res.messages if "kernel_overhead_s" in m]
    assert len(msg) == 1 and "physical ceiling" in msg[0] and "CUDA graph" in msg[0]
    assert msg[0].startswith("h200-sxm: ") and "us on h200-sxm" in msg[0]
    prof = fit_profile(rows, params=["kernel_overhead_s"])
    assert prof.messages and "kernel_overhead_s" in prof.messages[0]
    prof.save(tmp_path / "p.json")
    back = CalibrationProfile.load(tmp_path / "p.json")
    assert back.messages == prof.messages
    assert back.gpus["h200-sxm"].params.kernel_overhead_s == prof.gpus["h200-sxm"].params.kernel_overhead_s


def test_a_value_an_ulp_past_the_wide_bound_is_clipped_on_a_measured_device():
    """The rounding that made a GPU run's own profile fail to load: exp(log(hi)) > hi."""
    hi = PARAM_BOUNDS["kernel_overhead_s"][1]
    assert float(np.exp(np.log(hi))) > hi  # the rounding this guards against
    cpu = HardwareSpec("cpu-bounds-test", 1e11, 0.0, 8e9, 1e10, 0.0, 1e10, 1e9, 8, 0.0, vendor="cpu",
                       sm_count=1, gemm_row_tile=1)
    from costmodel.hardware import register_measured

    register_measured(cpu)
    res = fit_params(launch_bound_gemms(cpu.name, 1.0), params=["kernel_overhead_s"])
    assert res.params.kernel_overhead_s <= hi
    assert any("upper bound" in m for m in res.messages)


def test_messages_name_lower_bounds_too():
    h100 = load_gpu("h100-sxm")
    msgs = bound_messages({"gemm_mem_eff": 0.05, "attn_per_seq_s": 2e-9, "gemm_compute_eff": 0.7},
                          ["gemm_mem_eff", "attn_per_seq_s", "gemm_compute_eff"], h100)
    assert len(msgs) == 2
    assert "gemm_mem_eff = 0.05 sits at its lower bound 0.05" in msgs[0]
    assert "attn_per_seq_s" in msgs[1] and "effectively 0" in msgs[1]


def test_every_parameter_records_its_source():
    rows = launch_bound_gemms()
    prof = fit_profile(rows, params=["kernel_overhead_s", "gemm_mem_eff"])
    src = prof.gpus["h200-sxm"].sources
    assert set(src) == set(PARAM_BOUNDS)
    assert src["kernel_overhead_s"] == "fit: rows of triton:matmul"
    assert src["gemm_compute_eff"].startswith("default: Hopper defaults")
    assert "cannot measure" in src["host_overhead_s"] and "vllm-bench" in src["host_overhead_s"]
    assert src["norm_mem_eff"].startswith("default: generic")


def test_the_h200_runs_measurements_print_the_bound_message(shared, tmp_path):
    """`serveplan calibrate` on the first H200 run's rows (timed eagerly) says that the per-kernel
    fixed time sits at its physical ceiling, and why."""
    path = shared / H200_RUN / "measurements.csv"
    out = tmp_path / "x.json"
    res = CliRunner().invoke(app, ["calibrate", "--format", "native", "--measured", str(path),
                                   "--gpu", "h200", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "kernel_overhead_s =" in ln]
    assert len(lines) == 1, res.output
    assert "physical ceiling" in lines[0] and "host launch time" in lines[0]
    prof = json.loads(out.read_text())
    assert any("kernel_overhead_s" in m and "physical ceiling" in m for m in prof["messages"])
    assert prof["gpus"]["h200-sxm"]["params"]["kernel_overhead_s"] * clock_scale(load_gpu("h200-sxm")) \
        <= MAX_KERNEL_FIXED_S * (1 + 1e-9)
    # the profile the run wrote back then, with no messages or sources, still loads
    old = CalibrationProfile.load(shared / H200_RUN / "calibration.json")
    assert old.messages == [] and old.gpus["h200-sxm"].sources == {}


def test_a_table_fit_on_a_start_profile_keeps_its_hardware_source_and_run_messages():
    # the start: a measured device's spec (validate, a custom GPU) and an engine-run fit with a
    # latency interval; a table fit on top refits the kernel parameters the interval was
    # measured under, so the interval goes, with a message saying why
    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import GpuCalibration

    dev = HardwareSpec("my-gpu", 1e14, 0.0, 80e9, 2e12, 0.0, 1e10, 1e9, 8, 0.0, sm_count=100)
    start = CalibrationProfile(
        source="serveplan calibrate --format aic-silicon runs.csv", hardware={"my-gpu": dev},
        gpus={"h200-sxm": GpuCalibration(default_efficiencies("h200-sxm"), {}, 0.0,
                                         {"decode_time_scale": "fit: 5 sglang runs (runs.csv)"},
                                         {"ttft": [-0.2, 0.1]})},
        messages=["h200-sxm (engine runs): the runs do not inform host_overhead_s; kept"])
    prof = fit_profile(launch_bound_gemms(), start=start, params=["gemm_mem_eff"], source="tables")
    assert prof.hardware == {"my-gpu": dev}
    assert prof.source == "serveplan calibrate --format aic-silicon runs.csv; tables"
    cal = prof.gpus["h200-sxm"]
    assert cal.sources["decode_time_scale"] == "fit: 5 sglang runs (runs.csv)"
    assert cal.latency_interval == {}
    assert start.messages[0] in prof.messages
    assert any("latency interval was dropped" in m for m in prof.messages)
