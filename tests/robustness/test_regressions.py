"""Regression tests for bad inputs found by the robustness work: each was a traceback, a hang or
an out-of-memory kill before its fix, and is now a ServePlanError naming the value and the range."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel.errors import ServePlanError


def test_num_requests_is_capped_before_allocating():
    # 10^12 requests used to reach numpy's allocator and die with MemoryError
    from sim.workload import MAX_REQUESTS, generate_requests, parse_workload

    wl = parse_workload("fixed:16,4", rate=1.0)
    with pytest.raises(ServePlanError, match=r"num_requests=1000000000000; expected an integer in \[1, 2_000_000\]"):
        generate_requests(wl, 10**12, np.random.default_rng(0))
    assert len(generate_requests(wl, 3, np.random.default_rng(0)).input_len) == 3
    assert MAX_REQUESTS == 2_000_000


def test_replicas_are_capped():
    # 10^8 replicas used to build 10^8 simpy processes and be killed for memory
    from sim.deployment import MAX_REPLICAS, PoolConfig

    with pytest.raises(ServePlanError, match=r"replicas=100000000; expected an integer in \[1, 4096\]"):
        PoolConfig(role="colocated", gpu="l40s", replicas=10**8)
    assert PoolConfig(role="colocated", gpu="l40s", replicas=MAX_REPLICAS).num_gpus == MAX_REPLICAS
