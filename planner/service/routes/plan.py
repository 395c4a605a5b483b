"""POST /v1/plan: `planner.plan(...)` in the worker pool, the Plan JSON of `serveplan plan --json`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from planner.fleet import parse_fleet
from planner.service import schemas as S
from planner.service.common import ERRORS, check_field, pooled, request_inputs

router = APIRouter()


@router.post("/v1/plan", response_model=S.PlanResponse, responses=ERRORS, tags=["planning"])
async def plan(req: S.PlanRequest, request: Request):
    """Plan a deployment: the Plan JSON of `serveplan plan --json`."""
    fp: list = []
    kw = request_inputs(req, request.app.state.data, fp)
    check_field("gpus", parse_fleet, req.gpus)
    return await pooled(request.app.state.pool, "plan", kw, fp)
