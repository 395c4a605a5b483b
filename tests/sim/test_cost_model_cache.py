"""Cost models of calibrations that differ only in parameters no operator time reads share their
operator caches (sim.engine.cost_model_for); any other difference keeps them apart, and a
shared cache gives each model the times it would compute alone."""

from __future__ import annotations

from dataclasses import replace

from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.model import CostModel
from costmodel.specs import load_model
from sim.deployment import PoolConfig
from sim.engine import cost_model_for

GPU = "h100-sxm"


def _profile(**kw) -> CalibrationProfile:
    return CalibrationProfile(gpus={GPU: GpuCalibration(replace(default_efficiencies(GPU), **kw))})


def test_operator_caches_are_shared_only_across_non_operator_parameters():
    pool, model = PoolConfig("colocated", GPU, tp=2), load_model("llama-3.1-8b")
    a = cost_model_for(pool, model, _profile(frontend_stream_s=40e-6))
    a.step_time_s([(700, 0)], 12, 12 * 900, 1)  # fills the caches
    b = cost_model_for(pool, model, _profile(frontend_stream_s=90e-6, mem_reserved_gib=3.0,
                                             decode_time_scale=1.2, request_latency_s=0.01))
    c = cost_model_for(pool, model, _profile(gemm_compute_eff=0.5))
    assert b is not a and b._dense_cache is a._dense_cache and b._comm_cache is a._comm_cache
    assert c._dense_cache is not a._dense_cache
    # what the shared cache returns is what a model of its own computes
    for cm, prof in ((b, b.calibration), (c, c.calibration)):
        alone = CostModel(model, GPU, tp=2, calibration=prof, host_overlap=cm.host_overlap)
        for args in (([(700, 0)], 12, 12 * 900, 1), ((), 64, 64 * 1500, 1), ([(3000, 500)], 0, 0, 1)):
            assert cm.step_time_s(*args) == alone.step_time_s(*args)
