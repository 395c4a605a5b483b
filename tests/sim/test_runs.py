"""Measured engine runs: the AIConfigurator silicon reader, the physics check, the replay."""

from __future__ import annotations

from dataclasses import replace

import pytest

from costmodel.batch import Batch
from costmodel.errors import ServePlanError
from costmodel.model import CostModel
from sim.deployment import Deployment, PoolConfig
from sim.runs import MeasuredRun, load_runs
from sim.runs.physics import work_bounds
from sim.runs.replay import replay

# the silicon CSV's header as AIConfigurator publishes it (vLLM file), and rows whose values
# come from ../shared/data/e2e_runs
VLLM_HEADER = ("id,backend,backend_version,model_path,system,precision,mode,isl,osl,gemm_quant_mode,"
               "moe_quant_mode,batch_size,tp_size,pp_size,attention_dp_size,moe_tp_size,moe_ep_size,"
               "prefill_batch_size,prefill_num_workers,prefill_tp_size,prefill_pp_size,"
               "prefill_attention_dp_size,prefill_moe_tp_size,prefill_moe_ep_size,decode_batch_size,"
               "decode_num_workers,decode_tp_size,decode_pp_size,decode_attention_dp_size,"
               "decode_moe_tp_size,decode_moe_ep_size,silicon_ttft_ms,silicon_tpot_ms")
BF16_ROW = ("qwen_agg_1024x128_c8_tp2_1,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,,agg,1024,128,,,8.0,2.0,"
            "1.0,,1.0,1.0,,,,,,,,,,,,,,,154.2481599,18.0370482875")
FP8_ROW = ("qwen_agg_4000x1000_tp2,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,fp8,agg,4000,1000,fp8,,48.0,"
           "2.0,1.0,,1.0,1.0,,,,,,,,,,,,,,,184.594874,11.631858")
SGLANG_HEADER = ("id,backend,backend_version,model_path,system,precision,mode,isl,osl,gemm_quant_mode,"
                 "moe_quant_mode,batch_size,tp_size,pp_size,moe_tp_size,moe_ep_size,prefill_batch_size,"
                 "prefill_num_workers,prefill_tp_size,prefill_pp_size,prefill_attention_dp_size,"
                 "prefill_moe_tp_size,prefill_moe_ep_size,decode_batch_size,decode_num_workers,"
                 "decode_tp_size,decode_pp_size,decode_attention_dp_size,decode_moe_tp_size,"
                 "decode_moe_ep_size,silicon_ttft_ms,silicon_tpot_ms")
DISAGG_ROW = ("qwen_disagg_4000x1000_1,sglang,0.5.6.post2,Qwen/Qwen3-32B,h100_sxm,fp8,disagg,4000,1000,"
              "fp8_block,,,,,,,,5.0,1.0,1.0,1.0,1.0,1.0,48.0,11.0,1.0,1.0,1.0,1.0,1.0,566.666233,22.311411")


@pytest.fixture
def csv(tmp_path):
    def write(header: str, *rows: str):
        p = tmp_path / "silicon.csv"
        p.write_text("\n".join((header, *rows)) + "\n")
        return p
    return write


def test_vllm_row_becomes_the_deployment_and_benchmark_it_ran(csv):
    (run,) = load_runs(csv(VLLM_HEADER, BF16_ROW), "aic-silicon")
    pool = run.deployment.pools[0]
    assert (run.engine, run.engine_version, run.deployment.model) == ("vllm", "0.12.0", "qwen3-32b")
    assert (pool.role, pool.gpu, pool.tp, pool.precision, pool.kv_dtype) == (
        "colocated", "h100-sxm", 2, "bf16", "auto")
    assert pool.max_num_batched_tokens == 8 + 1024 + 1500  # AIConfigurator's aggregated budget
    assert (run.workload, run.concurrency, run.num_requests) == ("fixed:1024,128", 8, 80)
    assert run.measured == pytest.approx({"ttft_mean_s": 0.1542481599, "tpot_mean_s": 0.0180370482875})


def test_fp8_row_runs_fp8_weights_and_kv(csv):
    (run,) = load_runs(csv(VLLM_HEADER, FP8_ROW), "aic-silicon")
    pool = run.deployment.pools[0]
    assert (pool.precision, pool.kv_dtype, run.concurrency) == ("fp8", "fp8", 48)


def test_fp8_kv_cache_only_where_a_row_of_its_configuration_needs_one(csv):
    # a row does not name its KV dtype: the disaggregated Qwen3-32B row's TPOT is faster than a
    # bf16 cache's decode reads allow (one decode GPU, 48 x 5000-token contexts in 22 ms), so
    # its configuration (same engine, version, model, quantisation) runs an fp8 cache, even
    # in a row that alone would not need one; the Llama fp8 row does not need one and keeps
    # the engine's default (the model's dtype)
    easy = DISAGG_ROW.replace("qwen_disagg_4000x1000_1", "qwen_disagg_easy").replace(
        ",48.0,11.0,", ",4.0,11.0,")
    hard, light = load_runs(csv(SGLANG_HEADER, DISAGG_ROW, easy), "aic-silicon")
    bf16 = replace(hard, deployment=replace(hard.deployment, pools=tuple(
        replace(p, kv_dtype="auto") for p in hard.deployment.pools)))
    assert work_bounds(bf16).memory_fraction > 1.0 >= work_bounds(hard).memory_fraction
    assert [p.kv_dtype for r in (hard, light) for p in r.deployment.pools] == ["fp8"] * 4
    (alone,) = load_runs(csv(SGLANG_HEADER, easy), "aic-silicon")
    assert [p.kv_dtype for p in alone.deployment.pools] == ["auto", "auto"]
    # a benchmark that scores the hard row lets only its fitted rows' TPOT decide: the easy one
    from sim.runs.aic_silicon import read_aic_silicon

    h2, l2 = read_aic_silicon(csv(SGLANG_HEADER, DISAGG_ROW, easy), tpot_evidence={light.run_id})
    assert [p.kv_dtype for r in (h2, l2) for p in r.deployment.pools] == ["auto"] * 4
    (llama,) = load_runs(csv(SGLANG_HEADER, SGLANG_AGG_ROWS[1]), "aic-silicon")
    pool = llama.deployment.pools[0]
    assert (pool.precision, pool.kv_dtype) == ("fp8", "auto")
    assert work_bounds(llama).memory_fraction <= 1.0


def test_disaggregated_row_has_both_pools(csv):
    (run,) = load_runs(csv(SGLANG_HEADER, DISAGG_ROW), "aic-silicon")
    pre, dec = run.deployment.pool("prefill"), run.deployment.pool("decode")
    assert run.deployment.mode == "disaggregated" and run.engine == "sglang"
    assert (pre.tp, pre.replicas, dec.tp, dec.replicas) == (1, 5, 1, 11)
    assert run.concurrency == 48 * 11  # every decode slot kept full


@pytest.mark.parametrize("edit, msg", [
    (lambda h, r: (h.replace("silicon_tpot_ms", "tpot"), r), "missing columns ['silicon_tpot_ms']"),
    (lambda h, r: (h, r.replace("184.594874", "")), "silicon_ttft_ms' is empty"),
    (lambda h, r: (h, r.replace(",fp8,,48.0", ",int2,,48.0")), "gemm_quant_mode 'int2'"),
    (lambda h, r: (h, r.replace("h100_sxm", "tpu_v9")), "unknown GPU"),
    (lambda h, r: (h, r.replace(",48.0,2.0,1.0,,", ",48.0,2.0,1.0,4.0,")), "attention_dp_size=4.0"),
    (lambda h, r: (h, r.replace(",agg,", ",mixed,")), "mode 'mixed'"),
    (lambda h, r: (h, r.replace(",agg,4000,1000,", ",agg,4000,1000000,")), "more than qwen3-32b's context"),
    (lambda h, r: (h, r.replace("184.594874", "inf")), "silicon_ttft_ms=inf; expected a finite number"),
    (lambda h, r: (h, r.replace(",48.0,2.0,1.0,,", ",1e20,2.0,1.0,,")), "expected a whole number in [1, 1,000,000]"),
])
def test_bad_rows_name_the_file_run_and_field(csv, edit, msg):
    h, r = edit(VLLM_HEADER, FP8_ROW)
    with pytest.raises(ServePlanError, match="silicon.csv") as e:
        load_runs(csv(h, r), "aic-silicon")
    assert msg in str(e.value)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ServePlanError, match="run format 'vllm'"):
        load_runs(tmp_path / "x.csv", "vllm")
    with pytest.raises(ServePlanError, match="no such results file"):
        load_runs(tmp_path / "x.csv", "aic-silicon")


def _toy_run(tiny_model, toy_gpu, ttft, tpot, conc=4, isl=64, osl=9, n=None) -> MeasuredRun:
    dep = Deployment(tiny_model, (PoolConfig("colocated", toy_gpu, max_num_seqs=8,
                                             max_num_batched_tokens=256, block_size=16),))
    return MeasuredRun("t.csv", "r1", "vllm", "0", dep, f"fixed:{isl},{osl}", concurrency=conc,
                       num_requests=n, measured={"ttft_mean_s": ttft, "tpot_mean_s": tpot})


def test_work_bounds_follow_littles_law(tiny_model, toy_gpu):
    run = _toy_run(tiny_model, toy_gpu, ttft=0.01, tpot=0.002)
    b = work_bounds(run)
    x = 4 / (0.01 + 8 * 0.002)  # requests/s through 4 clients
    cm = CostModel(tiny_model, toy_gpu)
    flops = sum(o.flops for o in cm.step(Batch(prefill=((64, 0),))).ops)
    assert b.requests_per_s == pytest.approx(x)
    assert b.compute_fraction == pytest.approx(x * flops / toy_gpu.bf16_flops)
    assert b.feasible
    # the same run 10,000x faster would read more than the GPU's HBM moves: not as described
    fast = _toy_run(tiny_model, toy_gpu, ttft=1e-6, tpot=2e-7)
    assert not work_bounds(fast).feasible


def test_replay_counts_every_request_of_the_measured_phase(tiny_model, toy_gpu):
    run = _toy_run(tiny_model, toy_gpu, ttft=0.01, tpot=0.002, n=12)
    rep = replay(run)
    assert rep.num_requests == 12
    assert set(rep.predicted) == {"ttft_mean_s", "tpot_mean_s"}
    # the first burst is averaged in: its TTFT (all 4 prompts at once) is the longest
    from sim import parse_workload, simulate
    res = simulate(run.deployment, parse_workload(run.workload, concurrency=4), num_requests=12,
                   seed=0, keep_requests=True, warmup_fraction=0, cooldown_fraction=0)
    assert rep.predicted["ttft_mean_s"] == pytest.approx(res.requests.ttft_s.mean(), rel=1e-12)


SGLANG_AGG_ROWS = (
    "qwen_agg_1024x128_c16_tp2_1,sglang,0.5.1.post1,Qwen/Qwen3-32B,h100_sxm,,agg,1024,128,,,16.0,2.0,"
    "1.0,1.0,1.0,,,,,,,,,,,,,,,840.8064807531249,16.538571871875",
    "llama_agg_1000x100_c160_tp1,sglang,0.5.6.post2,meta-llama/Llama-3.1-8B-Instruct,h200_sxm,fp8,agg,"
    "1000,100,fp8_block,,160.0,1.0,1.0,1.0,1.0,,,,,,,,,,,,,,,1612.27,26.98",
)


def test_sglang_rows_run_as_aiconfigurator_launches_them(csv):
    old, new = load_runs(csv(SGLANG_HEADER, *SGLANG_AGG_ROWS), "aic-silicon")
    assert old.deployment.engine == new.deployment.engine == "sglang"
    # --max-prefill-tokens ISL + 1500 under the 8192-token chunk; only 0.5.6.post2's launch
    # template prints --enable-mixed-chunk
    assert old.deployment.pools[0].max_num_batched_tokens == 1024 + 1500
    assert (old.policy, new.policy) == (None, "prefill_mixed")
    assert new.deployment.pools[0].gpu == "h200-sxm" and new.deployment.model == "llama-3.1-8b"
