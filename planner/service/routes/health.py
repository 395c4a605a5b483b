"""GET /healthz: liveness, the worker pool's state and the service's version."""

from __future__ import annotations

from fastapi import APIRouter, Request

from planner.service import schemas as S
from planner.service.common import service_version

router = APIRouter()


@router.get("/healthz", response_model=S.HealthResponse, tags=["service"])
def healthz(request: Request):
    pool, data = request.app.state.pool, request.app.state.data
    return {"status": "ok", "version": service_version(), "workers": pool.workers,
            "in_flight": pool.in_flight, "max_in_flight": pool.max_in_flight,
            "cache_entries": pool.cache_entries, "timeout_s": pool.timeout_s,
            "data_dir": data.root is not None}
