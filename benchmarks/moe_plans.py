"""Issue 15's target plans: DeepSeek-V3 on 16 H200, Qwen3-235B-A22B on 8 H100, gpt-oss-120b on
2 H100 (azure-conv at 4 req/s, p90 TTFT 2 s / TPOT 0.1 s), each planned by the CLI as a user
runs it, then replayed with the plan's own `serveplan simulate --plan` command.

Per plan: the command's wall time and CPU time (this process's children, so both workers
count), the layout chosen, its verified goodput per GPU against the best experts-TP layout's,
the simulations it took, whether it has launch lines, and whether the replay reproduces the
predicted p90 TTFT and TPOT digit for digit. Target: a feasible EP plan in at most 10 s.

    .venv/bin/python benchmarks/moe_plans.py [--models deepseek-v3,...] [--repeat 2]

Prints a table and writes benchmarks/out/moe_plans.json. Timings are of this shared machine at
the hour it ran; quote them with its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parents[1]
TARGETS = {"deepseek-v3": "h200:16", "qwen3-235b-a22b": "h100:8", "gpt-oss-120b": "h100:2"}
ARGS = ["--workload", "azure-conv", "--rate", "4", "--ttft-slo", "2", "--tpot-slo", "0.1"]
LIMIT_S = 10.0


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("serveplan")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from planner.cli import main; main()"]


def _timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r, wall, cpu


def run(model: str, gpus: str, repeat: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeat):
        r, wall, cpu = _timed(_cli() + ["plan", "--model", model, "--gpu", gpus, *ARGS, "--json"])
        walls.append(wall)
        cpus.append(cpu)
    plan = json.loads(r.stdout)
    pool = plan["deployment"]["pools"]
    kinds = (plan["why"].get("moe") or {}).get("kinds", {}).get("colocated", {})
    tp_only = (kinds.get("tp") or {}).get("verified_per_gpu")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "plan.json"
        path.write_text(r.stdout)
        cmd = plan["simulation"]["command"].split()
        cmd[cmd.index("PLAN.json")] = str(path)
        sim, _, _ = _timed(_cli() + cmd[1:])
    replay = json.loads(sim.stdout)
    rm = replay.get("metrics", replay)
    pred = plan["predicted"]
    return {
        "model": model, "gpus": gpus, "feasible": plan["feasible"],
        "layout": [{k: p[k] for k in ("role", "tp", "ep", "dp", "replicas", "max_num_batched_tokens",
                                      "kv_dtype")} for p in pool],
        "uses_ep": any(p.get("ep", 1) > 1 for p in pool),
        "goodput_per_gpu": plan["capacity"]["goodput_per_gpu"], "tp_only_verified_per_gpu": tp_only,
        "simulations": plan["search"]["simulated"], "wall_s": walls, "cpu_s": cpus,
        "launch_lines": bool(plan["launch"]["vllm"]) and bool(plan["launch"]["sglang"]),
        "ttft_p90_s": pred["ttft_p90_s"], "tpot_p90_s": pred["tpot_p90_s"],
        "replay_ttft_p90_s": rm.get("ttft_p90_s"), "replay_tpot_p90_s": rm.get("tpot_p90_s"),
        "reproduced": (rm.get("ttft_p90_s"), rm.get("tpot_p90_s")) == (pred["ttft_p90_s"], pred["tpot_p90_s"]),
        "within_limit": max(walls) <= LIMIT_S,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(TARGETS))
    ap.add_argument("--repeat", type=int, default=2, help="plan runs per model (walls of each reported)")
    a = ap.parse_args()
    rows = []
    for m in a.models.split(","):
        if m not in TARGETS:
            raise SystemExit(f"--models {m!r}; expected some of {', '.join(TARGETS)}")
        rows.append(run(m, TARGETS[m], a.repeat))
    print(f"{'model':17} {'GPUs':8} {'layout':34} {'per GPU (TP only)':18} {'sims':>4} "
          f"{'wall s':>12} {'CPU s':>11} {'replay':>7} {'<= 10 s':>7}")
    for r in rows:
        lay = " + ".join(f"{p['role'][:3]} tp{p['tp']} ep{p['ep']} dp{p['dp']} x{p['replicas']}" for p in r["layout"])
        tp = "-" if r["tp_only_verified_per_gpu"] is None else f"{r['tp_only_verified_per_gpu']:.2f}"
        print(f"{r['model']:17} {r['gpus']:8} {lay:34} {r['goodput_per_gpu']:6.2f} ({tp:>5})      "
              f"{r['simulations']:4d} {'/'.join(f'{w:.1f}' for w in r['wall_s']):>12} "
              f"{'/'.join(f'{c:.1f}' for c in r['cpu_s']):>11} {'same' if r['reproduced'] else 'DIFFER':>7} "
              f"{'yes' if r['within_limit'] else 'no':>7}")
    OUT.mkdir(exist_ok=True)
    doc = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average": os.getloadavg(),
           "cpus": os.cpu_count(), "limit_s": LIMIT_S, "plans": rows}
    (OUT / "moe_plans.json").write_text(json.dumps(doc, indent=1))
    print(f"load average {doc['load_average'][0]:.2f}; wrote {OUT / 'moe_plans.json'}")


if __name__ == "__main__":
    main()
