"""POST /v1/simulate: one simulation in the worker pool, RunMetrics as `serveplan simulate --json`.

The body names a deployment block, or a whole Plan whose deployment is simulated; only the keys
the client gave are passed on (type-checked by the schema), so the simulator's defaults fill the
rest exactly as they do for a Plan file.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from planner.service import schemas as S
from planner.service.common import ERRORS, check_field, pooled, request_inputs
from planner.service.paths import FieldError

router = APIRouter()


@router.post("/v1/simulate", response_model=S.SimulateResponse, responses=ERRORS,
             tags=["simulation"])
async def simulate(req: S.SimulateRequest, request: Request):
    """Simulate a deployment (or a Plan's) under a workload: RunMetrics."""
    from sim.deployment import Deployment

    data = request.app.state.data
    fp: list = []
    kw = request_inputs(req, data, fp)
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
    check_field(field, Deployment.from_dict, kw["deployment"])
    return await pooled(request.app.state.pool, "simulate", kw, fp)
