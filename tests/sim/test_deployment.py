"""Deployments: the builders the CLI uses, and the one loader of Plan files (CLI and validate)."""

from __future__ import annotations

import json

import pytest

from costmodel.errors import ServePlanError
from sim.deployment import Deployment, PoolConfig, SpecConfig, plan_deployment, read_plan

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
    ("[1, 2]", "a plan must be an object (a Plan JSON, or a bare deployment object), got list"),
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
    with pytest.raises(ServePlanError, match="a plan must be an object .*, got list"):
        plan_deployment([DEP.to_dict()])


def test_builders_are_the_pools_they_name():
    spec = SpecConfig.from_flags("ngram", 3, 0.6)
    assert Deployment.colocated("llama-3.1-8b", "h100", tp=2, replicas=3, spec=spec,
                                max_num_seqs=64) == Deployment(
        "llama-3.1-8b", (PoolConfig("colocated", "h100", tp=2, replicas=3, max_num_seqs=64,
                                    spec=spec),))
    d = Deployment.disaggregated("llama-3.1-8b", "h100", prefill=(2, 1, 3), decode=(4, 1, 1),
                                 spec=spec, kv_link_bw_bytes_s=50e9, kv_dtype="fp8")
    assert d.mode == "disaggregated" and d.kv_link_bw_bytes_s == 50e9
    assert d.pool("prefill") == PoolConfig("prefill", "h100", tp=2, replicas=3, kv_dtype="fp8")
    assert d.pool("decode") == PoolConfig("decode", "h100", tp=4, kv_dtype="fp8", spec=spec)


def test_spec_flags():
    assert SpecConfig.from_flags() == SpecConfig() and not SpecConfig.from_flags().enabled
    k0 = SpecConfig.from_flags("ngram", 0, 0.5)
    assert k0.adaptive and k0.enabled  # k = 0 with a method: adaptive, not off
    assert not SpecConfig.from_flags("ngram", 4, 0.5).adaptive
    assert SpecConfig.from_flags("ngram", 4, 0.5, adaptive=True).adaptive
    with pytest.raises(ServePlanError, match="--spec-acceptance"):
        SpecConfig.from_flags("ngram", 4)
    with pytest.raises(ServePlanError, match="draft model"):
        SpecConfig.from_flags("draft", 4, 0.5)


def test_simulate_takes_a_plan_s_deployment_dict_as_the_readme_shows():
    # `sim.simulate(plan.deployment, ...)`: a Plan holds its deployment as a dict
    from sim import parse_workload, simulate

    wl = parse_workload("fixed:256,32", rate=2.0)
    a = simulate(DEP.to_dict(), wl, num_requests=30, seed=0).metrics.to_dict()
    b = simulate(DEP, wl, num_requests=30, seed=0).metrics.to_dict()
    a.pop("sim_wall_s"), b.pop("sim_wall_s")
    assert a == b
    with pytest.raises(ServePlanError, match="expected a Deployment or its dict"):
        simulate("llama-3.1-8b", wl, num_requests=30, seed=0)
