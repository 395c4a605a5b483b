"""The HardwareSpec of the device that runs the measurements.

On a CUDA GPU the device is a datasheet preset, matched from `torch.cuda.get_device_name()`
(`NVIDIA H100 80GB HBM3` -> `h100-sxm`). A GPU with no preset, and the CPU, are measured
here instead: peak bf16 FLOP/s from large torch matmuls, memory bandwidth from a large copy.
The CPU becomes the device "cpu", so a calibration fitted on a CPU says it describes the CPU
and never passes for a GPU's. Its spec travels inside the calibration profile (`hardware`)
and is registered by name when the profile loads (`costmodel.hardware.register_measured`).

CPU timings use `threads` torch threads (default 1): on a small shared machine one thread is
far steadier than two, and the measured peaks are those of the same thread count. A process
measures its CPU once per thread count and keeps the spec: a CPU without native bf16 runs the
probe's matmuls at about 1 GFLOP/s (torch emulates them), so the probe stops before a matmul
that would take over a second (`peak_over_ladder`: about 3 s on an AMD EPYC without AVX-512 BF16, 93 s
when it ran every shape), and the peak does not change between two validations in one process.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace

from costmodel.hardware import HardwareSpec, load_gpu, register_measured

CPU_NAME = "cpu"
_CPU_SPECS: dict[tuple[int, int], HardwareSpec] = {}
# torch.cuda.get_device_name() pattern -> preset; the first match wins (order matters)
_CUDA_NAMES = (
    (r"h100.*(pcie|nvl)", "h100-pcie"),
    (r"h100|gh200", "h100-sxm"),
    (r"h200", "h200-sxm"),
    (r"b200|gb200", "b200"),
    (r"a100.*(40|pcie-40)", "a100-40g"),
    (r"a100", "a100-80g"),
    (r"l40s", "l40s"),
    (r"\bl4\b", "l4"),
    (r"a10g", "a10g"),
    (r"mi300x?", "mi300x"),
)


def cuda_preset(device_name: str, total_memory_bytes: float | None = None) -> str | None:
    """The GPU preset of a CUDA device name, or None when no preset matches."""
    low = device_name.lower()
    for pattern, preset in _CUDA_NAMES:
        if re.search(pattern, low):
            if preset == "a100-80g" and total_memory_bytes is not None and total_memory_bytes < 60e9:
                return "a100-40g"
            return preset
    return None


def _best_s(fn, reps: int) -> float:
    """The fastest of `reps` timed calls (after one untimed): a peak is the best the device
    does, and other load on the machine only slows it."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# CPU matmul shapes, smallest first. A CPU with native bf16 runs the largest in a few tens of ms;
# one that emulates bf16 (about 1 GFLOP/s) would take 11 s a call there, and peaks on the
# smaller ones anyway (an AMD EPYC without AVX-512 BF16: 1.35 GFLOP/s at 256-512, 0.96 at 1024,
# 0.77 at 2048 x 1024 x 2048), so the ladder stops before a shape whose call would pass a second.
CPU_MATMULS = ((256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 1024, 2048))
GPU_MATMULS = ((8192, 8192, 8192), (4096, 8192, 4096))
CALL_BUDGET_S = 1.0


def peak_over_ladder(best_s_of, shapes, call_budget_s: float = CALL_BUDGET_S) -> float:
    """The best FLOP/s over `shapes` (m, n, k), timed in order by `best_s_of(shape)` (seconds a
    call), stopping before a shape that the best rate so far says would take over `call_budget_s`
    a call. The first shape always runs."""
    best = 0.0
    for i, (m, n, k) in enumerate(shapes):
        flop = 2.0 * m * n * k
        if i and flop / best > call_budget_s:
            break
        best = max(best, flop / best_s_of((m, n, k)))
    return best


def measure_peaks(device: str = "cpu", reps: int = 5) -> tuple[float, float]:
    """(bf16 matmul FLOP/s, copy bandwidth bytes/s) on `device`, the best of a few shapes.

    FLOP/s: 2 m n k / the best time of bf16 matmuls (`CPU_MATMULS` on a CPU, up to the largest
    that takes under a second a call; `GPU_MATMULS` on a GPU). Bandwidth: a copy of 256 MiB moves
    512 MiB (read + write). CUDA times are taken after a synchronize."""
    import torch

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def best_s_of(shape):
        m, n, k = shape
        a = torch.randn(m, k, device=dev).to(torch.bfloat16)
        b = torch.randn(k, n, device=dev).to(torch.bfloat16)

        def mm():
            a @ b
            sync()

        return _best_s(mm, reps)

    best_flops = peak_over_ladder(best_s_of, GPU_MATMULS if dev.type == "cuda" else CPU_MATMULS,
                                  float("inf") if dev.type == "cuda" else CALL_BUDGET_S)
    x = torch.randn(64 * 1024 * 1024, device=dev)  # 256 MiB of fp32
    y = torch.empty_like(x)

    def copy():
        y.copy_(x)
        sync()

    bw = 2.0 * x.numel() * 4 / _best_s(copy, reps)
    return best_flops, bw


def cpu_spec(threads: int = 1, reps: int = 5) -> HardwareSpec:
    """This CPU as a HardwareSpec named "cpu", measured with `threads` torch threads (once per
    process and thread count; module doc).

    TP is emulated on one device (each shape is what one GPU of the replica runs), so the spec
    claims 8 "GPUs per node" to let TP plans through, with memory bandwidth as its only link."""
    hit = _CPU_SPECS.get((threads, reps))
    if hit is None:
        hit = _CPU_SPECS[(threads, reps)] = _measure_cpu(threads, reps)
    return hit


def _measure_cpu(threads: int, reps: int) -> HardwareSpec:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        flops, bw = measure_peaks("cpu", reps)
    finally:
        torch.set_num_threads(before)
    try:
        ram = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        ram = 16.0 * 1024**3
    return HardwareSpec(
        name=CPU_NAME, bf16_flops=flops, fp8_flops=0.0, hbm_bytes=ram, hbm_bw_bytes_s=bw,
        nvlink_bw_bytes_s=0.0, pcie_bw_bytes_s=bw, network_bw_bytes_s=bw / 10,
        gpus_per_node=8, price_per_hour_usd=0.0,
        price_source=f"measured CPU ({threads} thread(s)), not a GPU: no price",
        vendor="cpu", sm_count=max(1, threads), gemm_row_tile=1)


def arch_of_capability(major: int, minor: int) -> str:
    """The architecture (costmodel.arch_defaults) of a CUDA compute capability; '' if unknown
    (a ROCm device, an older NVIDIA part): such a device starts from the generic defaults."""
    if major == 8:
        return "ada" if minor >= 9 else "ampere"
    return {9: "hopper", 10: "blackwell", 12: "blackwell"}.get(major, "")


def device_spec(device: str, threads: int = 1) -> tuple[HardwareSpec, str]:
    """(HardwareSpec, how it was found) of the `cuda` or `cpu` device, registered by name so
    that the cost model and the fit can load it."""
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        preset = cuda_preset(name, float(props.total_memory))
        if preset is not None:
            return load_gpu(preset), f"{name} -> preset {preset}"
        flops, bw = measure_peaks("cuda")
        slug = "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        spec = replace(load_gpu("h100-sxm"), name=slug, bf16_flops=flops, fp8_flops=0.0,
                       hbm_bytes=float(props.total_memory), hbm_bw_bytes_s=bw,
                       price_source="measured GPU with no preset", sm_count=props.multi_processor_count,
                       arch=arch_of_capability(props.major, props.minor))
        return register_measured(spec), f"{name}: no preset; peaks measured"
    spec = register_measured(cpu_spec(threads))
    return spec, (f"CPU, {threads} thread(s): measured {spec.bf16_flops / 1e9:.0f} GFLOP/s bf16, "
                  f"{spec.hbm_bw_bytes_s / 1e9:.1f} GB/s copy bandwidth")


def ran_kv_dtype(kv_dtype: str, device: str, messages: list[str]) -> str:
    """fp8 KV caches run where the device reads fp8 (any CPU through torch; CUDA 8.9+), else
    bf16 with a message. int4 and other KV dtypes run as bf16."""
    if kv_dtype == "bf16":
        return "bf16"
    if kv_dtype == "fp8":
        if device != "cuda":
            messages.append("KV cache fp8: decode caches are stored in fp8 (e4m3, one scale each "
                            "for K and V) and dequantised by torch before attention; prefill "
                            "attention reads its K/V in bf16 as computed")
            return "fp8"
        import torch

        from validate.kernels._device import fp8_supported

        if fp8_supported(torch.device("cuda")):
            messages.append("KV cache fp8: the paged decode kernel reads e4m3 caches and "
                            "dequantises on load; prefill attention reads its K/V in bf16 as computed")
            return "fp8"
    messages.append(f"KV cache {kv_dtype}: no {kv_dtype} attention kernel on this device; attention is "
                    "measured (and predicted) with a bf16 KV cache")
    return "bf16"
