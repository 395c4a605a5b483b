"""`cost step` says calibrated only when the profile has parameters for the GPU asked about."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.roofline import Efficiencies
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
