"""Importers on the real files in ../shared (row counts, ms -> s), native round trip, bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from costmodel.errors import ServePlanError
from costmodel.importers import COLUMNS, load_measured
from costmodel.importers.native import write_native


@pytest.fixture(scope="module")
def profiles(shared):
    return shared / "data" / "profiles"


def test_vidur_mlp_file(profiles):
    f = profiles / "vidur/compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    rows = load_measured(f, "vidur")
    raw = pd.read_csv(f)
    assert list(rows.columns) == list(COLUMNS)
    assert len(rows) == len(raw) * 10  # ten operators per measured line
    assert set(rows["model"]) == {"llama-2-7b"} and set(rows["gpu"]) == {"a100-80g"}
    emb = rows[rows["op"] == "embedding"].reset_index(drop=True)
    assert emb["measured_s"].iloc[0] == pytest.approx(raw["time_stats.emb.median"].iloc[0] * 1e-3)
    # qkv of Llama-2-7B at tp=1: n = (32 + 2 x 32) x 128 = 12,288, k = 4,096
    qkv = rows[(rows["op"] == "qkv_proj") & (rows["tp"] == 1)].iloc[0]
    assert (qkv["n"], qkv["k"]) == (12_288, 4_096)


def test_vidur_folder(profiles):
    rows = load_measured(profiles / "vidur", "vidur")
    counts = rows["op"].value_counts()
    assert counts["attn_prefill"] == 4_418 and counts["attn_decode"] == 10_240
    assert counts["all_reduce"] == 6_958 + 4_496 and counts["send_recv"] == 2 * 1_988
    assert (rows["measured_s"] < 1.0).all() and (rows["measured_s"] > 0).all()


def test_aiconfigurator_gemm(profiles):
    f = profiles / "aiconfigurator/h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet"
    rows = load_measured(f, "aiconfigurator")
    raw = pd.read_parquet(f)
    assert len(rows) == len(raw) == 107_188
    assert set(rows["gpu"]) == {"h100-sxm"}  # from the device column, no --gpu needed
    assert rows["measured_s"].iloc[0] == pytest.approx(raw["latency"].iloc[0] * 1e-3)
    assert set(rows["precision"]) == {"bf16", "fp8", "fp8_block"}


def test_aiconfigurator_folder_reads_parquet_not_csv_twice(profiles):
    rows = load_measured(profiles / "aiconfigurator/h100_sxm/comm", "aiconfigurator")
    assert len(rows) == 504 + 138
    ar = rows[(rows["op"] == "all_reduce") & (rows["kernel"] == "vllm_graph")]
    assert ar["msg_bytes"].min() == 128 * 2  # 128 bf16 elements


def test_aiconfigurator_decode_context(profiles):
    f = profiles / "aiconfigurator/h100_sxm/attention/vllm/0.24.0/generation_attention_perf.parquet"
    rows = load_measured(f, "aiconfigurator")
    raw = pd.read_parquet(f)
    assert len(rows) == len(raw)
    assert (rows["context_len"].to_numpy() == (raw["isl"] + raw["step"]).to_numpy()).all()


def test_splitwise_two_rows_per_line(profiles):
    f = profiles / "splitwise/perf_model_a100.csv"
    rows = load_measured(f, "splitwise")
    assert len(rows) == 2 * 420
    pre = rows[rows["op"] == "prefill_step"].iloc[0]
    dec = rows[rows["op"] == "decode_step"].iloc[0]
    # first line: llama2-70b, tp 2, prompt 512, batch 1, 128 tokens, 196.25 ms / 54.88 ms
    assert pre["measured_s"] == pytest.approx(0.1962532191537321)
    assert dec["measured_s"] == pytest.approx(0.05487951193752838)
    assert (pre["model"], pre["tp"], pre["prefill_len"]) == ("llama-2-70b", 2, 512)
    assert dec["context_len"] == 512 + 64  # 512 + (128 - 1) / 2, rounded
    # both rows say what the run held in its KV cache: 512-token prompts, 128 generated
    assert (pre["gen_len"], dec["gen_len"], dec["prefill_len"]) == (128, 128, 512)
    only = load_measured(f, "splitwise", model="llama-2-70b")
    assert len(only) == 2 * 315


def test_native_round_trip(profiles, tmp_path):
    rows = load_measured(profiles / "splitwise/perf_model_a100.csv", "splitwise")
    out = tmp_path / "rows.csv"
    write_native(rows.assign(predicted_s=1.0), out)
    back = load_measured(out, "native")
    pd.testing.assert_frame_equal(back.drop(columns=["source"]), rows.drop(columns=["source"]),
                                  check_dtype=False)


def test_missing_columns_named(tmp_path):
    f = tmp_path / "mlp.csv"
    pd.DataFrame({"time_stats.add.median": [0.01], "n_head": [32], "n_embd": [4096]}).to_csv(f)
    with pytest.raises(ServePlanError, match=r"mlp\.csv: missing column\(s\) n_kv_head, n_expanded_embd, num_tokens"):
        load_measured(f, "vidur", gpu="a100")
    g = tmp_path / "perf_model.csv"
    pd.DataFrame({"model": ["llama2-70b"], "prompt_size": [1]}).to_csv(g, index=False)
    with pytest.raises(ServePlanError, match="perf_model.csv: missing column.*batch_size"):
        load_measured(g, "splitwise", gpu="a100")


def test_gpu_needed_when_data_has_none(tmp_path):
    f = tmp_path / "rows.csv"
    pd.DataFrame({"op": ["gemm"], "m": [1], "n": [8], "k": [8], "measured_s": [1e-5]}).to_csv(f, index=False)
    with pytest.raises(ServePlanError, match="--gpu"):
        load_measured(f, "native")
    assert load_measured(f, "native", gpu="h100")["gpu"].iloc[0] == "h100-sxm"


def test_aiconfigurator_other_systems_tables(tmp_path):
    """Another system's tables: CSV with a .txt suffix (older releases), and dtypes the cost
    model cannot price (nvfp4, int4 weight-only) left out with a note, not a failed import."""
    d = tmp_path / "b200_sxm" / "gemm" / "vllm" / "0.9"
    d.mkdir(parents=True)
    pd.DataFrame({"gemm_dtype": ["bfloat16", "fp8", "nvfp4", "nvfp4", "int4_wo"],
                  "m": [16, 16, 16, 32, 16], "n": [4096] * 5, "k": [4096] * 5,
                  "latency": [0.02, 0.015, 0.01, 0.011, 0.012],
                  "device": ["NVIDIA B200"] * 5}).to_csv(d / "gemm_perf.txt", index=False)
    rows = load_measured(tmp_path, "aiconfigurator")
    assert rows["precision"].tolist() == ["bf16", "fp8"]
    assert set(rows["gpu"]) == {"b200"}
    assert rows["measured_s"].tolist() == pytest.approx([2e-5, 1.5e-5])
    (note,) = rows.attrs["notes"]
    assert "left out 3 rows of gemm_dtype nvfp4 (2), int4_wo (1)" in note
    # a table of nothing the model prices is an error naming what it holds
    pd.DataFrame({"gemm_dtype": ["nvfp4"], "m": [1], "n": [8], "k": [8], "latency": [0.01]}).to_csv(
        d / "gemm_perf.txt", index=False)
    with pytest.raises(ServePlanError, match=r"gemm_dtype \['nvfp4'\]; expected one of"):
        load_measured(tmp_path, "aiconfigurator", gpu="b200")


def test_aiconfigurator_gpu_from_the_system_folder(tmp_path):
    """Tables without a device column: `--gpu`, else the system folder they sit in (with a
    note), else one clear error; device names that only look like a preset are not one."""
    d = tmp_path / "h200_sxm" / "gemm" / "vllm" / "0.9"
    d.mkdir(parents=True)
    pd.DataFrame({"gemm_dtype": ["bfloat16"], "m": [16], "n": [4096], "k": [4096],
                  "latency": [0.02]}).to_csv(d / "gemm_perf.csv", index=False)
    rows = load_measured(tmp_path, "aiconfigurator")
    assert set(rows["gpu"]) == {"h200-sxm"}
    assert any("system folder 'h200_sxm'" in n for n in rows.attrs["notes"])
    assert set(load_measured(tmp_path, "aiconfigurator", gpu="h100")["gpu"]) == {"h100-sxm"}
    other = tmp_path / "mine" / "gemm"
    other.mkdir(parents=True)
    (d / "gemm_perf.csv").rename(other / "gemm_perf.csv")
    with pytest.raises(ServePlanError, match="does not name its GPU; pass --gpu"):
        load_measured(tmp_path / "mine", "aiconfigurator")


def test_aiconfigurator_device_names():
    from costmodel.importers.aiconfigurator import device_to_gpu

    assert device_to_gpu("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert device_to_gpu("NVIDIA A100-SXM4-80GB") == "a100-80g"
    assert device_to_gpu("NVIDIA L40S") == "l40s"
    assert device_to_gpu("NVIDIA L4") == "l4"
    assert device_to_gpu("NVIDIA L40") is None  # not an L4
    assert device_to_gpu("NVIDIA GB200") is None  # not a B200 preset
    assert device_to_gpu("NVIDIA B200") == "b200"


def test_staged_fit_splits_an_op_whose_precisions_use_different_kernels(profiles):
    # AIConfigurator's H100 folder: the fused-MoE rows of each expert precision are priced by
    # their own kernel's parameters, so each is its own stage; GEMMs of every precision share
    # the GEMM parameters and stay one stage (a fit's cost grows with rows x parameters)
    from costmodel.fit import _stages, informed_params, sample_rows
    from costmodel.measured import skipped_mask

    folder = profiles / "aiconfigurator/h100_sxm"
    rows = pd.concat([load_measured(folder / "moe", "aiconfigurator"),
                      load_measured(folder / "gemm", "aiconfigurator")], ignore_index=True)
    rows = sample_rows(rows, 200, 0)
    rows = rows[~skipped_mask(rows)].reset_index(drop=True)
    names = informed_params(rows)
    stages = _stages(rows, names)
    moe = [set(rows.iloc[i]["precision"]) for i, _ in stages if set(rows.iloc[i]["op"]) == {"moe"}]
    assert sorted(map(sorted, moe)) == [[p] for p in sorted(set(rows[rows.op == "moe"]["precision"]))]
    assert len(moe) >= 4
    gemm = [set(rows.iloc[i]["precision"]) for i, _ in stages if set(rows.iloc[i]["op"]) == {"gemm"}]
    assert gemm == [set(rows[rows.op == "gemm"]["precision"])]
    # every row and every parameter lands in exactly one stage
    assert sorted(np.concatenate([i for i, _ in stages]).tolist()) == list(range(len(rows)))
    assert sorted(n for _, ns in stages for n in ns) == sorted(names)
