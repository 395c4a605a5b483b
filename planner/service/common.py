"""What every route of the service shares: the documented error responses, the service's
version, and what a request goes through before the library sees it.

- `request_inputs(req, data, fingerprints)`: the request's library arguments, with every file
  it names checked against the data folder (and fingerprinted for the cache) and the cheap
  values (a synthetic workload string, an inline calibration profile) parsed now, so that
  their errors are 422s naming the field rather than failures in a worker;
- `check_field(field, fn, ...)`: run a library check here, its ServePlanError becoming a
  FieldError on `field`;
- `pooled(pool, kind, kwargs, fingerprints)`: run a job in the worker pool, its result JSON
  with the `X-ServePlan-Cache` header (hit, joined or miss).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from costmodel.errors import ServePlanError
from planner.service.paths import DataDir, FieldError
from planner.service.pool import JobPool
from sim.traces import TRACE_NAMES
from sim.workload import parse_workload

ERRORS = {
    422: {"description": "bad input: `detail[].loc` names the field, `detail[].msg` what is accepted"},
    503: {"description": "the worker pool's queue is full: retry later (Retry-After)"},
    504: {"description": "the request passed the service's time limit"},
}


def service_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("serveplan")
    except PackageNotFoundError:
        return "0+unknown"


def check_field(field: str, fn, *args, **kwargs):
    """Run a cheap library check here, so its error names the request field."""
    try:
        return fn(*args, **kwargs)
    except FieldError:
        raise
    except ServePlanError as e:
        raise FieldError(field, str(e)) from None


def request_inputs(req, data: DataDir, fp: list) -> dict:
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
            check_field("workload", parse_workload, kw["workload"], rate=1.0)
    given = kw.get("calibration")
    if isinstance(given, dict):
        check_field("calibration", CalibrationProfile.from_dict, given, "the inline profile")
    kw["calibration"] = data.calibration("calibration", given, fp)
    if isinstance(kw["calibration"], str):  # a file: checked now, named as the request named it
        try:
            CalibrationProfile.load(kw["calibration"])
        except ServePlanError as e:
            raise FieldError("calibration", str(e).replace(kw["calibration"], str(given))) from None
    return kw


async def pooled(pool: JobPool, kind: str, kwargs: dict, fingerprints: list) -> JSONResponse:
    result, how = await pool.run(kind, kwargs, fingerprints)
    return JSONResponse(result, headers={"X-ServePlan-Cache": how})
