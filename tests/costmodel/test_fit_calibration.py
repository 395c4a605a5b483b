"""Calibration fit recovers known parameters; profiles round-trip and reject schema violations;
the scalar (hot path) and array (fit) forms of every formula agree."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.efficiencies import Efficiencies
from costmodel.errors import ServePlanError
from costmodel.fit import fit_params
from costmodel.hardware import load_gpu
from costmodel.measured import predict_rows
from costmodel.model import CostModel
from costmodel.tables import build_tables


def test_fit_recovers_known_parameters(synthetic_rows, fit_truth):
    rows = synthetic_rows(np.random.default_rng(1))
    names = ["gemm_compute_eff", "gemm_mem_eff", "kernel_overhead_s", "attn_mem_eff", "attn_decode_cta_s"]
    res = fit_params(rows, params=names)  # starts from the defaults, far from fit_truth
    for name in names:
        assert getattr(res.params, name) == pytest.approx(getattr(fit_truth, name), rel=0.01), name
    assert res.residuals["mape"] < 1e-3


def test_fit_moves_only_informed_parameters(synthetic_rows):
    rows = synthetic_rows(np.random.default_rng(2), 100)
    res = fit_params(rows)
    assert "host_overhead_s" not in res.fitted and "comm_bw_eff" not in res.fitted
    assert res.params.host_overhead_s == Efficiencies().host_overhead_s


def test_profile_round_trip_with_tables(tmp_path, synthetic_rows, fit_truth):
    rows = synthetic_rows(np.random.default_rng(3), 200)
    noisy = rows.assign(measured_s=rows["measured_s"] * 1.1)
    prof = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(fit_truth, {"mape": 0.05}, 0.07)},
                              source="test")
    prof.tables["h100-sxm"] = build_tables(noisy, predict_rows(noisy, prof))
    p = tmp_path / "calib.json"
    prof.save(p)
    back = CalibrationProfile.load(p)
    assert back.efficiencies_for("h100-sxm") == fit_truth
    assert back.uncertainty_for("h100-sxm") == 0.07
    # tables learned the 10% offset: predictions with them land on the noisy measurements
    pred = predict_rows(noisy, back)
    assert np.abs(pred / noisy["measured_s"] - 1).max() < 0.01
    # and the step model uses them
    cm_t = CostModel("llama-3.1-8b", "h100", calibration=back)
    cm_0 = CostModel("llama-3.1-8b", "h100", calibration=replace(back, tables={}))
    assert cm_t.step_time_s([(2048, 0)]) > cm_0.step_time_s([(2048, 0)])


def test_schema_violations_are_named(tmp_path):
    good = CalibrationProfile(gpus={"a100-80g": GpuCalibration(Efficiencies())}).to_dict()
    bad = json.loads(json.dumps(good))
    bad["gpus"]["a100-80g"]["params"]["gemm_compute_eff"] = 1.7
    with pytest.raises(ServePlanError, match=r"gemm_compute_eff = 1.7; expected a number in \[0.05, 1.0\]"):
        CalibrationProfile.from_dict(bad)
    bad = dict(good, version=99)
    with pytest.raises(ServePlanError, match="version 99"):
        CalibrationProfile.from_dict(bad)
    bad = json.loads(json.dumps(good))
    bad["gpus"]["a100-80g"]["params"]["warp_speed"] = 0.5
    with pytest.raises(ServePlanError, match="warp_speed is not a parameter"):
        CalibrationProfile.from_dict(bad)
    v1 = dict(good, version=1)  # version 1 files still load
    assert CalibrationProfile.from_dict(v1).efficiencies_for("a100-80g") == Efficiencies()
    p = tmp_path / "c.json"
    p.write_text('{"schema": "serveplan.calibration",\n "version": 2,,}')
    with pytest.raises(ServePlanError, match="line 2 column"):
        CalibrationProfile.load(p)


def _edit(d: dict, path: str, value) -> dict:
    out = json.loads(json.dumps(d))
    *head, last = path.split(".")
    node = out
    for k in head:
        node = node[k]
    node[last] = value
    return out


def test_values_no_profile_can_hold_are_named_not_crashes():
    # a fuzzer's finds (10,200 mutated profiles): each of these raised OverflowError,
    # TypeError or ValueError at load or in the cost model, or loaded and gave NaN or 1e20 s
    from costmodel.tables import CorrectionTable

    good = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        Efficiencies(), {}, 0.05, {}, {"ttft": [-0.2, 0.1]})}).to_dict()
    table = CorrectionTable.fit("gemm", [("bf16",)] * 3, np.array([[64, 4096, 4096], [128, 4096, 4096],
                                                                   [256, 4096, 4096]]), np.zeros(3)).to_dict()
    good["gpus"]["h100-sxm"]["tables"] = {"gemm": table}
    CalibrationProfile.from_dict(good)
    g = "gpus.h100-sxm"
    for path, value, msg in (
            (f"{g}.params.gemm_compute_eff", 10 ** 400, "gemm_compute_eff = 1000000000"),
            (f"{g}.latency_interval", {"ttft": [-0.1, 10 ** 400]}, "latency_interval must map"),
            (f"{g}.latency_interval", {"ttft": [-0.1, 50.0]}, "each within +-20"),
            (f"{g}.uncertainty_rel", True, "uncertainty_rel = True"),
            (f"{g}.residuals", "ab", "residuals must be an object"),
            (f"{g}.tables.gemm.log_ratio", None, "points and log_ratio must be"),
            (f"{g}.tables.gemm.log_ratio", [0.0, 800.0, 0.0], "log_ratio reaches 800 at row 1"),
            (f"{g}.tables.gemm.points", [[0, 1, 2, 3, 4]] * 3, "a gemm point has 4 columns, not 5"),
            (f"{g}.tables.gemm.points", [[0, float("nan"), 2, 3]] * 3, "must be equal-length, non-empty, finite"),
            (f"{g}.tables.gemm.cats", ["bf16"] * 3, "cats must be a list of lists"),
            (f"{g}.tables.gemm.points", [[0, -1e308, 2, 3]] * 3, "a point is a category index"),
            (f"{g}.tables.gemm.points", [[5, 1, 2, 3]] * 3, "a point is a category index"),
            (f"{g}.tables.attn_decode", table, "expected a 'attn_decode' correction table"),
            (f"{g}.latency_domain", {"tp": [2, True]}, "latency_domain.tp = [2, True]; expected a non-empty list of whole"),
            (f"{g}.latency_domain", {"engines": []}, "latency_domain.engines = []; expected a non-empty list of names"),
            (f"{g}.latency_domain", {"input_tokens": [500.0, 100.0]}, "expected [least, most] mean tokens"),
            (f"{g}.latency_domain", {"output_tokens": [1.0, 1e400]}, "expected [least, most] mean tokens"),
            (f"{g}.latency_domain", {"gpus": ["h100"]}, "latency_domain: expected an object with keys among"),
            (f"{g}.latency_domain", [1], "latency_domain: expected an object"),
    ):
        with pytest.raises(ServePlanError, match="profile") as e:
            CalibrationProfile.from_dict(_edit(good, path, value), "profile")
        assert msg in str(e.value), (path, str(e.value))


def test_a_measured_device_is_keyed_by_its_name_and_held_to_plausible_numbers():
    from dataclasses import asdict

    from costmodel.hardware import HardwareSpec

    hw = asdict(HardwareSpec("my-a40", 1.5e14, 0.0, 48e9, 6.9e11, 0.0, 3.2e10, 1e10, 8, 0.0, sm_count=84))
    prof = {"schema": "serveplan.calibration", "version": 2,
            "gpus": {"my-a40": {"params": {}, "hardware": hw}}}
    CalibrationProfile.from_dict(prof)
    for field_, value, msg in (("bf16_flops", 1e-300, "bf16_flops = 1e-300; expected 1e+06 to 1e+18"),
                               ("bf16_flops", 989.0, "bf16_flops = 989.0; expected 1e+06 to 1e+18"),
                               ("hbm_bytes", 10 ** 400, "hbm_bytes = 1000000000"),
                               ("gemm_row_tile", 0.5, "gemm_row_tile = 0.5; expected a whole number"),
                               ("name", "cpu", "a measured device's entry is keyed by its name")):
        bad = _edit(prof, f"gpus.my-a40.hardware.{field_}", value)
        with pytest.raises(ServePlanError, match="p.json") as e:
            CalibrationProfile.from_dict(bad, "p.json")
        assert msg in str(e.value), (field_, str(e.value))


def test_scalar_and_array_formulas_agree():
    rng = np.random.default_rng(4)
    gpu, eff = load_gpu("h100"), Efficiencies()
    m, n, k = rng.integers(1, 20000, 50), rng.integers(16, 30000, 50), rng.integers(16, 30000, 50)
    for fp8 in (False, True):
        peak = gpu.fp8_flops if fp8 else gpu.bf16_flops
        act = 1.0 if fp8 else 2.0
        v = rl.gemm_time_s_v(m, n, k, gpu, eff, peak, 1.0 if fp8 else 2.0, act, fp8)
        s = [rl.gemm_time_s(int(a), int(b), int(c), gpu, eff, peak, 1.0 if fp8 else 2.0, act, fp8)
             for a, b, c in zip(m, n, k, strict=True)]
        np.testing.assert_allclose(v, s, rtol=1e-12)
    chunk, prefix = rng.integers(1, 8192, 50), rng.integers(0, 8192, 50)
    v = at.prefill_attn_time_s_v(1, chunk, prefix, 32, 8, 128, 0, gpu, eff, 2.0)
    s = [at.prefill_attn_time_s(int(c), int(p), 32, 8, 128, gpu, eff) for c, p in zip(chunk, prefix, strict=True)]
    np.testing.assert_allclose(v, s, rtol=1e-12)
    b, ctx = rng.integers(1, 512, 50), rng.integers(1, 32768, 50)
    v = at.decode_attn_time_s_v(b, b * ctx, 1, 32, 8, 128, gpu, eff, 2.0)
    s = [at.decode_attn_time_s(int(x), float(x * c), 1, 32, 8, 128, gpu, eff) for x, c in zip(b, ctx, strict=True)]
    np.testing.assert_allclose(v, s, rtol=1e-12)
    msg, bw = rng.uniform(1e3, 1e9, 50), gpu.intra_node_bw_bytes_s()
    for g in (2, 4, 8):
        v = rl.collective_time_s_v("all_reduce", msg, g, bw, eff)
        s = [rl.allreduce_time_s(float(x), g, gpu, eff) for x in msg]
        np.testing.assert_allclose(v, s, rtol=1e-12)


def test_sample_rows_caps_each_op_and_precision_and_keeps_small_groups():
    import pandas as pd

    from costmodel.fit import sample_rows

    rows = pd.DataFrame({"gpu": "h100-sxm", "op": ["gemm"] * 900 + ["attn_decode"] * 50 + ["all_reduce"] * 7,
                         "precision": ["bf16"] * 450 + ["fp8"] * 450 + ["bf16"] * 57,
                         "kv_dtype": None, "measured_s": [float(i + 1) for i in range(957)]})
    s = sample_rows(rows, 100, seed=3)
    counts = s.groupby(["op", "precision"]).size().to_dict()
    assert counts == {("gemm", "bf16"): 100, ("gemm", "fp8"): 100, ("attn_decode", "bf16"): 50,
                      ("all_reduce", "bf16"): 7}
    assert s.equals(sample_rows(rows, 100, seed=3)) and not s.equals(sample_rows(rows, 100, seed=4))
    assert sample_rows(rows, 0) is rows  # 0: every row


def test_staged_fit_is_the_joint_fit_when_ops_share_no_parameter(synthetic_rows, fit_truth):
    from costmodel.fit import _stages

    rows = synthetic_rows(np.random.default_rng(1))
    names = ["gemm_compute_eff", "gemm_mem_eff", "kernel_overhead_s", "attn_mem_eff", "attn_decode_cta_s"]
    stages = _stages(rows, names)
    assert sorted(sorted(p) for _, p in stages) == [["attn_decode_cta_s", "attn_mem_eff"],
                                                    ["gemm_compute_eff", "gemm_mem_eff", "kernel_overhead_s"]]
    assert sum(len(i) for i, _ in stages) == len(rows)
    joint = fit_params(rows, params=names)
    staged = fit_params(rows, params=names, staged=True)
    for name in names:
        assert getattr(staged.params, name) == pytest.approx(getattr(joint.params, name), rel=1e-3), name
        assert getattr(staged.params, name) == pytest.approx(getattr(fit_truth, name), rel=0.01), name
    assert staged.residuals["mape"] < 1e-3


def test_holdout_split_keeps_repeats_of_a_configuration_on_one_side():
    """Splitwise ran each configuration 5-6 times (repeats within ~1%): a row split scores
    near-copies of fitted rows. A configuration's rows follow its first row's draw, so rows
    without repeats split exactly as a row split with the same seed does."""
    import pandas as pd

    from costmodel.fit import holdout_split

    rng = np.random.default_rng(5)
    unique = pd.DataFrame({"source": "f.csv", "row_id": [f"r{i}" for i in range(400)],
                           "op": "gemm", "m": np.arange(400), "n": 64, "k": np.nan,
                           "measured_s": rng.random(400)})
    got = holdout_split(unique, 0.2, seed=7)
    np.testing.assert_array_equal(got, np.random.default_rng(7).random(400) < 0.2)

    # each configuration 6 times, measured slightly differently, in shuffled order
    configs = pd.DataFrame({"op": ["prefill_step", "decode_step"] * 30, "tp": np.repeat([2, 4, 8], 20),
                            "batch_size": np.tile(np.arange(20), 3), "kv_dtype": None})
    rows = configs.loc[np.tile(configs.index, 6)].sample(frac=1.0, random_state=1).reset_index(drop=True)
    rows["source"], rows["row_id"] = "perf.csv", [f"l{i}" for i in range(len(rows))]
    rows["measured_s"] = 0.1 * (1 + 0.01 * rng.standard_normal(len(rows)))
    fit = holdout_split(rows, 0.3, seed=0)
    side = pd.Series(fit).groupby([rows["op"], rows["tp"], rows["batch_size"]]).agg(["min", "max"])
    assert (side["min"] == side["max"]).all()  # every configuration wholly on one side
    assert 0.1 < fit.mean() < 0.5 and fit.any() and (~fit).any()
    assert np.array_equal(fit, holdout_split(rows, 0.3, seed=0))
    assert not np.array_equal(fit, holdout_split(rows, 0.3, seed=1))
    assert holdout_split(rows, 1.0, seed=0).all()
    # a cell no hash takes is compared as text, not a crash
    odd = pd.DataFrame({"op": "gemm", "shape": [[1, 2], [1, 2], [3, 4]], "measured_s": [1.0, 1.1, 2.0]})
    split = holdout_split(odd, 0.5, seed=3)
    assert split[0] == split[1]


def test_prepared_rows_predict_what_the_frame_predicts(shared):
    """A fit splits its rows once (`PreparedRows`) and predicts them at every step: every
    family of AIConfigurator's H100 tables (Arrow strings, MoE, MLA, collectives), two GPUs,
    rows shuffled, with and without a profile's tables: the same numbers, in the frame's order."""
    from costmodel.fit import sample_rows
    from costmodel.importers import load_measured
    from costmodel.measured import PreparedRows

    rows = sample_rows(load_measured(shared / "data/profiles/aiconfigurator/h100_sxm", "aiconfigurator"), 40, 0)
    both = pd.concat([rows, rows.assign(gpu="h200-sxm")], ignore_index=True)
    both = both.sample(frac=1.0, random_state=1).reset_index(drop=True)
    dtypes = both.dtypes.copy()
    prep = PreparedRows(both)
    kinds = {"gemm", "attn_prefill", "attn_decode", "comm", "moe", "mla_prefill", "mla_decode"}
    assert {(g, k) for g, k, _, _ in prep.parts} == {(g, k) for g in ("h100-sxm", "h200-sxm") for k in kinds}
    want = predict_rows(both)
    assert np.isfinite(want).mean() > 0.9
    np.testing.assert_array_equal(predict_rows(prep), want)
    prof = CalibrationProfile(gpus={"h100-sxm": GpuCalibration(Efficiencies(), {}, 0.1)}, source="test")
    prof.tables["h100-sxm"] = build_tables(both[both.gpu == "h100-sxm"], predict_rows(both[both.gpu == "h100-sxm"]))
    np.testing.assert_array_equal(predict_rows(prep, prof), predict_rows(both, prof))
    assert (both.dtypes == dtypes).all()  # the caller's frame keeps its columns
