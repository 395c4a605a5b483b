"""`serveplan serve` for real: uvicorn on a loopback port in a subprocess, called over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent / "serveplan"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    port = _free_port()
    log = tmp_path_factory.mktemp("live") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--timeout-s", "60", "--data-dir", str(data_dir), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serveplan serve did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_live_server_plans_simulates_and_refuses(server, small_plan):
    base, _, log = server
    with httpx.Client(base_url=base, timeout=60) as c:
        h = c.get("/healthz").json()
        assert h["status"] == "ok" and h["workers"] == 1 and h["data_dir"] is True
        assert "PlanRequest" in c.get("/openapi.json").json()["components"]["schemas"]
        r = c.post("/v1/plan", json=small_plan)
        assert r.status_code == 200, r.text
        plan = r.json()
        assert plan["schema"] == "serveplan.plan" and plan["feasible"] is True
        assert plan["predicted"]["ttft_p90_s"] <= small_plan["ttft_slo_s"]
        assert plan["predicted"]["tpot_p90_s"] <= small_plan["tpot_slo_s"]
        # the plan's deployment runs in the simulator as it came back
        s = c.post("/v1/simulate", json={"plan": plan, "workload": "trace:mini.csv", "rate": 2.0,
                                         "num_requests": 100})
        assert s.status_code == 200, s.text
        assert s.json()["num_completed"] == 100
        bad = c.post("/v1/plan", json=dict(small_plan, workload="trace:/etc/passwd"))
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "workload"]
    assert "Traceback" not in log.read_text()


def test_live_server_stops_cleanly_on_sigint(server):
    _, proc, log = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0, log.read_text()
