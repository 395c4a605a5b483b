"""Fixtures for the robustness tests: malformed input files, and the service's in-process client
(tests/service/conftest.py's AppClient and data folder, loaded by path: tests are not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SERVICE_CONFTEST = Path(__file__).resolve().parents[1] / "service" / "conftest.py"


def service_helpers():
    """tests/service/conftest.py as a module (AppClient, write_data_dir, SMALL_PLAN)."""
    spec = importlib.util.spec_from_file_location("_service_conftest", _SERVICE_CONFTEST)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# name -> file text: each is a kind of malformed file a user hands ServePlan
BAD_FILES = {
    "one_row.csv": "input_len,output_len,arrival_s\n100,10,0\n",
    "bad_value.csv": "input_len,output_len,arrival_s\n100,10,0\n100,abc,1\n",
    "zero_output.csv": "input_len,output_len,arrival_s\n100,10,0\n100,0,1\n",
    "negative_input.csv": "input_len,output_len,arrival_s\n-5,10,0\n",
    "wrong_columns.csv": "a,b\n1,2\n",
    "empty.csv": "",
    "header_only.csv": "input_len,output_len,arrival_s\n",
    "broken.jsonl": '{"input_length": 10, "output_length": 5, "timestamp": 0}\n{bad json\n',
    "config_partial.json": '{"num_hidden_layers": 2}',
    "config_truncated.json": '{"num_hidden_layers": 2,',
    "config_negative.json": ('{"num_hidden_layers": -2, "hidden_size": 64, "num_attention_heads": 4, '
                             '"intermediate_size": 128, "vocab_size": 1000}'),
    "config_list.json": "[1, 2]",
    "calibration_no_schema.json": '{"version": 1}',
    "not_json.json": "not json",
    "plan_pools_string.json": '{"deployment": {"model": "llama-3.2-1b", "pools": "x"}}',
    "plan_tp0.json": ('{"deployment": {"model": "llama-3.2-1b", "pools": '
                      '[{"role": "colocated", "gpu": "l40s", "tp": 0}]}}'),
    "measured_bad.csv": "op,measured_s\ngemm,abc\n",
}


@pytest.fixture(scope="session")
def bad_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name, text in BAD_FILES.items():
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="session")
def service_mod():
    return service_helpers()
