"""The data folder: presets and short names pass, files only from inside the folder."""

from __future__ import annotations

import pytest

from planner.service.paths import DataDir, FieldError


def test_files_inside_pass_with_fingerprints(data_dir):
    d, fp = DataDir(data_dir), []
    assert d.workload("workload", "trace:mini.csv", fp) == f"trace:{(data_dir / 'mini.csv').resolve()}"
    assert d.workload("workload", f"trace:{data_dir}/mini.csv", fp).endswith("/mini.csv")
    assert d.model("model", "models/mini/config.json", fp).endswith("models/mini/config.json")
    size = (data_dir / "mini.csv").stat().st_size
    assert fp[0][0].endswith("mini.csv") and fp[0][1] == size and len(fp) == 3


def test_presets_and_synthetic_workloads_need_no_file():
    d, fp = DataDir(None), []
    for spec in ("fixed:512,128", "azure-conv", "trace:azure-code", "lognormal:100,50"):
        assert d.workload("workload", spec, fp) == spec
    assert d.model("model", "llama-3.1-70b", fp) == "llama-3.1-70b"
    assert d.model("model", "meta-llama/Llama-2-7b-hf", fp) == "meta-llama/Llama-2-7b-hf"  # an alias
    assert d.calibration("calibration", {"schema": "inline"}, fp) == {"schema": "inline"}
    assert fp == []


@pytest.mark.parametrize("text", ["/etc/passwd", "../outside.csv", "escape.csv", "models/../../outside.csv"])
def test_escapes_are_refused(data_dir, text):
    with pytest.raises(FieldError, match="outside the service's data folder") as e:
        DataDir(data_dir).workload("workload", f"trace:{text}", [])
    assert e.value.field == "workload"


def test_no_data_dir_reads_no_files():
    with pytest.raises(FieldError, match="no data folder"):
        DataDir(None).calibration("calibration", "calib.json", [])
    with pytest.raises(FieldError, match="expected a preset"):
        DataDir(None).model("model", "models/x/config.json", [])
