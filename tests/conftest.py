"""Shared fixtures: tiny presets, the path to ../shared data, and measured rows computed by the
cost model itself at known parameters (for the fit and the calibrate CLI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from costmodel.hardware import HardwareSpec
from costmodel.specs import ModelSpec

REPO = Path(__file__).resolve().parents[1]


def _no_gpu_here() -> bool:
    """No GPU driver on this machine (checked without importing torch, which every test session
    would then pay for): no /dev/nvidia*, no /proc/driver/nvidia, no ROCm /dev/kfd."""
    return not (Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()
                or any(Path("/dev").glob("nvidia[0-9]*")))


# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when a kernel module is first
# imported, so it is set here, before any test imports triton: on a machine without a GPU the
# kernels run in Triton's CPU interpreter. Where a driver exists tests/validate/conftest.py
# decides with torch.cuda. An explicit TRITON_INTERPRET in the environment wins.
if "TRITON_INTERPRET" not in os.environ and _no_gpu_here():
    os.environ["TRITON_INTERPRET"] = "1"


def shared_dir() -> Path:
    """../shared (or $SERVEPLAN_SHARED); tests that need it fail loudly when it is missing."""
    p = Path(os.environ.get("SERVEPLAN_SHARED", REPO.parent / "shared"))
    return p


@pytest.fixture(scope="session")
def shared() -> Path:
    p = shared_dir()
    if not (p / "data").is_dir():
        pytest.fail(f"shared data not found at {p}/data: set SERVEPLAN_SHARED or put shared/ beside the repo")
    return p


@pytest.fixture
def tiny_model() -> ModelSpec:
    # 2 layers, GQA 4:2, small enough to count FLOPs by hand
    return ModelSpec(name="tiny", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2,
                     head_dim=16, intermediate_size=128, vocab_size=1000)


@pytest.fixture
def toy_gpu() -> HardwareSpec:
    # round numbers: 100 TFLOP/s, 1 TB/s, 10 GiB
    return HardwareSpec(name="toy", bf16_flops=100e12, fp8_flops=200e12, hbm_bytes=10 * 1024**3,
                        hbm_bw_bytes_s=1e12, nvlink_bw_bytes_s=100e9, pcie_bw_bytes_s=10e9,
                        network_bw_bytes_s=10e9, gpus_per_node=8, price_per_hour_usd=1.0, sm_count=100)


@pytest.fixture(scope="session")
def fit_truth():
    """The parameters `synthetic_rows` are computed at: H100 rows, and a fit starts from the
    H100's (Hopper) defaults, so some of those are moved."""
    from dataclasses import replace

    from costmodel.arch_defaults import default_efficiencies

    return replace(default_efficiencies("h100-sxm"), gemm_compute_eff=0.62, gemm_mem_eff=0.71,
                   kernel_overhead_s=6e-6, attn_mem_eff=0.66, attn_decode_cta_s=40e-9)


@pytest.fixture(scope="session")
def synthetic_rows(fit_truth):
    """Factory (rng, n=400): GEMM and decode-attention rows whose times the model itself
    computes at `fit_truth`."""
    import pandas as pd

    from costmodel.importers import tidy
    from costmodel.measured import predict_rows

    def make(rng, n: int = 400):
        g = pd.DataFrame({"op": "gemm", "gpu": "h100-sxm", "m": rng.integers(1, 8192, n),
                          "n": rng.choice([1024, 4096, 8192, 14336], n),
                          "k": rng.choice([1024, 4096, 8192], n), "measured_s": 1.0})
        a = pd.DataFrame({"op": "attn_decode", "gpu": "h100-sxm",
                          "batch_size": rng.integers(1, 256, n),
                          "context_len": rng.integers(16, 16384, n), "num_heads": 8,
                          "num_kv_heads": 1, "head_dim": 128, "measured_s": 1.0})
        rows = tidy(pd.concat([g, a], ignore_index=True))
        rows["measured_s"] = predict_rows(rows, params={"h100-sxm": fit_truth})
        return rows

    return make
