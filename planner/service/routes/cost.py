"""POST /v1/cost/step: one engine iteration per operator and the memory plan, as `serveplan cost
step --json` (`costmodel.step.cost_step`). It takes milliseconds, so it runs on a thread beside
the event loop rather than in the worker pool."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from planner.service import schemas as S
from planner.service.common import ERRORS, check_field, request_inputs

router = APIRouter()


@router.post("/v1/cost/step", response_model=S.CostStepResponse, responses=ERRORS,
             tags=["cost model"])
async def cost_step(req: S.CostStepRequest, request: Request):
    """One engine iteration's time per operator, and the memory plan of one GPU."""
    from costmodel.hardware import load_gpu
    from planner.service.jobs import cost_step_job

    kw = request_inputs(req, request.app.state.data, [])
    check_field("gpu", load_gpu, req.gpu)
    return JSONResponse(await run_in_threadpool(lambda: cost_step_job(**kw)))
