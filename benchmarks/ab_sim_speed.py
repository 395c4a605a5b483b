"""Simulator speed of two commits, measured in the same run: A/B/A/B interleaved.

A shared 2-core machine drifts by more than the few percent a refactor may cost, so two commits
are only compared inside one run, alternating, each run in a fresh process: `sim_speed.py`'s
throughput case (Azure conversation trace, 8 x Llama-3.1-8B on H100) from each commit's own
checkout (a detached git worktree; `.` is the working tree). Each commit's wall time is the
median over its runs; the ratio is B / A (above 1: B is slower). CPU seconds of the simulating
process are compared beside wall seconds: on a machine others share, a run that waits for a
core loses wall time but not CPU time, so the CPU ratio is the steadier one. The runs must also
agree on every simulated number (iterations, TTFT, TPOT, ...): a refactor changes no result.

    .venv/bin/python benchmarks/ab_sim_speed.py main . [--pairs 4] [--requests 100000] [--rates 64,128]

Prints a table and writes benchmarks/out/ab_sim_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
CHILD = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
from sim_speed import run_speed
n, rates = int(sys.argv[1]), [float(r) for r in sys.argv[2].split(",")]
out = []
for r in rates:
    c = time.process_time()
    s = run_speed(n, r)
    s["cpu_s"] = time.process_time() - c
    out.append(s)
print(json.dumps(out))
"""
TIMING = ("wall_s", "cpu_s", "requests_per_s", "iterations_per_s", "under_30s")


def checkout(rev: str, tmp: Path) -> tuple[Path, str]:
    """A folder holding `rev`'s code, and the commit it is ("." : the working tree as it is)."""
    if rev == ".":
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        return REPO, f"{head} + working tree"
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, text=True,
                         capture_output=True, check=True).stdout.strip()
    where = tmp / sha
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(where), sha], cwd=REPO, check=True)
    return where, sha


def run_once(where: Path, n: int, rates: str, shared: Path) -> list[dict]:
    # PYTHONPATH comes before the editable install on sys.path; a worktree in a temporary
    # folder has no ../shared beside it, so the data folder is named
    env = dict(os.environ, PYTHONPATH=str(where), SERVEPLAN_SHARED=str(shared))
    r = subprocess.run([sys.executable, "-c", CHILD, str(n), rates], cwd=where, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"sim_speed failed in {where}:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="baseline commit (a git revision, or . for the working tree)")
    ap.add_argument("b", help="commit to compare with it")
    ap.add_argument("--pairs", type=int, default=4, help="A/B pairs (each runs every rate)")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rates", default="64,128")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from costmodel.paths import shared_dir

    shared = shared_dir()
    tmp = Path(tempfile.mkdtemp(prefix="ab_sim_speed_"))
    made = []
    try:
        (wa, ida), (wb, idb) = checkout(args.a, tmp), checkout(args.b, tmp)
        made = [w for w in (wa, wb) if w != REPO]
        runs: dict[str, list[list[dict]]] = {"a": [], "b": []}
        for i in range(args.pairs):
            # alternate which goes first, so neither always runs on a warmer (or busier) machine
            for key, where in ((("a", wa), ("b", wb)) if i % 2 == 0 else (("b", wb), ("a", wa))):
                runs[key].append(run_once(where, args.requests, args.rates, shared))
                print(f"pair {i + 1}/{args.pairs} {key}: "
                      + ", ".join(f"{s['wall_s']:.2f} s wall {s['cpu_s']:.2f} s cpu"
                                  for s in runs[key][-1]), file=sys.stderr)
    finally:
        for w in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(w)], cwd=REPO, check=False)
    results = {k: [{kk: v for kk, v in s.items() if kk not in TIMING} for s in runs[k][0]]
               for k in runs}
    same = all(results["a"] == [{kk: v for kk, v in s.items() if kk not in TIMING} for s in r]
               for k in runs for r in runs[k])
    rows = []
    for j, rate in enumerate(args.rates.split(",")):
        row = {"rate_rps": float(rate), "requests": args.requests}
        for what in ("wall_s", "cpu_s"):
            xa = [r[j][what] for r in runs["a"]]
            xb = [r[j][what] for r in runs["b"]]
            ma, mb = statistics.median(xa), statistics.median(xb)
            row.update({f"a_{what}": xa, f"b_{what}": xb, f"a_median_{what}": ma,
                        f"b_median_{what}": mb, f"ratio_{what}": mb / ma})
        rows.append(row)
    totals = {what: sum(r[f"b_median_{what}"] for r in rows) / sum(r[f"a_median_{what}"] for r in rows)
              for what in ("wall_s", "cpu_s")}

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"sim_speed A/B interleaved, {args.pairs} pairs: A = {ida}, B = {idb}")
    for col in ("rate req/s", "requests", "A wall s", "B wall s", "wall B / A", "A cpu s",
                "B cpu s", "cpu B / A"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(f"{r['rate_rps']:g}", f"{r['requests']:,}",
                  " ".join(f"{x:.1f}" for x in r["a_wall_s"]), " ".join(f"{x:.1f}" for x in r["b_wall_s"]),
                  f"{r['ratio_wall_s']:.3f}", " ".join(f"{x:.1f}" for x in r["a_cpu_s"]),
                  " ".join(f"{x:.1f}" for x in r["b_cpu_s"]), f"{r['ratio_cpu_s']:.3f}")
    c = Console(width=200)
    c.print(t)
    c.print(f"all rates, medians: B / A = {totals['wall_s']:.3f} wall, {totals['cpu_s']:.3f} CPU; "
            f"simulated numbers identical in every run: {same}")
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "ab_sim_speed", "date": time.strftime("%Y-%m-%d"), "a": ida, "b": idb,
           "pairs": args.pairs, "rows": rows, "ratio_b_over_a": totals, "results_identical": same,
           "results": results["a"]}
    (OUT / "ab_sim_speed.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
