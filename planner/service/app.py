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
per-request time limit. Plan and simulate run in the bounded process pool (planner.service.pool) with
a response cache; the header `X-ServePlan-Cache` says hit, joined or miss. Cost steps take
milliseconds and run on a thread. Nothing starts on import: processes start with the app.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from costmodel.errors import ServePlanError
from planner.fleet import parse_fleet
from planner.service import schemas as S
from planner.service.paths import DataDir, FieldError, default_data_dir
from planner.service.pool import Busy, JobPool, TimedOut
from sim.traces import TRACE_NAMES
from sim.workload import parse_workload

_DEFAULT = object()
_ERRORS = {
    422: {"description": "bad input: `detail[].loc` names the field, `detail[].msg` what is accepted"},
    503: {"description": "the worker pool's queue is full: retry later (Retry-After)"},
    504: {"description": "the request passed the service's time limit"},
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("serveplan")
    except PackageNotFoundError:
        return "0+unknown"


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

    app = FastAPI(title="ServePlan", version=_version(), lifespan=lifespan,
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

    def _check(field: str, fn, *args, **kwargs):
        """Run a cheap library check here, so its error names the request field."""
        try:
            return fn(*args, **kwargs)
        except FieldError:
            raise
        except ServePlanError as e:
            raise FieldError(field, str(e)) from None

    def _inputs(req, fp: list) -> dict:
        """The request's library arguments, with files checked and cheap values validated."""
        from costmodel.calibration import CalibrationProfile

        kw = req.model_dump(exclude={"plan"})
        for f in ("model", "draft_model"):
            if kw.get(f) is not None:
                kw[f] = data.model(f, kw[f], fp)
        if "workload" in kw:
            kw["workload"] = data.workload("workload", kw["workload"], fp)
            low = kw["workload"].lower()
            if not low.startswith("trace:") and low not in TRACE_NAMES:  # no file: check it now
                _check("workload", parse_workload, kw["workload"], rate=1.0)
        if isinstance(kw.get("calibration"), dict):
            _check("calibration", CalibrationProfile.from_dict, kw["calibration"], "calibration")
        kw["calibration"] = data.calibration("calibration", kw.get("calibration"), fp)
        return kw

    async def _pooled(kind: str, kwargs: dict, fingerprints: list) -> JSONResponse:
        result, how = await pool.run(kind, kwargs, fingerprints)
        return JSONResponse(result, headers={"X-ServePlan-Cache": how})

    @app.post("/v1/plan", response_model=S.PlanResponse, responses=_ERRORS, tags=["planning"])
    async def plan(req: S.PlanRequest):
        """Plan a deployment: the Plan JSON of `serveplan plan --json`."""
        fp: list = []
        kw = _inputs(req, fp)
        _check("gpus", parse_fleet, req.gpus)
        return await _pooled("plan", kw, fp)

    @app.post("/v1/simulate", response_model=S.SimulateResponse, responses=_ERRORS,
              tags=["simulation"])
    async def simulate(req: S.SimulateRequest):
        """Simulate a deployment (or a Plan's) under a workload: RunMetrics."""
        from sim.deployment import Deployment

        fp: list = []
        kw = _inputs(req, fp)
        field, dep = "deployment", req.deployment
        if req.plan is not None:
            field, dep = "plan.deployment", req.plan.get("deployment")
            if not isinstance(dep, dict):
                raise FieldError("plan", "a Plan JSON has a 'deployment' object; this has none")
            try:
                dep = S.DeploymentBlock.model_validate(dep)
            except ValidationError as e:
                raise RequestValidationError(
                    [dict(err, loc=("body", "plan", "deployment", *err["loc"])) for err in e.errors()]
                ) from None
        # only the keys the client gave (type-checked): the simulator's defaults fill the rest
        kw["deployment"] = data.deployment(field, dep.model_dump(exclude_unset=True), fp)
        _check(field, Deployment.from_dict, kw["deployment"])
        return await _pooled("simulate", kw, fp)

    @app.post("/v1/cost/step", response_model=S.CostStepResponse, responses=_ERRORS,
              tags=["cost model"])
    async def cost_step(req: S.CostStepRequest):
        """One engine iteration's time per operator, and the memory plan of one GPU."""
        from costmodel.hardware import load_gpu
        from planner.service.jobs import cost_step_job

        kw = _inputs(req, [])
        _check("gpu", load_gpu, req.gpu)
        return JSONResponse(await run_in_threadpool(lambda: cost_step_job(**kw)))

    @app.get("/v1/models", response_model=S.ModelsResponse, tags=["catalogue"])
    def models():
        """The model presets (names accepted wherever a model is asked for)."""
        from costmodel.specs import MODEL_PRESETS

        return {"models": [dict(m.__dict__, num_params=m.num_params)
                           for m in MODEL_PRESETS.values()]}

    @app.get("/v1/gpus", response_model=S.GpusResponse, tags=["catalogue"])
    def gpus():
        """The GPU presets with datasheet figures and indicative prices."""
        from costmodel.hardware import GPU_PRESETS

        return {"gpus": [g.__dict__ for g in GPU_PRESETS.values()]}

    @app.get("/healthz", response_model=S.HealthResponse, tags=["service"])
    def healthz():
        return {"status": "ok", "version": _version(), "workers": pool.workers,
                "in_flight": pool.in_flight, "max_in_flight": pool.max_in_flight,
                "cache_entries": pool.cache_entries, "timeout_s": pool.timeout_s,
                "data_dir": data.root is not None}

    return app
