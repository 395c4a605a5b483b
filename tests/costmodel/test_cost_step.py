"""`cost_step(...)`: the one call behind `serveplan cost step` and `POST /v1/cost/step`."""

from __future__ import annotations

import pytest

from costmodel.batch import Batch
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.efficiencies import Efficiencies
from costmodel.engine_defaults import engine_defaults
from costmodel.memory import memory_plan
from costmodel.model import CostModel
from costmodel.step import cost_step


def test_cost_step_is_the_cost_models_step_and_memory_plan():
    out = cost_step("llama-3.1-70b", "h100", tp=4, prefill=["2048"], decode=["64x1500"])
    cm = CostModel("llama-3.1-70b", "h100", tp=4)
    br = cm.step(Batch(prefill=((2048, 0),), decode=(1500,) * 64))
    assert out["step_time_s"] == br.step_time_s and out["num_seqs"] == 65
    d = engine_defaults(cm.gpu)
    assert out["memory"] == memory_plan(cm, 0.9, d.max_num_batched_tokens, d.max_num_seqs,
                                        d.block_size).to_dict()
    assert (out["model"], out["gpu"], out["calibrated"]) == ("llama-3.1-70b", "h100-sxm", False)


def test_spec_k_turns_decodes_into_verify_steps_and_a_large_batch_raises_the_token_budget():
    base = cost_step("llama-3.1-8b", "h100", decode=["32x1000"])
    verify = cost_step("llama-3.1-8b", "h100", decode=["32x1000"], spec_k=3)
    assert verify["num_tokens"] == 4 * base["num_tokens"] == 128
    big = cost_step("llama-3.1-8b", "h100", prefill=["4096x4"])
    cm = CostModel("llama-3.1-8b", "h100")
    d = engine_defaults(cm.gpu)
    assert big["num_tokens"] == 16384 > d.max_num_batched_tokens
    assert big["memory"] == memory_plan(cm, 0.9, 16384, d.max_num_seqs, d.block_size).to_dict()


def test_calibrated_only_for_the_profiles_gpus():
    prof = CalibrationProfile(gpus={"a100-80g": GpuCalibration(Efficiencies())}, source="test")
    assert cost_step("llama-3.1-8b", "a100", decode=["8x512"], calibration=prof)["calibrated"]
    assert not cost_step("llama-3.1-8b", "h100", decode=["8x512"], calibration=prof)["calibrated"]


def test_bad_batches_are_named():
    from costmodel.errors import ServePlanError

    with pytest.raises(ServePlanError, match="--decode"):
        cost_step("llama-3.1-8b", "h100", decode=["8by512"])
