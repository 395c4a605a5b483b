"""The service under load on loopback (the light version of benchmarks/robustness.py):
`serveplan serve` in a subprocess gets 40 plan requests at once, a mix of 4 distinct small
plans (so most requests join a running job or hit the cache), twice. Every response is a 200
identical to the same request sent alone; the server's memory does not grow between rounds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CONCURRENT = 40


def _bench():
    spec = importlib.util.spec_from_file_location("_robustness_bench", REPO / "benchmarks" / "robustness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def server(bench, tmp_path_factory, service_mod):
    data = service_mod.write_data_dir(tmp_path_factory.mktemp("load") / "data")
    log = tmp_path_factory.mktemp("load-log") / "serve.log"
    with bench.LiveServer(data, workers=2, queue=CONCURRENT + 8, log=log) as srv:
        yield srv


def test_concurrent_plans_all_succeed_identical_to_sequential(bench, server):
    bodies = [dict(bench.LOAD_PLANS[i % len(bench.LOAD_PLANS)], seed=0) for i in range(CONCURRENT)]
    rss = []
    for _ in range(2):
        results, wall_s = bench.load_round(server.base, bodies, timeout_s=240)
        assert [s for s, _ in results] == [200] * CONCURRENT, {s for s, _ in results}
        assert wall_s < 240
        rss.append(server.rss_bytes())
    with httpx.Client(base_url=server.base, timeout=240) as c:
        alone = {}
        for b in bench.LOAD_PLANS:
            r = c.post("/v1/plan", json=dict(b, seed=0))
            assert r.status_code == 200
            alone[json.dumps(dict(b, seed=0), sort_keys=True)] = bench.comparable(r.json())
    for b, (_, doc) in zip(bodies, results, strict=True):
        assert bench.comparable(doc) == alone[json.dumps(b, sort_keys=True)]
    # the second round is all cache hits: no growth beyond noise (allocator slack)
    assert rss[1] <= rss[0] * 1.10 + 16 * 2**20, [x / 2**20 for x in rss]


def test_plans_from_the_service_equal_the_library(bench, server):
    """A plan served under load is the plan `planner.plan()` returns in this process."""
    from planner import plan

    body = dict(bench.LOAD_PLANS[0], seed=0)
    with httpx.Client(base_url=server.base, timeout=240) as c:
        served = c.post("/v1/plan", json=body).json()
    local = plan(**body, workers=1).to_dict()
    assert bench.comparable(served)["deployment"] == bench.comparable(local)["deployment"]
    assert bench.comparable(served)["predicted"] == pytest.approx(bench.comparable(local)["predicted"])
