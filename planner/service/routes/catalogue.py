"""GET /v1/models and /v1/gpus: the presets, the names every other endpoint accepts."""

from __future__ import annotations

from fastapi import APIRouter

from planner.service import schemas as S

router = APIRouter()


@router.get("/v1/models", response_model=S.ModelsResponse, tags=["catalogue"])
def models():
    """The model presets (names accepted wherever a model is asked for)."""
    from costmodel.specs import MODEL_PRESETS

    return {"models": [dict(m.__dict__, num_params=m.num_params)
                       for m in MODEL_PRESETS.values()]}


@router.get("/v1/gpus", response_model=S.GpusResponse, tags=["catalogue"])
def gpus():
    """The GPU presets with datasheet figures and indicative prices."""
    from costmodel.hardware import GPU_PRESETS

    return {"gpus": [g.__dict__ for g in GPU_PRESETS.values()]}
