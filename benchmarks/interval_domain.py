"""Does a run calibration's 80% interval hold for deployments unlike its runs?

The interval comes from runs the fit left out, so it measures how well the fit predicts runs
like those (`costmodel.run_domain`). Here the fit sees one part of a sweep and predicts another
that differs in one way. Data: AIConfigurator's silicon runs of SGLang 0.5.1.post1 serving
Qwen3-32B (bf16, colocated) on H100 (`../shared/data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv`,
Apache-2.0). Experiments (fitted -> predicted; no predicted run is fitted):
- `tp`: TP 2 and 4 at 256 output tokens -> TP 8 at 256 output tokens;
- `output`: TP 2 and 4 at 256 output tokens -> TP 2 and 4 at 128 and 512;
- `concurrency`: TP 4 at 16 and 64 clients -> TP 4 at 128 clients;
- `prompt`: TP 4 with 1024-2048 prompt tokens -> TP 4 with 4096;
- `one_tp`: TP 2 with 1024-2048 prompt tokens -> TP 4 and 8 with those prompts (runs at one TP
  size cannot tell the collectives from the prefill scale: `sim.runs.identify`).

Per experiment and metric (mean TTFT, mean TPOT): MAPE before (defaults) and after (the fitted
profile), and the share of predicted runs whose measured value falls inside the fit's 80%
interval. Writes benchmarks/out/interval_domain.json. Run:
`.venv/bin/python benchmarks/interval_domain.py [--only tp,output,...]` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from costmodel.paths import shared_dir  # noqa: E402
from sim.runs import load_runs  # noqa: E402
from sim.runs.fit import fit_runs  # noqa: E402
from sim.runs.profile import profile_of  # noqa: E402
from sim.runs.replay import replay  # noqa: E402


def _tp(r):
    return r.deployment.pools[0].tp


def _osl(r):
    return r.lengths[1]


def _isl(r):
    return r.lengths[0]


EXPERIMENTS = {
    "tp": ("TP 2, 4 -> TP 8 (256 output tokens)",
           lambda r: _tp(r) in (2, 4) and _osl(r) == 256, lambda r: _tp(r) == 8 and _osl(r) == 256),
    "output": ("256 -> 128 and 512 output tokens (TP 2, 4)",
               lambda r: _tp(r) in (2, 4) and _osl(r) == 256, lambda r: _tp(r) in (2, 4) and _osl(r) != 256),
    "concurrency": ("16, 64 -> 128 clients (TP 4)",
                    lambda r: _tp(r) == 4 and r.concurrency in (16, 64),
                    lambda r: _tp(r) == 4 and r.concurrency == 128),
    "prompt": ("1024-2048 -> 4096 prompt tokens (TP 4)",
               lambda r: _tp(r) == 4 and _isl(r) <= 2048, lambda r: _tp(r) == 4 and _isl(r) == 4096),
    "one_tp": ("TP 2 only -> TP 4 and 8 (1024-2048 prompt tokens)",
               lambda r: _tp(r) == 2 and _isl(r) <= 2048, lambda r: _tp(r) in (4, 8) and _isl(r) <= 2048),
}
METRICS = ("ttft", "tpot")


def runs() -> list:
    path = shared_dir() / "data/e2e_runs/aic_silicon_sglang_dense_h1xx.csv"
    return [r for r in load_runs(path, "aic-silicon")
            if r.deployment.model == "qwen3-32b" and r.engine_version == "0.5.1.post1"
            and r.deployment.mode == "colocated" and r.deployment.pools[0].precision == "bf16"]


def experiment(all_runs: list, fit_sel, test_sel) -> dict:
    t0 = time.perf_counter()
    fit = [r for r in all_runs if fit_sel(r)]
    test = [r for r in all_runs if test_sel(r) and not fit_sel(r)]
    fits = fit_runs(fit)
    prof = profile_of(fits, source="benchmarks/interval_domain.py")
    (cal,) = prof.gpus.values()
    out = {"fitted_runs": len(fit), "predicted_runs": len(test), "domain": cal.latency_domain,
           "fitted": {k: getattr(cal.params, k) for k in fits[0].fitted}}
    rows = []
    for r in test:
        before, after = replay(r).predicted, replay(r, calibration=prof).predicted
        rows.append((r, before, after))
    for m in METRICS:
        k = f"{m}_mean_s"
        meas = np.array([r.measured[k] for r, _, _ in rows])
        b = np.array([x[k] for _, x, _ in rows])
        a = np.array([x[k] for _, _, x in rows])
        lo, hi = cal.latency_interval[m]
        err = np.log(meas / a)
        inside = (err >= lo) & (err <= hi)
        out[m] = {"mape_before": float(np.mean(np.abs(b / meas - 1))),
                  "mape_after": float(np.mean(np.abs(a / meas - 1))),
                  "interval_log": [lo, hi], "inside": int(inside.sum()), "coverage": float(inside.mean()),
                  "log_error_range": [float(err.min()), float(err.max())]}
    out["wall_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated, of " + ", ".join(EXPERIMENTS))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out")
    a = ap.parse_args()
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        ap.error(f"--only {','.join(bad)}; expected some of {', '.join(EXPERIMENTS)}")
    rs = runs()
    res = {}
    print(f"{'experiment':50s} {'fit':>4s} {'pred':>4s}  " + "  ".join(
        f"{m.upper()} before  after  inside" for m in METRICS))
    for n in names:
        label, fsel, tsel = EXPERIMENTS[n]
        e = experiment(rs, fsel, tsel)
        res[n] = {"label": label, **e}
        cells = "  ".join(f"{e[m]['mape_before']:11.1%} {e[m]['mape_after']:6.1%} {e[m]['inside']:3d}/{e['predicted_runs']:<3d}"
                          for m in METRICS)
        print(f"{label:50s} {e['fitted_runs']:4d} {e['predicted_runs']:4d}  {cells}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "interval_domain.json"
    path.write_text(json.dumps({"runs": len(rs), "experiments": res}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
