"""The HTTP service fuzzed from its own OpenAPI document (schemathesis): no input gives a 5xx
other than the documented 503 (queue full) and 504 (past the service's time limit).

The app is the real one (create_app, a worker process, a data folder with a trace, a model
config and a symlink out); a 2 s service time limit keeps fuzzed plans that happen to be
valid and large short - they answer 504, which is allowed, while 500 never is.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis (dev tool)")

EXAMPLES_PER_OPERATION = 15
ALLOWED_5XX = {503, 504}  # documented: queue full, time limit


def _app(tmp_root):
    from planner.service import create_app

    spec = __import__("importlib.util").util
    path = __import__("pathlib").Path(__file__).resolve().parents[1] / "service" / "conftest.py"
    s = spec.spec_from_file_location("_svc_conftest_fuzz", path)
    mod = spec.module_from_spec(s)
    s.loader.exec_module(mod)
    data = mod.write_data_dir(tmp_root / "data")
    return create_app(workers=1, timeout_s=2, data_dir=data, cache_size=16, max_queue=8)


_TMP = __import__("tempfile").mkdtemp(prefix="serveplan-fuzz-")
APP = _app(__import__("pathlib").Path(_TMP))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _stop_workers():
    yield
    APP.state.pool.stop()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500 or response.status_code in ALLOWED_5XX, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:400]}\n"
        f"body: {case.body!r}")
    if response.status_code == 422:
        detail = response.json()["detail"]
        assert isinstance(detail, list) and all("msg" in d for d in detail)
