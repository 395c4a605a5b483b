"""The service in-process: same JSON as the library and the CLI, caching, catalogues, OpenAPI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from costmodel.jsonio import dump_json
from planner.cli import app as cli_app
from planner.service import schemas

TIMING_KEYS = {("search", "wall_s"), ("search", "sim_wall_s")}


def _without_timings(plan: dict) -> dict:
    d = json.loads(json.dumps(plan))
    for block, key in TIMING_KEYS:
        d[block].pop(key)
    return d


def test_health_catalogues_and_openapi(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["workers"] == 2 and h["max_in_flight"] == 2 + 8
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["llama-3.1-70b"]["num_layers"] == 80 and models["llama-3.1-70b"]["num_kv_heads"] == 8
    gpus = {g["name"]: g for g in client.get("/v1/gpus").json()["gpus"]}
    assert gpus["h100-sxm"]["price_per_hour_usd"] == 4.916  # the preset's AWS capacity-block rate
    doc = client.get("/openapi.json").json()
    for path in ("/v1/plan", "/v1/simulate", "/v1/cost/step", "/v1/models", "/v1/gpus", "/healthz"):
        assert path in doc["paths"], path
    names = set(doc["components"]["schemas"])
    assert {"PlanRequest", "PlanResponse", "SimulateRequest", "SimulateResponse",
            "CostStepRequest", "CostStepResponse"} <= names
    assert set(doc["paths"]["/v1/plan"]["post"]["responses"]) >= {"200", "422", "503", "504"}
    # the pool and spec blocks are the library's own fields, in order (not a copy that drifts)
    from dataclasses import fields

    from sim.deployment import PoolConfig, SpecConfig

    for block, source in (("PoolBlock", PoolConfig), ("SpecBlock", SpecConfig)):
        assert list(doc["components"]["schemas"][block]["properties"]) == [f.name for f in fields(source)]


def test_plan_is_the_library_plan_and_cached(client, small_plan):
    from planner.planning import plan

    r = client.post("/v1/plan", small_plan)
    assert r.status_code == 200, r.text
    assert r.headers["x-serveplan-cache"] == "miss"
    body = r.json()
    ref = json.loads(dump_json(plan(**small_plan).to_dict()))
    assert _without_timings(body) == _without_timings(ref)
    schemas.PlanResponse.model_validate(body)  # the documented schema describes what is sent
    # the same request, spelt differently (int vs float, defaults given), comes from the cache
    again = dict(small_plan, rate=2, seed=0, objective="goodput")
    r2 = client.post("/v1/plan", again)
    assert r2.headers["x-serveplan-cache"] == "hit" and r2.json() == body


def test_identical_concurrent_requests_compute_once(client):
    body = {"deployment": {"model": "llama-3.2-1b", "pools": [{"role": "colocated", "gpu": "l40s"}]},
            "workload": "fixed:128,32", "rate": 3.0, "num_requests": 400, "seed": 7}
    a, b = client.gather(("/v1/simulate", body), ("/v1/simulate", body))
    assert a.status_code == b.status_code == 200
    assert sorted([a.headers["x-serveplan-cache"], b.headers["x-serveplan-cache"]]) == ["joined", "miss"]
    assert a.json() == b.json()


def test_simulate_matches_the_cli(client, data_dir):
    dep = {"model": "llama-3.2-1b", "pools": [{"role": "colocated", "gpu": "l40s", "replicas": 2}]}
    body = {"deployment": dep, "workload": "trace:mini.csv", "rate": 6.0, "num_requests": 120,
            "seed": 3, "ttft_slo_s": 0.5, "tpot_slo_s": 0.03}
    r = client.post("/v1/simulate", body)
    assert r.status_code == 200, r.text
    plan_file = data_dir.parent / "dep.json"
    plan_file.write_text(json.dumps(dep))
    cli = CliRunner().invoke(cli_app, ["simulate", "--plan", str(plan_file), "--workload",
                                       f"trace:{data_dir / 'mini.csv'}", "--rate", "6",
                                       "--requests", "120", "--seed", "3", "--ttft-slo", "0.5",
                                       "--tpot-slo", "0.03", "--json"])
    assert cli.exit_code == 0, cli.output
    got, want = r.json(), json.loads(cli.stdout)
    got.pop("sim_wall_s"), want.pop("sim_wall_s")
    assert got == want
    assert got["num_completed"] == 120 and len(got["utilisation"]) == 2
    schemas.SimulateResponse.model_validate(r.json())
    # a whole Plan is accepted too: its deployment is simulated, the very same work (cached)
    r2 = client.post("/v1/simulate", dict(body, deployment=None, plan={"deployment": dep}))
    assert r2.status_code == 200 and r2.headers["x-serveplan-cache"] == "hit"
    assert r2.json() == r.json()


def test_cost_step_matches_the_cli(client):
    body = {"model": "llama-3.1-70b", "gpu": "h100", "tp": 4, "prefill": ["2048"],
            "decode": ["64x1500"], "kv_dtype": "fp8"}
    r = client.post("/v1/cost/step", body)
    assert r.status_code == 200, r.text
    cli = CliRunner().invoke(cli_app, ["cost", "step", "--model", "llama-3.1-70b", "--gpu", "h100",
                                       "--tp", "4", "--prefill", "2048", "--decode", "64x1500",
                                       "--kv-dtype", "fp8", "--json"])
    assert cli.exit_code == 0, cli.output
    assert r.json() == json.loads(cli.stdout)
    d = schemas.CostStepResponse.model_validate(r.json())
    assert d.num_tokens == 2048 + 64 and d.num_seqs == 65
    assert abs(sum(o.time_s for o in d.ops) - d.step_time_s) <= 1e-9 * d.step_time_s + 1e-12


def test_model_config_inside_the_data_dir(client, data_dir):
    r = client.post("/v1/cost/step", {"model": "models/mini/config.json", "gpu": "l40s",
                                      "decode": ["8x512"]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "mini-llama"


def test_lru_cache_evicts_the_oldest(client):
    def sim(seed):
        body = {"deployment": {"model": "llama-3.2-1b", "pools": [{"role": "colocated", "gpu": "l40s"}]},
                "workload": "fixed:64,8", "rate": 2.0, "num_requests": 20, "seed": 100 + seed}
        return client.post("/v1/simulate", body).headers["x-serveplan-cache"]

    # cache_size=3 in the fixture: a, b, c, d pushes a out; b stays
    assert [sim(0), sim(0), sim(1), sim(2), sim(3), sim(1), sim(0)] == \
        ["miss", "hit", "miss", "miss", "miss", "hit", "miss"]


def test_simulate_with_run_intervals_matches_the_cli(client, data_dir):
    # a profile fitted on engine runs: the service reports its intervals around the simulated
    # latencies exactly as `serveplan simulate --json` does
    from costmodel.arch_defaults import default_efficiencies
    from costmodel.calibration import CalibrationProfile, GpuCalibration

    prof = CalibrationProfile(gpus={"l40s": GpuCalibration(
        default_efficiencies("l40s"), {}, 0.0, {}, {"ttft": [-0.2, 0.1], "tpot": [-0.05, 0.08]},
        {"engines": ["sglang"], "tp": [2]})}).to_dict()
    dep = {"model": "llama-3.2-1b", "pools": [{"role": "colocated", "gpu": "l40s"}]}
    body = {"deployment": dep, "workload": "fixed:128,32", "concurrency": 4, "num_requests": 40,
            "seed": 1, "calibration": prof}
    r = client.post("/v1/simulate", body)
    assert r.status_code == 200, r.text
    (data_dir.parent / "dep.json").write_text(json.dumps(dep))
    (data_dir.parent / "runs.json").write_text(json.dumps(prof))
    cli = CliRunner().invoke(cli_app, ["simulate", "--plan", str(data_dir.parent / "dep.json"),
                                       "--workload", "fixed:128,32", "--concurrency", "4",
                                       "--requests", "40", "--seed", "1", "--calibration",
                                       str(data_dir.parent / "runs.json"), "--json"])
    assert cli.exit_code == 0, cli.output
    got, want = r.json(), json.loads(cli.stdout)
    got.pop("sim_wall_s"), want.pop("sim_wall_s")
    assert got == want
    li = got["uncertainty"]["latency_interval_80"]
    assert li["tpot_log_ratio"] == [-0.05, 0.08]
    assert li["unlike_runs"] == ["l40s: engine vllm; the runs: sglang", "l40s: TP 1 (colocated); the runs: TP 2"]
    assert "no run tested" in li["note"]  # the p50 / p90 ranges apply the means' ratio
    schemas.SimulateResponse.model_validate(r.json())
