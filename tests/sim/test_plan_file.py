"""Reading a Plan file (or a bare deployment object): one loader for the CLI and validate."""

from __future__ import annotations

import json

import pytest

from costmodel.errors import ServePlanError
from sim.deployment import Deployment, PoolConfig, plan_deployment, read_plan

DEP = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", replicas=2),))


def test_plan_or_bare_deployment_from_a_dict_or_a_file(tmp_path):
    wrapped = {"deployment": DEP.to_dict(), "predicted": {}}
    assert plan_deployment(wrapped) == DEP
    assert plan_deployment(DEP.to_dict()) == DEP
    for name, doc in (("plan.json", wrapped), ("dep.json", DEP.to_dict())):
        (tmp_path / name).write_text(json.dumps(doc))
        assert plan_deployment(tmp_path / name) == DEP
        assert plan_deployment(str(tmp_path / name)) == DEP
        assert read_plan(tmp_path / name) == doc


@pytest.mark.parametrize("text, words", [
    (None, "cannot read plan file"),
    ("{not json", "line 1 column 2: not valid JSON"),
    ("[1, 2]", "expected a Plan JSON object (or a deployment object), got list"),
    ('{"deployment": {"pools": []}}', "needs 'model'"),
    ('{"model": "llama-3.1-8b", "pools": [{"role": "colocated", "gpu": "h100", '
     '"spec": {"num_speculative_tokens": "x"}}]}', "bad deployment"),
])
def test_a_bad_plan_file_is_one_error_naming_the_file(tmp_path, text, words):
    path = tmp_path / "plan.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ServePlanError) as e:
        plan_deployment(path)
    assert words in str(e.value) and str(path) in str(e.value)
    assert str(e.value).count(str(path)) == 1


def test_a_plan_that_is_not_an_object_is_refused():
    with pytest.raises(ServePlanError, match="a plan must be a JSON object, got list"):
        plan_deployment([DEP.to_dict()])
