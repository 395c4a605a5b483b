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


@pytest.fixture
def chunk_time_runs():
    """Factory: three synthetic vLLM runs of Llama-3.2-1B on one H100, measured as the
    simulator replays them under the given parameters (default: 120 us per streamed chunk). One
    backs the API server up, so a fit replays the chunk-time grid, its rounds and the held-out
    refits (tests/sim/test_runs_workers.py, test_runs_memo.py)."""
    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration
    from sim.runs.types import MeasuredRun
    from sim.runs.workers import replay_run

    def make(gpu: str = "h100-sxm", **truth) -> list[MeasuredRun]:
        eff = replace(default_efficiencies(gpu), **({"frontend_stream_s": 120e-6} | truth))
        prof = CalibrationProfile(gpus={gpu: GpuCalibration(eff)})
        runs = []
        for isl, osl, c in [(256, 32, 128), (512, 32, 4), (128, 24, 48)]:
            dep = Deployment.colocated("llama-3.2-1b", gpu, tp=1)
            r = MeasuredRun("synthetic.csv", f"{isl}x{osl}_c{c}", "vllm", "0.12", dep,
                            f"fixed:{isl},{osl}", concurrency=c, num_requests=4 * c,
                            measured={"ttft_mean_s": 0.1, "tpot_mean_s": 0.01})
            runs.append(replace(r, measured=replay_run(r, prof, record=False)[1]))
        return runs

    return make
