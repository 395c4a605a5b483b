"""Shared fixtures: tiny presets and the path to ../shared data."""

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
