"""`serveplan cost step`: one JSON document with the per-operator breakdown in seconds, and
calibrated only when the profile has parameters for the GPU asked about."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.efficiencies import Efficiencies
from planner.cli import app


def test_calibrated_flag_follows_the_profiles_gpus(tmp_path):
    prof = CalibrationProfile(gpus={"a100-80g": GpuCalibration(Efficiencies())}, source="test")
    path = tmp_path / "cal.json"
    prof.save(path)
    args = ["cost", "step", "--model", "llama-3.1-8b", "--decode", "8x512", "--json",
            "--calibration", str(path)]
    on_a100 = json.loads(CliRunner().invoke(app, args + ["--gpu", "a100"]).stdout)
    on_h100 = json.loads(CliRunner().invoke(app, args + ["--gpu", "h100"]).stdout)
    assert on_a100["calibrated"] is True
    assert on_h100["calibrated"] is False


def test_cost_step_cli_json():
    res = CliRunner().invoke(app, ["cost", "step", "--model", "llama-3.1-70b", "--gpu", "h100",
                                   "--tp", "4", "--prefill", "2048", "--decode", "64x1500", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # exactly one JSON document
    assert doc["num_tokens"] == 2048 + 64 and doc["num_seqs"] == 65
    names = {o["name"] for o in doc["ops"]}
    assert {"qkv_proj", "attn_prefill", "attn_decode", "attn_allreduce", "host_overhead"} <= names
    # seconds, not ms: a 70B iteration of 2k tokens on 4 H100s takes tens of milliseconds
    assert 0.01 < doc["step_time_s"] < 1.0
    assert sum(o["time_s"] for o in doc["ops"]) == pytest.approx(doc["step_time_s"], rel=1e-9)
