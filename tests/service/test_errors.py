"""Bad input is a 422 naming the field and what is accepted; a full queue 503; past the limit 504."""

from __future__ import annotations

import time

import pytest

DEP = {"model": "llama-3.2-1b", "pools": [{"role": "colocated", "gpu": "l40s"}]}
SIM = {"deployment": DEP, "workload": "fixed:128,32", "rate": 2.0, "num_requests": 50}


def _plan(**kw):
    base = {"model": "llama-3.2-1b", "gpus": "l40s:1", "workload": "fixed:256,64", "rate": 2.0,
            "ttft_slo_s": 1.0, "tpot_slo_s": 0.05, "num_requests": 100}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


# (url, body, field named in `loc`, words in `msg`)
CASES = [
    ("/v1/plan", _plan(ttft_slo=1.0), "ttft_slo", "Extra inputs are not permitted"),
    ("/v1/plan", _plan(ttft_slo_s=None), "ttft_slo_s", "Field required"),
    ("/v1/plan", _plan(rate=-1.0), "rate", "greater than 0"),
    ("/v1/plan", _plan(objective="fastest"), "objective", "'goodput' or 'cost'"),
    ("/v1/plan", _plan(kv_dtype="bf16,fp4"), "kv_dtype", "auto, bf16, fp8, int4"),
    ("/v1/plan", _plan(attainment=1.5), "attainment", "less than or equal to 1"),
    ("/v1/plan", _plan(concurrency=4), None, "either rate"),
    ("/v1/plan", _plan(model="llama-9b"), "model", "expected a preset (codellama-34b"),
    ("/v1/plan", _plan(gpus="h900:2"), "gpus", "unknown GPU 'h900'; known: a100-40g"),
    ("/v1/plan", _plan(gpus="h100:zero"), "gpus", "expected an integer >= 1"),
    ("/v1/plan", _plan(workload="fixed:256"), "workload", "fixed:ISL,OSL"),
    ("/v1/plan", _plan(workload="poisson:1,2"), "workload", "expected fixed:ISL,OSL"),
    ("/v1/plan", _plan(workload="trace:/etc/passwd"), "workload", "outside the service's data folder"),
    ("/v1/plan", _plan(workload="trace:../../../etc/passwd"), "workload", "outside"),
    ("/v1/plan", _plan(workload="trace:escape.csv"), "workload", "outside"),  # symlink out
    ("/v1/plan", _plan(workload="trace:nope.csv"), "workload", "not found in the service's data folder"),
    ("/v1/plan", _plan(model="/etc/hostname"), "model", "outside"),
    ("/v1/plan", _plan(calibration="../calib.json"), "calibration", "outside"),
    ("/v1/plan", _plan(calibration={"schema": "x"}), "calibration", "not a ServePlan calibration profile"),
    ("/v1/plan", _plan(calibration="bad_calib.json"), "calibration", "bad_calib.json: 'gpus' must be"),
    ("/v1/plan", _plan(calibration="models"), "calibration", "'models' is a folder; expected a file"),
    ("/v1/plan", _plan(spec_method="draft"), None, "needs draft_model"),
    ("/v1/simulate", dict(SIM, deployment=dict(DEP, pools=[{"role": "colocated", "gpu": "l40s", "tp": 0}])),
     "deployment", "tp=0; expected an integer >= 1"),
    ("/v1/simulate", dict(SIM, deployment=dict(DEP, mode="mixed")), "mode", "'colocated' or 'disaggregated'"),
    ("/v1/simulate", dict(SIM, deployment=dict(DEP, model="/etc/hostname")), "deployment", "outside"),
    ("/v1/simulate", dict(SIM, deployment=None, plan={"schema": "serveplan.plan"}), "plan", "no"),
    ("/v1/simulate", dict(SIM, deployment=None), None, "exactly one of deployment"),
    ("/v1/simulate", dict(SIM, deployment=dict(DEP, kv_link_bw_bytes_s="fast")), "kv_link_bw_bytes_s",
     "valid number"),
    ("/v1/simulate", dict(SIM, deployment=None, plan={"deployment": dict(DEP, pools=[{"role": "colocated", "gpu": "l40s", "tp": "two"}])}),
     "tp", "valid integer"),
    ("/v1/simulate", dict(SIM, deployment=dict(DEP, pools=[{"role": "colocated", "gpu": "l40s", "chunk": 512}])),
     "deployment", "unknown pool keys ['chunk']"),
    ("/v1/simulate", dict(SIM, num_requests=10**7), "num_requests", "less than or equal to 200000"),
    ("/v1/cost/step", {"model": "llama-3.1-8b", "gpu": "h100", "decode": ["64by1500"]}, None, "64by1500"),
    ("/v1/cost/step", {"model": "llama-3.1-8b", "gpu": "tpu"}, "gpu", "unknown GPU 'tpu'"),
    ("/v1/cost/step", {"model": "llama-3.1-8b", "gpu": "h100", "tp": 3, "decode": ["1x10"]}, None, "power of two"),
]


@pytest.mark.parametrize("url,body,field,words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_422_naming_the_field(client, url, body, field, words):
    r = client.post(url, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(words in d["msg"] for d in detail), detail
    if field is not None:
        assert any(field in [str(x) for x in d["loc"]] for d in detail), detail


def test_a_bad_profile_file_is_named_as_the_request_named_it(client, data_dir):
    r = client.post("/v1/plan", _plan(calibration="bad_calib.json"))
    assert r.status_code == 422 and str(data_dir) not in r.text, r.text  # no server paths
    r = client.post("/v1/plan", _plan(calibration={"schema": "x"}))
    assert "calibration: calibration:" not in r.text, r.text


def test_library_errors_from_the_worker_are_422_not_500(client):
    # a 405B model cannot fit one 24 GB L4: the planner says so (DoesNotFitError) in the worker
    r = client.post("/v1/plan", _plan(model="llama-3.1-405b", gpus="l4:1"))
    assert r.status_code == 422, r.text
    assert "does not fit" in r.json()["detail"][0]["msg"] or "fits on none" in r.json()["detail"][0]["msg"]


def test_busy_503_and_timeout_504_free_the_worker(data_dir, make_client):
    from planner.service import create_app

    app = create_app(workers=1, max_queue=0, timeout_s=0.6, data_dir=data_dir, cache_size=0)
    with make_client(app) as c:
        slow = _plan(num_requests=3000)  # a few seconds of planning: past the 0.6 s limit
        t0 = time.monotonic()
        first, second = c.gather(("/v1/plan", slow), ("/v1/plan", _plan(seed=1)))
        waited = time.monotonic() - t0
        assert sorted([first.status_code, second.status_code]) == [503, 504], (first.text, second.text)
        busy = first if first.status_code == 503 else second
        late = second if busy is first else first
        assert busy.headers["retry-after"] == "5" and "busy" in busy.json()["detail"][0]["msg"]
        assert "time limit of 0.6 s" in late.json()["detail"][0]["msg"]
        assert 0.5 < waited < 3.0
        # the worker interrupts the job itself at the deadline: the pool is free again soon
        for _ in range(40):
            if c.get("/healthz").json()["in_flight"] == 0:
                break
            time.sleep(0.1)
        assert c.get("/healthz").json()["in_flight"] == 0
        ok = c.post("/v1/cost/step", {"model": "llama-3.1-8b", "gpu": "h100", "decode": ["1x100"]})
        assert ok.status_code == 200
