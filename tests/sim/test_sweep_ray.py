"""A real local Ray (2 CPUs) gives the same sweep as the process pool."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'serveplan[ray]')")

from sim.deployment import Deployment, PoolConfig  # noqa: E402
from sim.sweep import RayExecutor, SimTask, run_tasks, sweep  # noqa: E402
from sim.workload import parse_workload  # noqa: E402


@pytest.fixture(scope="module")
def ray_executor():
    ex = RayExecutor(workers=2)
    yield ex
    ray.shutdown()


def test_ray_matches_process_pool(ray_executor):
    wl = parse_workload("azure-conv", rate=3.0)
    deps = [Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", tp=tp, replicas=r),))
            for tp, r in [(1, 1), (2, 1), (1, 2)]]
    local = sweep(deps, wl, num_requests=150, seed=7, workers=2)
    on_ray = sweep(deps, wl, num_requests=150, seed=7, executor=ray_executor)
    cols = ["ttft_p50_s", "ttft_p90_s", "tpot_p90_s", "e2e_p99_s", "throughput_tok_s", "slo_attainment"]
    assert on_ray["error"].isna().all()
    assert local[cols].equals(on_ray[cols])


def test_ray_reports_failures(ray_executor):
    wl = parse_workload("fixed:256,32", rate=2.0)
    bad = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100"),)).to_dict()
    bad["model"] = "llama-3.1-405b"
    res = run_tasks([SimTask(bad, 20, 0, tag="too-big")], wl, executor=ray_executor)
    assert len(res) == 1 and not res[0].ok and res[0].task.tag == "too-big"


def test_plan_on_ray_is_the_plan_without_it(ray_executor):
    from planner import plan

    kw = dict(model="llama-3.1-8b", gpus="h100:2", workload="fixed:512,128", rate=6.0,
              ttft_slo_s=1.0, tpot_slo_s=0.05, num_requests=300)
    local = plan(**kw).to_dict()
    on_ray = plan(**kw, backend="ray").to_dict()
    assert on_ray["search"]["backend"] == "ray"
    for key in ("deployment", "predicted", "launch", "alternatives", "why"):
        assert on_ray[key] == local[key], key
