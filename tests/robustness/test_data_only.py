"""Files are read as data only: no pickle, eval, exec or yaml.load anywhere in the packages, and
calibration profiles are schema-checked and versioned (a future version is refused, not guessed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from costmodel.errors import ServePlanError

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("costmodel", "sim", "planner", "validate")
# code that turns bytes into objects or runs text as code
FORBIDDEN = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|\bcPickle\b|\bdill\b|\bshelve\b|"
                       r"\bmarshal\.loads?\(|(?<![\w.])eval\(|(?<![\w.])exec\(|\byaml\.load\(|"
                       r"allow_pickle\s*=\s*True|\bread_pickle\(|\btorch\.load\(")


def test_no_code_deserialises_or_evaluates_input():
    hits = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if FORBIDDEN.search(code):
                    hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_scan_would_catch_them():
    for bad in ("import pickle", "x = pickle.load(f)", "eval(text)", "exec(src)", "yaml.load(s)",
                "np.load(p, allow_pickle=True)", "pd.read_pickle(p)", "torch.load(p)"):
        assert FORBIDDEN.search(bad), bad
    for fine in ("cost_eval(x)", "model.eval()", "json.loads(t)", "run_eval(t)"):
        assert not FORBIDDEN.search(fine), fine


def _profile(tmp_path, **over) -> Path:
    from costmodel.calibration import SCHEMA, VERSION

    d = {"schema": SCHEMA, "version": VERSION, "gpus": {}, **over}
    p = tmp_path / "calib.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("over,msg", [
    ({"schema": "other"}, "not a ServePlan calibration profile"),
    ({"version": 99}, "version"),
    ({"version": "2"}, "version"),
])
def test_calibration_profiles_are_schema_checked_and_versioned(tmp_path, over, msg):
    from costmodel.calibration import CalibrationProfile

    with pytest.raises(ServePlanError, match=msg) as e:
        CalibrationProfile.load(_profile(tmp_path, **over))
    assert "calib.json" in str(e.value)
