"""Fixtures for the service tests: a data folder with a small trace and a model config, and
one in-process app (its worker processes start once per session)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# a small plan that verifies in ~2 s on one core: a 1B model on one L40S at 2 requests/s
SMALL_PLAN = {"model": "llama-3.2-1b", "gpus": "l40s:1", "workload": "fixed:256,64", "rate": 2.0,
              "ttft_slo_s": 1.0, "tpot_slo_s": 0.05, "num_requests": 100}


def write_data_dir(root: Path) -> Path:
    """A data folder: a native trace (input_len,output_len,arrival_s), a Llama-style
    config.json, and a symlink that points outside the folder."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["input_len,output_len,arrival_s"]
    rows += [f"{128 + 32 * (i % 7)},{16 + 8 * (i % 5)},{i * 0.25:.2f}" for i in range(120)]
    (root / "mini.csv").write_text("\n".join(rows) + "\n")
    cfg = {"model_type": "llama", "num_hidden_layers": 16, "hidden_size": 2048,
           "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
           "vocab_size": 128256, "max_position_embeddings": 8192, "_name_or_path": "mini-llama"}
    (root / "models" / "mini").mkdir(parents=True, exist_ok=True)
    (root / "models" / "mini" / "config.json").write_text(json.dumps(cfg))
    (root / "bad_calib.json").write_text('{"schema": "serveplan.calibration", "version": 2, "gpus": {}}')
    outside = root.parent / "outside.csv"
    outside.write_text(rows[0] + "\n100,10,0\n")
    link = root / "escape.csv"
    if not link.exists():
        link.symlink_to(outside)
    return root


@pytest.fixture
def small_plan() -> dict:
    return dict(SMALL_PLAN)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("service") / "data")


class AppClient:
    """Drive an ASGI app in-process: httpx.AsyncClient over ASGITransport, on an event loop in
    a background thread (anyio's blocking portal), with the app's lifespan entered, so the
    worker pool runs as under uvicorn. `get`/`post` block; `gather` sends requests at once."""

    def __init__(self, app):
        self.app = app

    def __enter__(self):
        import httpx
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self._life = self.portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app))
        self._life.__enter__()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://service.test", timeout=120)
        return self

    def __exit__(self, *exc):
        self.portal.call(self.http.aclose)
        self._life.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)

    def get(self, url: str):
        return self.portal.call(self.http.get, url)

    def post(self, url: str, body: dict):
        return self.portal.call(lambda: self.http.post(url, json=body))

    def gather(self, *calls: tuple[str, dict]):
        """POST every (url, body) concurrently; the responses in the same order."""
        import asyncio

        async def go():
            return await asyncio.gather(*(self.http.post(u, json=b) for u, b in calls))

        return self.portal.call(go)


@pytest.fixture(scope="session")
def make_client():
    """The AppClient class, for tests that need an app of their own."""
    return AppClient


@pytest.fixture(scope="session")
def client(data_dir):
    from planner.service import create_app

    with AppClient(create_app(workers=2, timeout_s=60, data_dir=data_dir, cache_size=3)) as c:
        yield c
