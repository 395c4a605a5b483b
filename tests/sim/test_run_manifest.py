"""Run manifests (YAML and JSON) and the forms a run's deployment is given in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from costmodel.errors import ServePlanError
from sim.deployment import Deployment, PoolConfig
from sim.runs import load_manifest, load_runs
from sim.runs.deployments import deployment_from, read_plan_deployment

FIX = Path(__file__).parent / "fixtures" / "runs"


def _pool(**kw) -> PoolConfig:
    return PoolConfig("colocated", "h200-sxm", **({"precision": "fp8", "kv_dtype": "fp8"} | kw))


def _summary(runs):
    return [(r.source, r.run_id, r.engine, r.engine_version, r.deployment, r.workload,
             r.concurrency, r.measured) for r in runs]


def test_yaml_and_json_manifests_read_every_listed_run():
    runs = load_manifest(FIX / "manifest.yaml")
    assert _summary(runs) == _summary(load_manifest(FIX / "manifest.json"))
    got = [(r.source, r.run_id, r.engine, r.engine_version, r.deployment.pools[0].tp, r.concurrency)
           for r in runs]
    assert got == [
        ("vllm_bench_llama8b_c160.json", "1", "vllm", "0.12.0", 1, 160),  # the entry's own version
        ("sglang_bench_llama8b.jsonl", "1", "sglang", "0.5.6.post2", 1, 160),  # runs: [1], the defaults
        ("sglang_bench_llama8b.jsonl", "2", "sglang", "0.5.6.post2", 2, 240),  # runs: [2], the plan file
        ("profile_export_aiperf.csv", "1", "sglang", "0.5.6.post2", 1, 352),  # the defaults
        ("profile_export_genai_perf.json", "1", "sglang", "0.5.6.post2", 8, 448),  # inline
    ]
    assert runs[0].deployment == Deployment("llama-3.1-8b", (_pool(),))
    assert runs[-1].deployment == Deployment("llama-3.1-8b", (_pool(tp=8),))
    assert runs[0].measured == load_runs(FIX / "vllm_bench_llama8b_c160.json", "vllm-bench",
                                         deployment=runs[0].deployment)[0].measured


def test_deployment_forms_agree(tmp_path):
    dep = Deployment("llama-3.1-8b", (_pool(tp=2, max_num_seqs=256, max_num_batched_tokens=4096),))
    plan = tmp_path / "plans" / "p.json"
    plan.parent.mkdir()
    plan.write_text(json.dumps({"deployment": dep.to_dict(), "predicted": {}}))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(dep.to_dict()))
    short = {"model": "llama-3.1-8b", "gpu": "h200-sxm", "tp": 2, "precision": "fp8",
             "kv_dtype": "fp8", "max_num_seqs": 256, "max_num_batched_tokens": 4096}
    assert read_plan_deployment(plan) == dep
    assert deployment_from("plans/p.json", base_dir=tmp_path) == dep
    assert deployment_from(bare) == dep
    assert deployment_from({"deployment": dep.to_dict()}) == dep
    assert deployment_from(dep.to_dict()) == dep
    assert deployment_from(short) == dep
    assert deployment_from(dep) is dep


@pytest.mark.parametrize("spec, msg", [
    ({"model": "llama-3.1-8b", "gpu": "h200-sxm", "tensor_parallel": 2}, "unknown deployment keys ['tensor_parallel']"),
    ({"model": "llama-3.1-8b"}, "needs 'model' and 'gpu'"),
    ({"model": "llama-3.1-8b", "gpu": "h200-sxm", "tp": 0}, "tp=0"),
    ({"model": "llama-3.1-8b", "pools": [{"role": "colocated"}]}, "a pool needs 'role' and 'gpu'"),
    ("missing-plan.json", "cannot read plan file"),
    (42, "expected a plan file path"),
])
def test_bad_deployments_say_what_is_accepted(tmp_path, spec, msg):
    with pytest.raises(ServePlanError, match="deployment") as e:
        deployment_from(spec, base_dir=tmp_path)
    assert msg in str(e.value)


def _manifest(tmp_path, text: str, suffix: str = ".yaml") -> Path:
    for f in FIX.iterdir():
        shutil.copy(f, tmp_path / f.name)
    p = tmp_path / f"m{suffix}"
    p.write_text(text)
    return p


VLLM = "file: vllm_bench_llama8b_c160.json\n    format: vllm-bench"
DEP = "deployment: {model: llama-3.1-8b, gpu: h200-sxm, precision: fp8, kv_dtype: fp8}"


@pytest.mark.parametrize("text, msg", [
    ("runs: []", "a non-empty list 'runs'"),
    ("runs:\n  - {file: x.json, format: vllm-bench, gpu: h100}", "runs[1]: unknown keys ['gpu']"),
    ("runs:\n  - {file: x.json, format: vllm}", "runs[1] (x.json): format 'vllm'; expected one of"),
    (f"runs:\n  - {{file: nowhere.json, format: vllm-bench, {DEP}}}", "nowhere.json: no such results file"),
    (f"runs:\n  - {VLLM}", "do not say which deployment"),
    (f"runs:\n  - {VLLM}\n    deployment: {{model: llama-3.1-8b, gpu: h200-sxm, pp: -1}}", "runs[1] (vllm_bench_llama8b_c160.json): deployment: pp=-1"),
    (f"defaults: {{{DEP}}}\nruns:\n  - {VLLM}\n    concurrency: 8", "runs[1]: vllm_bench_llama8b_c160.json run 1: the file's concurrency is 160"),
    ("runs:\n  - {file: s.csv, format: aic-silicon, engine: vllm}", "engine cannot be given"),
    ("runs: [\n  {file: a", "not valid YAML"),
    ("defaults: {gpu: h100}\nruns:\n  - {file: a.json}", "defaults: unknown keys ['gpu']"),
])
def test_bad_manifests_name_the_manifest_entry_and_field(tmp_path, text, msg):
    p = _manifest(tmp_path, text)
    (tmp_path / "s.csv").write_text("id\n")
    with pytest.raises(ServePlanError, match="m.yaml") as e:
        load_manifest(p)
    assert msg in str(e.value)


def test_bad_json_manifest_and_missing_manifest(tmp_path):
    p = _manifest(tmp_path, '{"runs": [}', suffix=".json")
    with pytest.raises(ServePlanError, match=r"m.json: line 1 column 11: not valid JSON"):
        load_manifest(p)
    with pytest.raises(ServePlanError, match="cannot read run manifest"):
        load_manifest(tmp_path / "none.yaml")


def test_manifest_reads_an_aic_silicon_file_without_the_defaults(tmp_path, shared):
    csv = shared / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv"
    p = _manifest(tmp_path, f"defaults: {{{DEP}, engine: vllm}}\nruns:\n"
                            f"  - {{file: {csv}, format: aic-silicon}}\n  - {VLLM}\n")
    runs = load_manifest(p)
    assert len(runs) == len(load_runs(csv, "aic-silicon")) + 1
    assert runs[0].engine == "sglang" and runs[-1].engine == "vllm"


@pytest.mark.parametrize("value, ok", [("0.10", "0.10"), (1, "1"), (0.10, None), (True, None)])
def test_an_engine_version_read_as_a_number_is_refused_where_it_may_have_lost_a_zero(tmp_path, value, ok):
    doc = {"runs": [{"file": str(FIX / "vllm_bench_llama8b_c160.json"), "format": "vllm-bench",
                     "engine_version": value,
                     "deployment": {"model": "llama-3.1-8b", "gpu": "h200-sxm", "precision": "fp8",
                                    "kv_dtype": "fp8"}}]}
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    if ok is None:
        with pytest.raises(ServePlanError, match=r"m.json: runs\[1\]: engine_version"):
            load_manifest(p)
    else:
        assert load_manifest(p)[0].engine_version == ok


@pytest.mark.parametrize("name, text", [("m.json", '{"runs": [' * 50_000 + "]}" * 50_000),
                                        ("m.yaml", "runs:\n  - concurrency: " + "9" * 5000 + "\n")])
def test_a_pathological_manifest_is_one_error(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ServePlanError, match=f"{name}: not valid"):
        load_manifest(p)
