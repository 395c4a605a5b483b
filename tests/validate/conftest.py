"""Kernel tests run the Triton kernels on a CUDA GPU when there is one, else in Triton's
interpreter on the CPU.

`@triton.jit` reads TRITON_INTERPRET when a kernel is decorated, i.e. when a kernel module
is first imported, so tests/conftest.py sets it before any test imports triton (on a machine
with no GPU driver); here it is only settled for a driver without a usable GPU. The whole
folder is skipped, with the reason, when torch or triton is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import zlib

import pytest

try:
    import torch
except ImportError:
    pytest.skip("torch is not installed; kernel tests need: pip install serveplan[validate]",
                allow_module_level=True)
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed; kernel tests need: pip install serveplan[validate]",
                allow_module_level=True)

# tests/conftest.py sets TRITON_INTERPRET=1 on machines with no GPU driver; a driver without a
# usable GPU (or CPU-only torch) is caught here, before this folder imports triton
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

try:
    import triton  # noqa: F401  (imported after TRITON_INTERPRET is settled)
except ImportError as exc:
    pytest.skip(f"triton does not import ({exc}); kernel tests need a working triton",
                allow_module_level=True)


@pytest.fixture
def device() -> str:
    """Where test tensors live: the GPU, or the CPU under the interpreter."""
    from validate.kernels import interpreting

    return "cpu" if interpreting() else "cuda"


# Set SERVEPLAN_TEST_SEED to draw a different set of inputs for the whole run.
BASE_SEED = int(os.environ.get("SERVEPLAN_TEST_SEED", "0"))


def pytest_report_header(config: pytest.Config) -> str:
    from validate.kernels import interpreting

    where = "Triton interpreter (CPU)" if interpreting() else "CUDA"
    return f"validate kernels: {where}, SERVEPLAN_TEST_SEED={BASE_SEED}"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed per test, from its id and SERVEPLAN_TEST_SEED: every test draws different
    inputs, and a failure reproduces exactly."""
    return zlib.crc32(request.node.nodeid.encode()) ^ BASE_SEED


@pytest.fixture
def gen(seed: int) -> torch.Generator:
    """CPU generator for test inputs (drawn on the CPU, then moved, so the values do not
    depend on the device)."""
    return torch.Generator().manual_seed(seed)
