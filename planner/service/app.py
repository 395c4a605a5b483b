"""The HTTP planning service (FastAPI): the planner, the simulator and the cost model over JSON.

`create_app(workers=2, timeout_s=120, data_dir=..., ...)` returns the app; `serveplan serve`
runs it under uvicorn. Endpoints (bodies in planner.service.schemas, OpenAPI at /openapi.json):

    POST /v1/plan        PlanRequest      -> the Plan JSON (as `serveplan plan --json`)
    POST /v1/simulate    SimulateRequest  -> RunMetrics  (as `serveplan simulate --json`)
    POST /v1/cost/step   CostStepRequest  -> step time   (as `serveplan cost step --json`)
    GET  /v1/models, /v1/gpus             -> the presets
    GET  /healthz                         -> liveness and pool state

Status codes: 422 for bad input, naming the field and what it accepts (schema errors, and every
ServePlanError the library raises); 503 when the worker pool's queue is full; 504 past the
per-request time limit. Plan and simulate run in the bounded process pool (planner.service.pool)
with a response cache; the header `X-ServePlan-Cache` says hit, joined or miss. Cost steps take
milliseconds and run on a thread. The routes live in planner/service/routes/, one APIRouter per
resource; this factory makes the pool and the data folder (app.state), the error handlers and
the lifespan, and includes the routers. Nothing starts on import: processes start with the app.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from costmodel.errors import ServePlanError
from planner.service.common import service_version
from planner.service.paths import DataDir, FieldError, default_data_dir
from planner.service.pool import Busy, JobPool, TimedOut
from planner.service.routes import catalogue, cost, health, plan, simulate

_DEFAULT = object()


def _error(status: int, msg: str, loc: list, kind: str, headers: dict | None = None) -> JSONResponse:
    # the same shape as FastAPI's own validation errors, so clients read one format
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status_code=status,
                        headers=headers)


def create_app(*, workers: int = 2, timeout_s: float = 120.0, data_dir=_DEFAULT,
               max_queue: int | None = None, cache_size: int = 128) -> FastAPI:
    """The service app. workers: planning processes; timeout_s: per-request limit (seconds,
    queue wait included); data_dir: the only folder requests may read files from (default the
    shared traces folder when present; None: no files); max_queue: requests admitted beyond
    the running ones (default 4 per worker); cache_size: responses kept (LRU, 0 = off)."""
    root = default_data_dir() if data_dir is _DEFAULT else data_dir
    data = DataDir(Path(root) if root is not None else None)
    pool = JobPool(workers, timeout_s=timeout_s, cache_size=cache_size,
                   max_queue=4 * workers if max_queue is None else max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await pool.start()
        try:
            yield
        finally:
            pool.stop()

    app = FastAPI(title="ServePlan", version=service_version(), lifespan=lifespan,
                  description="Plans LLM serving deployments: the same Plan JSON as `serveplan plan`.")
    app.state.pool = pool
    app.state.data = data

    @app.exception_handler(ServePlanError)
    async def _bad_input(request: Request, exc: ServePlanError):
        loc = ["body", *exc.field.replace("]", "").replace("[", ".").split(".")] \
            if isinstance(exc, FieldError) else ["body"]
        return _error(422, str(exc), loc, "serveplan_error")

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return _error(503, str(exc), [], "busy", {"Retry-After": "5"})

    @app.exception_handler(TimedOut)
    async def _late(request: Request, exc: TimedOut):
        return _error(504, str(exc), [], "timeout")

    for routes in (plan, simulate, cost, catalogue, health):
        app.include_router(routes.router)
    return app
