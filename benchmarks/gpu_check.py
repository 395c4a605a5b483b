"""One command on a GPU machine: is ServePlan's calibration right for the engine it plans?

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py [--budget-s 470] [--skip-tests]

Runs within ~8 minutes on one H100 or H200, with no project install (only the wheels that
shared/tools/gpu_wheels.sh provides: simpy, pulp, pydantic), and checks issue 14's "done when":
1. the Triton-vs-reference table in CUDA graphs (`validate.kernel_bench`): GEMM at M >= 1024
   (bf16, fp8) >= 0.9x cuBLAS, at M <= 64 >= 0.75x; flash prefill >= 0.9x torch SDPA; paged
   decode at batch >= 32 >= 70% of HBM bandwidth, at batch 1 x 8k <= 2x its bandwidth floor;
2. `serveplan validate` on a Llama-3.1-8B plan (1 GPU, fp8 KV, the first H200 run's workload:
   `lognormal:1155,211` at 4 req/s), then a calibration on half of its shapes (alternating within
   each kind, as benchmarks/validate_loop.py splits) and the held-out iteration error against
   the measured (engine-class, CUDA-graph) iterations, target <= 10%; and each decode iteration
   against its physical floor (weights + KV bytes over the datasheet HBM bandwidth), target
   <= 1.5x;
3. `pytest tests/validate` compiled, every test green (SERVEPLAN_AUTOTUNE=first: one config per
   kernel, so the suite compiles in minutes; correctness does not depend on the config), with
   the time left.
Without a GPU it runs the CPU parts (the capture-safety test under Triton's interpreter, and the
bound message of `serveplan calibrate` on the first H200 run's rows when ../shared is there),
says that the GPU parts were not run, and exits 0. It writes benchmarks/out/gpu_check.json (and
its files into $OUT when that is set) and prints the verdicts last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT_DIR = REPO / "benchmarks" / "out"
H200_RUN = Path("data/gpu_runs/h200_2026-12-04")
CLI = [sys.executable, "-c", "from planner.cli import main; main()"]


def _env(**extra) -> dict:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _run(cmd: list[str], timeout: float, **env) -> tuple[int, str, float]:
    """(exit code, stdout + stderr, seconds); 124 when it ran out of time."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True,
                           timeout=max(timeout, 1.0))
        return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n[stopped after {timeout:.0f} s]", time.perf_counter() - t0


def versions() -> dict:
    import torch

    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    if torch.cuda.is_available():
        v["gpu"] = torch.cuda.get_device_name(0)
        if shutil.which("nvidia-smi"):
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
            v["driver"] = q.stdout.strip()
    return v


def shared_dir() -> Path:
    return Path(os.environ.get("SERVEPLAN_SHARED", REPO.parent / "shared"))


# --- the CPU parts ----------------------------------------------------------------------------
def capture_test(timeout: float) -> dict:
    rc, out, s = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "tests/validate/test_capture.py"], timeout, TRITON_INTERPRET="1",
                      CUDA_VISIBLE_DEVICES="")
    return {"passed": rc == 0, "seconds": s, "tail": out.strip().splitlines()[-1:] if out else []}


def bound_message(timeout: float) -> dict:
    csv = shared_dir() / H200_RUN / "measurements.csv"
    if not csv.is_file():
        return {"run": False, "why": f"{csv} not found (SERVEPLAN_SHARED or ../shared)"}
    tmp = OUT_DIR / "gpu_check_h200_refit.json"
    rc, out, s = _run(CLI + ["calibrate", "--format", "native", "--measured", str(csv), "--gpu", "h200",
                             "--out", str(tmp)], timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("warning:")]
    hit = [ln for ln in lines if "kernel_overhead_s" in ln and "physical ceiling" in ln]
    return {"run": True, "exit_code": rc, "seconds": s, "messages": lines, "printed": bool(hit)}


# --- the GPU parts ----------------------------------------------------------------------------
def kernel_table(log) -> dict:
    import torch

    from validate import kernel_bench
    from validate.devices import device_spec, measure_peaks
    from validate.kernels._device import fp8_supported
    from validate.timing import Timer

    hw, how = device_spec("cuda")
    flops, copy_bw = measure_peaks("cuda", reps=3)
    log(f"device: {how}; measured bf16 matmul {flops / 1e12:.0f} TFLOP/s, copy {copy_bw / 1e12:.2f} TB/s "
        f"(datasheet {hw.hbm_bw_bytes_s / 1e12:.2f} TB/s)")
    cs = kernel_bench.cases("cuda", fp8=fp8_supported(torch.device("cuda")))
    rows = kernel_bench.run(cs, Timer("cuda", graph_rep_ms=40.0), hw.hbm_bw_bytes_s, log=log)
    del cs
    torch.cuda.empty_cache()
    return {"preset": hw.name, "hbm_bw_datasheet": hw.hbm_bw_bytes_s, "copy_bw_measured": copy_bw,
            "bf16_matmul_measured": flops, "rows": rows, "summary": kernel_bench.summarise(rows)}


def validate_8b(gpu_preset: str, timeout: float, log) -> dict:
    from sim.deployment import Deployment, PoolConfig

    out = OUT_DIR / "gpu_check_validate"
    out.mkdir(parents=True, exist_ok=True)
    plan = {"deployment": Deployment("llama-3.1-8b", (PoolConfig("colocated", gpu_preset, kv_dtype="fp8"),)).to_dict()}
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    cmd = CLI + ["validate", "--plan", str(out / "plan.json"), "--device", "cuda", "--out", str(out),
                 "--workload", "lognormal:1155,211", "--rate", "4", "--max-shapes", "12", "--json"]
    log("$ serveplan " + " ".join(cmd[3:]))
    rc, text, s = _run(cmd, timeout)
    res = {"exit_code": rc, "seconds": s, "out": str(out)}
    if rc != 0:
        res["tail"] = text.strip().splitlines()[-15:]
        return res
    for ln in text.splitlines():
        if ln.startswith("  pass") or ln.startswith("kernel check") or ln.startswith("device"):
            log(ln)
    report = json.loads(text[text.index("{"):])
    res.update({"iteration_mape_in_sample": report["iteration_mape"], "kernels": report["kernels"],
                "messages": report["messages"], "kernel_check_ok": (report["kernel_check"] or {}).get("ok")})
    res.update(held_out_and_floor(out, report["calibration_key"]))
    return res


def held_out_and_floor(out: Path, key: str) -> dict:
    """Calibrate on half the shapes, predict the other half; decode iterations vs their floor."""
    import pandas as pd

    from benchmarks.validate_loop import halves
    from costmodel.hardware import load_gpu
    from costmodel.importers import load_measured
    from costmodel.memory import weights_bytes_per_gpu
    from costmodel.model import CostModel
    from validate.runner import calibrate_rows, load_shapes, predicted_compute_s

    rows = load_measured(out / "measurements.csv", "native")
    it = pd.read_csv(out / "iterations.csv")
    shapes = load_shapes(out / "shapes.json")
    hw = load_gpu(key)
    fit = halves(shapes)
    shape_of = rows["row_id"].str.rsplit(":", n=1).str[0]
    fit_names = {s.name for s, f in zip(shapes, fit, strict=True) if f}
    prof = calibrate_rows(rows[shape_of.isin(fit_names)].reset_index(drop=True))
    held, floors = [], []
    for s, f, (_, r) in zip(shapes, fit, it.iterrows(), strict=True):
        sub = rows[shape_of == s.name]
        prec = str(sub[sub["op"] == "qkv_proj"]["precision"].iat[0])
        attn = sub[sub["op"].str.startswith("attn_")]
        kv = str(attn["kv_dtype"].iat[0]) if len(attn) else "bf16"
        if not f:
            pred = predicted_compute_s(s, hw, prof, prec, kv)
            held.append({"shape": s.name, "measured_s": float(r["measured_s"]), "predicted_s": pred,
                         "rel_err": pred / float(r["measured_s"]) - 1})
        if s.kind == "decode":
            cm = CostModel(s.model, hw, tp=s.tp, precision=prec, kv_dtype=kv)
            m = cm.model
            emb = m.vocab_size * m.hidden_size * 2 / s.tp  # the embedding table: a few rows read
            kv_tok = 2 * cm.kv_heads * m.head_dim * m.num_layers * cm.kv_elem_bytes
            nbytes = weights_bytes_per_gpu(cm) - emb + s.decode_batch * s.attended_context * kv_tok
            floor = nbytes / hw.hbm_bw_bytes_s
            floors.append({"shape": s.name, "measured_s": float(r["measured_s"]), "floor_s": floor,
                           "ratio": float(r["measured_s"]) / floor, "host_s": float(r.get("host_s", float("nan")))})
    errs = [abs(h["rel_err"]) for h in held]
    return {"held_out": held, "held_out_mape": sum(errs) / len(errs) if errs else None,
            "held_out_max": max(errs) if errs else None,
            "fit_shapes": sorted(fit_names), "decode_vs_floor": floors,
            "bound_messages": list(prof.messages)}


def compiled_tests(timeout: float) -> dict:
    rc, out, s = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/validate",
                       "-o", "addopts=", "--durations=5"], timeout, SERVEPLAN_AUTOTUNE="first")
    (OUT_DIR / "gpu_check_pytest.txt").write_text(out)
    summary = [ln for ln in out.splitlines() if " passed" in ln or " failed" in ln or "error" in ln.lower()][-3:]
    return {"exit_code": rc, "seconds": s, "all_green": rc == 0, "summary": summary,
            "failed": [ln for ln in out.splitlines() if ln.startswith("FAILED") or ln.startswith("ERROR")]}


# --- verdicts ---------------------------------------------------------------------------------
def verdicts(rep: dict) -> list[dict]:
    """Issue 14's "done when" items, each measured here or not (and why)."""
    out = []

    def add(item, measured, value, target, met):
        out.append({"item": item, "measured": measured, "value": value, "target": target, "met": met})

    cpu = rep["cpu"]
    add("capture-safety test (CPU, interpreter)", "capture" in cpu,
        cpu.get("capture", {}).get("passed"), "passes", cpu.get("capture", {}).get("passed"))
    b = cpu.get("bound_message", {})
    add("bound message on the H200 run's rows", b.get("run", False), b.get("printed"), "printed",
        b.get("printed"))
    gpu = rep.get("gpu")
    if not gpu:
        for item in ("kernel ratios", "8B decode iteration vs physical floor",
                     "held-out iteration error vs the reference iterations", "compiled tests green"):
            add(item, False, None, "", None)
        return out
    for fam, s in gpu.get("kernels", {}).get("summary", {}).items():
        add(f"kernels: {fam}", s.get("cases", 0) > 0, s.get("worst"), s["target"], s.get("met"))
    v = gpu.get("validate", {})
    floors = v.get("decode_vs_floor") or []
    worst = max((f["ratio"] for f in floors), default=None)
    add("8B decode iteration vs physical floor (worst decode shape)", worst is not None, worst, "<= 1.5",
        None if worst is None else worst <= 1.5)
    m = v.get("held_out_mape")
    add("held-out iteration MAPE vs the reference iterations", m is not None, m, "<= 0.10",
        None if m is None else m <= 0.10)
    t = gpu.get("tests", {})
    add("compiled tests green", "exit_code" in t, t.get("summary"), "all pass", t.get("all_green"))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=470.0, help="stop starting new parts after this")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-validate", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t0)

    def log(msg: str) -> None:
        print(msg, flush=True)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = torch.cuda.is_available()
    rep = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": versions(), "cpu": {}, "gpu": None}
    log(f"gpu_check: {rep['versions']}")
    if not gpu:
        log("no CUDA GPU here: the CPU parts only")
        rep["cpu"]["capture"] = capture_test(min(180.0, left()))
        log(f"capture-safety test (interpreter): {'passed' if rep['cpu']['capture']['passed'] else 'FAILED'}")
    rep["cpu"]["bound_message"] = bound_message(min(120.0, left()))
    for ln in rep["cpu"]["bound_message"].get("messages", []):
        log(ln)
    if gpu:
        rep["gpu"] = {}
        log("--- Triton vs the engine's operators, CUDA graphs ---")
        rep["gpu"]["kernels"] = kernel_table(log)
        if not args.skip_validate and left() > 120:
            log("--- serveplan validate, Llama-3.1-8B ---")
            reserve = 0.0 if args.skip_tests else min(150.0, 0.4 * left())
            rep["gpu"]["validate"] = validate_8b(rep["gpu"]["kernels"]["preset"], left() - reserve, log)
        if not args.skip_tests and left() > 30:
            log("--- pytest tests/validate, compiled ---")
            rep["gpu"]["tests"] = compiled_tests(left() - 5)
            for ln in rep["gpu"]["tests"]["failed"] + rep["gpu"]["tests"]["summary"]:
                log(ln)
    rep["verdicts"] = verdicts(rep)
    rep["wall_s"] = time.perf_counter() - t0
    _write(rep)
    _print(rep)
    return rep


def _write(rep: dict) -> None:
    path = OUT_DIR / "gpu_check.json"
    path.write_text(json.dumps(_finite(rep), indent=2, default=str) + "\n")
    dest = os.environ.get("OUT")
    if dest:  # the device machine's result folder: flat, at most 8 files
        d = Path(dest)
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, d / "gpu_check.json")
        v = OUT_DIR / "gpu_check_validate"
        for f in ("report.json", "kernels.csv", "iterations.csv", "measurements.csv", "calibration.json"):
            if (v / f).is_file():
                shutil.copy(v / f, d / f"validate_{f}")
        if (OUT_DIR / "gpu_check_pytest.txt").is_file():
            shutil.copy(OUT_DIR / "gpu_check_pytest.txt", d / "pytest.txt")


def _finite(x):
    """NaN and infinities as null: the file stays strict JSON."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _print(rep: dict) -> None:
    print(f"\n{'done when':58} {'value':>12} {'target':>10}  verdict")
    for v in rep["verdicts"]:
        val = v["value"]
        shown = f"{val:.3g}" if isinstance(val, float) else ("-" if val is None else str(val)[:12])
        verdict = "not measured" if not v["measured"] else ("met" if v["met"] else "MISSED")
        print(f"{v['item']:58} {shown:>12} {v['target']:>10}  {verdict}")
    print(f"wall {rep['wall_s']:.0f} s; wrote {OUT_DIR / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
