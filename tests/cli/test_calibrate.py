"""`serveplan calibrate` and `serveplan cost eval`: fit on native rows and score held-out ones,
predictions written per row, batches that overflow the KV cache left unscored, bad formats named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from planner.cli import app


def test_eval_and_calibrate_cli(tmp_path, synthetic_rows):
    rows = synthetic_rows(np.random.default_rng(5), 150)
    f = tmp_path / "rows.csv"
    rows.to_csv(f, index=False)
    run = CliRunner()
    cal = tmp_path / "calib.json"
    res = run.invoke(app, ["calibrate", "--measured", str(f), "--format", "native", "--out", str(cal),
                           "--fit-fraction", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["held_out"]["mape"] < 0.01 and doc["fit_rows"] < len(rows)
    out = tmp_path / "pred.csv"
    res = run.invoke(app, ["cost", "eval", "--measured", str(f), "--format", "native",
                           "--calibration", str(cal), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["mape"] < 0.01 and set(doc["by_op"]) == {"gemm", "attn_decode"}
    pred = pd.read_csv(out)
    assert {"measured_s", "predicted_s", "rel_err"} <= set(pred.columns) and len(pred) == len(rows)
    res = run.invoke(app, ["cost", "eval", "--measured", str(f), "--format", "vidur", "--gpu", "a100",
                           "--out", str(out)])
    assert res.exit_code == 2 and "no Vidur profile files" in res.output


def test_cost_eval_reports_overflow_rows(shared, tmp_path):
    out = tmp_path / "pred.csv"
    r = subprocess.run([sys.executable, "-m", "planner.cli", "cost", "eval", "--measured",
                        str(shared / "data/profiles/splitwise/perf_model_a100.csv"),
                        "--format", "splitwise", "--model", "llama-2-70b", "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # Splitwise's TP 2 batch of 64 x (512 + 128): 5 measured lines, a prefill and a decode row each
    assert s["skipped_kv_overflow"] == 10
    df = pd.read_csv(out)
    bad = df[~df["fits_kv"]]
    assert set(zip(bad["tp"], bad["batch_size"], strict=True)) == {(2, 64)}
    assert s["n"] == len(df) - 10
