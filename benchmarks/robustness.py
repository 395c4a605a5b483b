"""Robustness counts: bad inputs refused cleanly, random scenarios checked, the service under load.

    .venv/bin/python benchmarks/robustness.py [--quick] [--rounds 3] [--concurrent 200]

1. every bad-input table of tests/robustness/test_bad_inputs.py (CLI in-process, plan(), HTTP):
   a case is an *error* when it is refused the wrong way (not exit 2 + one `error:` line, not a
   ServePlanError, not a 422) and a *crash* when a traceback or a 5xx escapes;
2. hypothesis over random models, deployments and workloads (the property tests' strategies),
   with many more examples than CI runs;
3. `serveplan serve` on a loopback port: rounds of `--concurrent` plan requests at once (a mix
   of a few distinct requests, so most are cache hits or joins and a few run), then the same
   requests one by one; every response must be 200 and identical to the sequential one, and the
   server's RSS is read after each round.

Prints a table and writes benchmarks/out/robustness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "serveplan"

# a few distinct small plans: 200 concurrent requests cycle through them (cached / joined)
LOAD_PLANS = [
    {"model": "llama-3.2-1b", "gpus": "l40s:1", "workload": "fixed:256,64", "rate": r,
     "ttft_slo_s": 1.0, "tpot_slo_s": 0.05, "num_requests": 100}
    for r in (1.0, 2.0, 4.0, 8.0)
]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`serveplan serve` in a subprocess on a loopback port (stopped with SIGINT on exit)."""

    def __init__(self, data_dir: Path, *, workers: int = 2, timeout_s: float = 120,
                 queue: int = 400, cache: int = 64, log: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args = [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                     "--workers", str(workers), "--timeout-s", str(timeout_s), "--queue", str(queue),
                     "--cache-size", str(cache), "--data-dir", str(data_dir), "--log-level", "warning"]
        self.log = log or Path(os.devnull)

    def __enter__(self) -> LiveServer:
        import httpx

        self._out = open(self.log, "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(self.args, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"serveplan serve did not come up (log: {self.log})")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def rss_bytes(self) -> int:
        """Resident memory of the server process and its worker processes (bytes)."""
        pids = [self.proc.pid]
        try:
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
            pids += [int(p) for p in kids.stdout.split()]
        except FileNotFoundError:
            pass
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total


def load_round(base: str, bodies: list[dict], timeout_s: float = 300) -> tuple[list, float]:
    """POST every body to /v1/plan at once; (status, json) per body in order, and wall seconds."""
    import httpx

    async def go():
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
        async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as c:
            rs = await asyncio.gather(*(c.post("/v1/plan", json=b) for b in bodies))
        return [(r.status_code, r.json() if r.status_code == 200 else r.text) for r in rs]

    t0 = time.perf_counter()
    out = asyncio.run(go())
    return out, time.perf_counter() - t0


def comparable(plan: dict) -> dict:
    """A Plan JSON without the fields that measure the run (wall clock), for identity checks."""
    p = json.loads(json.dumps(plan))
    for k in ("wall_s", "sim_wall_s"):
        p.get("search", {}).pop(k, None)
    return p


def run_load(data_dir: Path, rounds: int, concurrent: int, fresh: bool) -> dict:
    """Rounds of `concurrent` plan requests; `fresh` gives each round new seeds (uncached)."""
    import httpx

    out = {"rounds": [], "errors": 0, "mismatches": 0, "requests": 0}
    with LiveServer(data_dir, workers=2, queue=concurrent + 8) as srv:
        seq = {}
        for r in range(rounds):
            seed = r if fresh else 0
            bodies = [dict(LOAD_PLANS[i % len(LOAD_PLANS)], seed=seed) for i in range(concurrent)]
            results, wall = load_round(srv.base, bodies)
            with httpx.Client(base_url=srv.base, timeout=300) as c:
                for b in bodies[:len(LOAD_PLANS)]:
                    key = json.dumps(b, sort_keys=True)
                    if key not in seq:
                        rr = c.post("/v1/plan", json=b)
                        seq[key] = comparable(rr.json()) if rr.status_code == 200 else None
            errors = sum(1 for s, _ in results if s != 200)
            mism = sum(1 for b, (s, j) in zip(bodies, results, strict=True)
                       if s == 200 and comparable(j) != seq[json.dumps(b, sort_keys=True)])
            out["rounds"].append({"round": r, "requests": concurrent, "wall_s": round(wall, 2),
                                  "errors": errors, "mismatches": mism,
                                  "statuses": sorted({s for s, _ in results}),
                                  "rss_mb": round(srv.rss_bytes() / 2**20, 1)})
            out["errors"] += errors
            out["mismatches"] += mism
            out["requests"] += concurrent
    return out


def run_bad_inputs() -> dict:
    """Every bad-input table, counted: tried, refused cleanly, errors (wrong refusal), crashes."""
    import httpx
    from anyio.from_thread import start_blocking_portal

    from costmodel.errors import ServePlanError
    from planner import plan
    from planner.service import create_app

    tb = _load(REPO / "tests" / "robustness" / "test_bad_inputs.py", "_bad_inputs")
    cf = _load(REPO / "tests" / "service" / "conftest.py", "_svc_conftest")
    import tempfile

    counts = {"tried": 0, "errors": 0, "crashes": 0, "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad"
        bad.mkdir()
        rb = _load(REPO / "tests" / "robustness" / "conftest.py", "_rb_conftest")
        for name, text in rb.BAD_FILES.items():
            (bad / name).write_text(text)
        for case, argv, frag in tb.CLI_CASES:
            counts["tried"] += 1
            code, err, exc, _ = tb.run_cli([a.replace("{bad}", str(bad)) for a in argv])
            lines = err.strip().splitlines()
            if exc is not None or "Traceback" in err:
                counts["crashes"] += 1
                counts["failures"].append(f"cli {case}: {exc!r}")
            elif not (code == 2 and len(lines) == 1 and lines[0].startswith("error:") and frag in lines[0]):
                counts["errors"] += 1
                counts["failures"].append(f"cli {case}: exit {code} {err[:120]!r}")
        for case, over, frag in tb.PLAN_CASES:
            counts["tried"] += 1
            try:
                plan(**{**tb.SMALL, **over})
                counts["errors"] += 1
                counts["failures"].append(f"plan() {case}: accepted")
            except ServePlanError as e:
                if frag not in str(e):
                    counts["errors"] += 1
                    counts["failures"].append(f"plan() {case}: {e}")
            except Exception as e:  # noqa: BLE001 - counted, that is the point
                counts["crashes"] += 1
                counts["failures"].append(f"plan() {case}: {e!r}")
        data = cf.write_data_dir(Path(tmp) / "svc" / "data")
        app = create_app(workers=1, timeout_s=30, data_dir=data, cache_size=4)
        with start_blocking_portal() as portal:
            life = portal.wrap_async_context_manager(app.router.lifespan_context(app))
            with life:
                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                           timeout=60)
                for case, url, body in tb.HTTP_CASES:
                    counts["tried"] += 1
                    try:
                        r = portal.call(lambda u=url, b=body: client.post(
                            u, content=tb._dumps(b), headers={"content-type": "application/json"}))
                        status = r.status_code
                    except Exception as e:  # noqa: BLE001
                        status, r = 500, e
                    if status >= 500:
                        counts["crashes"] += 1
                        counts["failures"].append(f"http {case}: {status}")
                    elif status != 422:
                        counts["errors"] += 1
                        counts["failures"].append(f"http {case}: {status}")
                portal.call(client.aclose)
    return counts


def run_properties(sim_examples: int, spec_examples: int, plan_examples: int) -> dict:
    """The property tests' strategies with more examples; counts cases run, refused, failed."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from costmodel.errors import ServePlanError
    from costmodel.specs import ModelSpec

    tp = _load(REPO / "tests" / "robustness" / "test_properties.py", "_props")
    c = {"sim_cases": 0, "sim_ran": 0, "spec_cases": 0, "plan_cases": 0, "plan_refused": 0,
         "plans_feasible": 0, "failures": []}

    @settings(tp.CI, max_examples=sim_examples, derandomize=False)
    @given(st.data())
    def sims(data):
        c["sim_cases"] += 1
        c["sim_ran"] += tp._simulate_case(data, data.draw(tp.model_specs()), data.draw(st.booleans()))

    @settings(tp.CI, max_examples=spec_examples, derandomize=False)
    @given(tp.model_fields(valid=False))
    def specs(fields):
        c["spec_cases"] += 1
        try:
            ModelSpec(**fields)
        except ServePlanError:
            pass

    @settings(tp.CI, max_examples=plan_examples, derandomize=False)
    @given(tp.plan_inputs())
    def plans(kw):
        from planner import plan

        c["plan_cases"] += 1
        try:
            p = plan(**kw)
        except ServePlanError:
            c["plan_refused"] += 1
            return
        c["plans_feasible"] += int(p.feasible)
        tp.check_plan(p)

    for name, fn in (("simulator", sims), ("model specs", specs), ("planner", plans)):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a falsified property is what we count
            c["failures"].append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer examples and one load round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=200)
    args = ap.parse_args()
    t0 = time.perf_counter()
    bad = run_bad_inputs()
    n = (300, 300, 5) if args.quick else (5000, 5000, 40)
    props = run_properties(*n)
    cf = _load(REPO / "tests" / "service" / "conftest.py", "_svc_conftest2")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = cf.write_data_dir(Path(tmp) / "data")
        rounds = 1 if args.quick else args.rounds
        cached = run_load(data, rounds, args.concurrent, fresh=False)
        uncached = run_load(data, rounds, args.concurrent, fresh=True)
    cases = bad["tried"] + props["sim_cases"] + props["spec_cases"] + props["plan_cases"] \
        + cached["requests"] + uncached["requests"]
    errors = bad["errors"] + cached["errors"] + uncached["errors"] + cached["mismatches"] \
        + uncached["mismatches"] + len(props["failures"])
    summary = {"cases_tried": cases, "bad_inputs_tried": bad["tried"], "errors": errors,
               "crashes": bad["crashes"], "wall_s": round(time.perf_counter() - t0, 1)}
    out = {"summary": summary, "bad_inputs": bad, "properties": props,
           "load_cached": cached, "load_uncached": uncached}
    print(f"{'what':<44}{'count':>10}")
    rows = [("bad inputs tried (CLI, plan(), HTTP)", bad["tried"]),
            ("  refused the wrong way (errors)", bad["errors"]),
            ("  tracebacks / 5xx (crashes)", bad["crashes"]),
            ("random simulations (ran / refused)", f"{props['sim_ran']}/{props['sim_cases'] - props['sim_ran']}"),
            ("random model specs", props["spec_cases"]),
            ("random plans (feasible / refused)", f"{props['plan_cases']} ({props['plans_feasible']}/{props['plan_refused']})"),
            ("property failures", len(props["failures"])),
            ("load: cached-mix requests / errors / mismatches", f"{cached['requests']}/{cached['errors']}/{cached['mismatches']}"),
            ("load: uncached requests / errors / mismatches", f"{uncached['requests']}/{uncached['errors']}/{uncached['mismatches']}"),
            ("cases tried", cases), ("errors", errors), ("crashes", bad["crashes"])]
    for k, v in rows:
        print(f"{k:<44}{v!s:>10}")
    for name, res in (("cached", cached), ("uncached", uncached)):
        for r in res["rounds"]:
            print(f"  {name} round {r['round']}: {r['requests']} requests in {r['wall_s']} s, "
                  f"statuses {r['statuses']}, server RSS {r['rss_mb']} MB")
    for f in bad["failures"] + props["failures"]:
        print("  !", f)
    print(f"wall {summary['wall_s']} s")
    dest = REPO / "benchmarks" / "out" / "robustness.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
