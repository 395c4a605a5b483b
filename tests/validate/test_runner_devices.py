"""The pieces under the runner: device names, measured devices inside a calibration profile, the
CPU's GEMM row tile, the torch attention the CPU times (against float64 loops), timing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from costmodel import roofline as rl
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.efficiencies import Efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from validate.devices import cuda_preset
from validate.measure import ShapeMeasurement, combine_passes
from validate.ops import TorchOps, budget_positions
from validate.shapes import IterationShape
from validate.timing import Timer


@pytest.mark.parametrize("name, mem, preset", [
    ("NVIDIA H100 80GB HBM3", None, "h100-sxm"),
    ("NVIDIA H100 PCIe", None, "h100-pcie"),
    ("NVIDIA H100 NVL", None, "h100-pcie"),
    ("NVIDIA H200", None, "h200-sxm"),
    ("NVIDIA A100-SXM4-80GB", 85e9, "a100-80g"),
    ("NVIDIA A100-SXM4-40GB", 42e9, "a100-40g"),
    ("NVIDIA A100-PCIE-40GB", None, "a100-40g"),
    ("NVIDIA L40S", None, "l40s"),
    ("NVIDIA L4", None, "l4"),
    ("NVIDIA A10G", None, "a10g"),
    ("AMD Instinct MI300X", None, "mi300x"),
    ("Tesla T4", None, None),
])
def test_cuda_names_map_to_presets(name, mem, preset):
    assert cuda_preset(name, mem) == preset


def _spec(name: str):
    return replace(load_gpu("a10g"), name=name, bf16_flops=3e11, fp8_flops=0.0, hbm_bw_bytes_s=2e10,
                   vendor="cpu", sm_count=1, gemm_row_tile=1, price_per_hour_usd=0.0)


def test_profile_carries_and_registers_a_measured_device(tmp_path):
    spec = _spec("cpu-test-box")
    with pytest.raises(ServePlanError, match="unknown GPU 'cpu-test-box'"):
        load_gpu("cpu-test-box")
    prof = CalibrationProfile({"cpu-test-box": GpuCalibration(Efficiencies(gemm_compute_eff=0.5))},
                              hardware={"cpu-test-box": spec})
    prof.save(tmp_path / "c.json")
    back = CalibrationProfile.load(tmp_path / "c.json")
    assert load_gpu("cpu-test-box") == spec and back.hardware["cpu-test-box"] == spec
    assert back.efficiencies_for("cpu-test-box").gemm_compute_eff == 0.5


def test_bad_hardware_blocks_are_refused(tmp_path):
    good = CalibrationProfile({"cpu-test-2": GpuCalibration(Efficiencies())},
                              hardware={"cpu-test-2": _spec("cpu-test-2")}).to_dict()
    bad = dict(good)
    bad["gpus"] = {"cpu-test-2": {**good["gpus"]["cpu-test-2"],
                                  "hardware": {**good["gpus"]["cpu-test-2"]["hardware"], "bf16_flops": -1}}}
    with pytest.raises(ServePlanError, match="bf16_flops = -1"):
        CalibrationProfile.from_dict(bad)
    clash = CalibrationProfile({"h100-sxm": GpuCalibration(Efficiencies())},
                               hardware={"h100-sxm": load_gpu("h100-sxm")}).to_dict()
    with pytest.raises(ServePlanError, match="shadow the GPU preset"):
        CalibrationProfile.from_dict(clash)


def test_cpu_gemm_rows_are_not_padded_to_gpu_tiles():
    """Compute-bound (bandwidth huge): a GPU pads 65 rows to 128, a row tile of 1 does not."""
    gpu = replace(load_gpu("h100-sxm"), hbm_bw_bytes_s=1e18)
    cpu = replace(gpu, gemm_row_tile=1, sm_count=1)
    eff = Efficiencies(kernel_overhead_s=0.0, gemm_blend=50.0)
    t = lambda hw, m: rl.gemm_time_s(m, 4096, 4096, hw, eff, hw.bf16_flops, 2.0)  # noqa: E731
    assert t(gpu, 65) / t(gpu, 64) == pytest.approx(2.0, rel=1e-6)
    assert t(cpu, 65) / t(cpu, 64) == pytest.approx(65 / 64, rel=1e-6)
    vec = rl.gemm_time_s_v([64, 65], [4096] * 2, [4096] * 2, cpu, eff, cpu.bf16_flops, 2.0)
    assert vec[0] == pytest.approx(t(cpu, 64)) and vec[1] == pytest.approx(t(cpu, 65))


def _reference(q, k, v, ctx, L, selected):
    """float64 loops: query t of sequence b sits at ctx - L + t, sees its kept keys up to it."""
    B, _, Hq, D = q.shape
    Hkv = k.shape[1]
    out = torch.zeros(B, L, Hq, D, dtype=torch.float64)
    for b in range(B):
        keep = selected[b].tolist() if selected is not None else list(range(ctx))
        for t in range(L):
            vis = [p for p in keep if p <= ctx - L + t]
            for h in range(Hq):
                j = h // (Hq // Hkv)
                kk, vv = k[b, j, vis].double(), v[b, j, vis].double()
                p = torch.softmax(kk @ q[b, t, h].double() / math.sqrt(D), 0)
                out[b, t, h] = p @ vv
    return out


@pytest.mark.parametrize("L, budget", [(1, None), (3, None), (1, 12), (3, 12)])
def test_torch_decode_attention_matches_loops(L, budget):
    g = torch.Generator().manual_seed(7)
    B, Hq, Hkv, D, ctx = 3, 8, 2, 16, 29
    q = torch.randn(B, L, Hq, D, generator=g)
    k = torch.randn(B, ctx, Hkv, D, generator=g)
    v = torch.randn(B, ctx, Hkv, D, generator=g)
    sel = budget_positions(B, ctx, L, budget, g) if budget else None
    ops = TorchOps()
    cache = ops.decode_cache(k, v, L, sel, g)
    out = ops.decode_attention(q, cache)
    torch.testing.assert_close(out.double(), _reference(q, cache.k, cache.v, ctx, L, sel),
                               rtol=1e-5, atol=1e-5)
    if sel is not None:  # the new tokens are always kept, older ones sampled, all distinct
        assert sel.shape == (B, budget)
        for row in sel.tolist():
            assert len(set(row)) == budget and row[-L:] == list(range(ctx - L, ctx))


def test_timer_rotates_and_takes_the_median():
    seen = []
    calls = [lambda i=i: seen.append(i) for i in range(3)]
    t = Timer("cpu", warmup=2, min_reps=3, reps=5, budget_s=100.0).median_s(calls)
    assert seen == [0, 1, 0, 1, 2, 0, 1] and t >= 0  # 2 warm-up calls, then 5 timed in turn
    seen.clear()
    Timer("cpu", warmup=0, min_reps=3, reps=50, budget_s=0.0).median_s(calls)
    assert len(seen) == 3  # stops at min_reps once the time budget is spent


def test_passes_keep_the_least_disturbed_measurement():
    shape = IterationShape("s", "decode", "colocated", "llama-3.1-8b", "h100-sxm", 1, decode_batch=1,
                           decode_context=10)
    a = ShapeMeasurement(shape, [{"op": "qkv_proj", "measured_s": 2.0}], 0.3, 0.1, 1, 32)
    b = ShapeMeasurement(shape, [{"op": "qkv_proj", "measured_s": 1.0}], 0.5, 0.05, 1, 32)
    c = combine_passes([a, b])
    assert c.rows[0]["measured_s"] == 1.0 and c.layer_s == 0.3 and c.head_s == 0.05
    assert c.iteration_s == pytest.approx(0.05 + 32 * 0.3)


def test_the_cpu_is_measured_once_per_process_and_thread_count(monkeypatch):
    """A CPU without native bf16 takes about 90 s to probe (torch emulates the matmuls): a process
    keeps what it measured for each thread count, and measures a new thread count anew."""
    from validate import devices

    calls = []

    def fake(threads, reps):
        calls.append((threads, reps))
        return replace(load_gpu("h100-sxm"), name=devices.CPU_NAME, bf16_flops=1e9 * threads)

    monkeypatch.setattr(devices, "_measure_cpu", fake)
    monkeypatch.setattr(devices, "_CPU_SPECS", {})
    a, b = devices.cpu_spec(), devices.cpu_spec()
    assert a is b and calls == [(1, 5)]
    c = devices.cpu_spec(threads=2)
    assert c.bf16_flops == 2e9 and calls == [(1, 5), (2, 5)]


def test_the_matmul_ladder_stops_before_a_call_past_its_budget():
    """A CPU that emulates bf16 peaks on the small shapes and would spend seconds a call on the
    large ones: the ladder skips a shape its best rate so far says is over budget."""
    from validate.devices import CPU_MATMULS, peak_over_ladder

    def timer(rate_of):
        timed = []

        def best_s_of(shape):
            timed.append(shape)
            m, n, k = shape
            return 2.0 * m * n * k / rate_of(shape)
        return timed, best_s_of

    # native bf16: 50-80 GFLOP/s, the largest shape 0.1 s a call; every shape runs, the best wins
    timed, fast = timer(lambda s: 80e9 if s == CPU_MATMULS[-1] else 50e9)
    assert peak_over_ladder(fast, CPU_MATMULS, 1.0) == pytest.approx(80e9)
    assert timed == list(CPU_MATMULS)
    # emulated: 1.35 GFLOP/s at 256-512 predicts 1.6 s for 1024^3: the ladder stops at 512
    rates = {256: 1.35e9, 512: 1.34e9, 1024: 0.96e9, 2048: 0.77e9}
    timed, slow = timer(lambda s: rates[s[0]])
    assert peak_over_ladder(slow, CPU_MATMULS, 1.0) == pytest.approx(1.35e9)
    assert timed == list(CPU_MATMULS[:2])
    # the first shape always runs, whatever its time
    timed, crawl = timer(lambda s: 1e6)
    assert peak_over_ladder(crawl, CPU_MATMULS, 1.0) == pytest.approx(1e6) and timed == [CPU_MATMULS[0]]
