"""Helpers for simulator tests: a toy deployment on the tiny model and toy GPU."""

from __future__ import annotations

from dataclasses import replace

import pytest

from costmodel.model import CostModel
from sim.deployment import Deployment, PoolConfig


@pytest.fixture
def toy_cm(tiny_model, toy_gpu) -> CostModel:
    """The scheduler alone: no API-server time, so a request reaches the engine when it arrives
    (the hand-computed timelines and queueing closed forms assume that; test_frontend.py tests
    the API server)."""
    cm = CostModel(tiny_model, toy_gpu)
    cm.eff = replace(cm.eff, frontend_s=0.0, frontend_per_token_s=0.0)
    return cm


@pytest.fixture
def toy_deployment(tiny_model, toy_gpu):
    """Factory: one colocated pool of the tiny model on the toy GPU with the given knobs."""

    def make(replicas: int = 1, router: str = "least_tokens", **pool_kw) -> Deployment:
        kw = {"max_num_seqs": 8, "max_num_batched_tokens": 256, "block_size": 16} | pool_kw
        pool = PoolConfig(role="colocated", gpu=toy_gpu, replicas=replicas, **kw)
        return Deployment(model=tiny_model, pools=(pool,), router=router)

    return make


@pytest.fixture
def trace_file(tmp_path):
    """Factory: write a native CSV trace (input_len, output_len, arrival_s rows) and return its path."""

    def write(rows, header: str = "input_len,output_len,arrival_s", name: str = "trace.csv"):
        p = tmp_path / name
        p.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
        return p

    return write
