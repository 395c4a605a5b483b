"""Readable views of a Plan: the summary `serveplan plan` prints, and the `--explain` tables."""

from __future__ import annotations

from planner.cli.common import ms_text
from planner.plan_types import Plan


def _pools(dep: dict) -> str:
    out = []
    for p in dep["pools"]:
        spec = p["spec"]
        s = ""
        if spec["method"] != "none" and (spec["num_speculative_tokens"] or spec["adaptive"]):
            k = "adaptive" if spec["adaptive"] or not spec["num_speculative_tokens"] else f"k={spec['num_speculative_tokens']}"
            s = f", spec {spec['method']} {k}"
        budget = f", KV budget {p['kv_budget_tokens']}" if p.get("kv_budget_tokens") else ""
        dp, ep = p.get("dp", 1), p.get("ep", 1)
        moe = f", ep={ep}, dp={dp}" if ep > 1 or dp > 1 else ""
        out.append(f"{p['replicas']} x {p['role']} on {p['tp'] * p['pp'] * dp} {p['gpu']} (tp={p['tp']}, "
                   f"pp={p['pp']}{moe}, seqs {p['max_num_seqs']}, tokens {p['max_num_batched_tokens']}, "
                   f"kv {p['kv_dtype']}, mem {p['gpu_memory_utilization']}{budget}{s})")
    return "\n".join(out)


def _lines(v) -> list[str]:
    """A plan's list of lines (a hand-edited plan may hold one string instead)."""
    return [v] if isinstance(v, str) else [str(x) for x in v or []]


def _fmt_ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def _row(name: str, dep: dict, pred: dict, why: str) -> list[str]:
    return [name, _pools(dep), f"{pred['gpus']}", f"{pred['cost_per_hour_usd']:.2f}",
            f"{_fmt_ms(pred['ttft_p90_s'])} / {_fmt_ms(pred['tpot_p90_s'])}",
            f"{pred['slo_attainment']:.3f}", f"{pred['goodput_rps']:.2f}", why]


def print_plan(plan: Plan, explain: bool = False, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    c = console or Console()
    d = plan.to_dict()
    inp, sim = d["inputs"], d["simulation"]
    load = f"{sim['concurrency']} clients" if sim["concurrency"] else f"{sim['rate_rps']:.3g} req/s"
    status = "[green]feasible[/green]" if d["feasible"] else f"[red]not feasible: {d['binding']} binds[/red]"
    fleet = ", ".join(f"{g['count']} x {g['gpu']}" for g in inp["gpus"])
    c.print(f"[bold]{inp['model']}[/bold] on {fleet} | "
            f"{inp['workload']} | SLO p{inp['slo']['percentile']:g} TTFT {inp['slo']['ttft_s']:g} s, "
            f"TPOT {inp['slo']['tpot_s']:g} s, attainment {inp['slo']['attainment']:g} | {status}")
    c.print(f"objective: {d['why']['objective']}")
    t = Table(title=f"plan and runners-up, simulated at {load} ({sim['num_requests']} requests, seed {sim['seed']})")
    for col in ("", "deployment", "GPUs", "$/h", "p90 TTFT / TPOT ms", "attain.", "goodput rps", "why"):
        t.add_column(col, overflow="fold")
    t.add_row(*_row("plan", d["deployment"], d["predicted"], d["why"]["winner"]["summary"]), style="bold")
    for a in d["alternatives"]:
        t.add_row(*_row(a["mode"], a["deployment"], a["predicted"], a["why"]))
    c.print(t)
    for a in d["why"].get("not_refined") or []:
        c.print(f"{a['mode']}: {a['unit']}: {a['why']}", markup=False)
    cap = d["capacity"]
    c.print(f"sized from a verified unit of {cap['unit_gpus']} GPU(s) ({cap['unit']}): "
            f"{cap['unit_goodput']:.3g} {cap['load_unit']} ({cap['goodput_per_gpu']:.3g} per GPU); "
            f"screen estimate "
            f"{cap['screen_estimate'] if cap['screen_estimate'] is None else format(cap['screen_estimate'], '.3g')}")
    li = (d.get("uncertainty") or {}).get("latency_interval_80")
    if li:
        parts = [f"{m.upper()} {ms_text(lo)}-{ms_text(hi)} ms"
                 + ("" if "p90" in (li.get(f"{m}_measured_stats") or []) else " (the means' ratio)")
                 for m in ("ttft", "tpot") if (iv := li.get(f"{m}_s", {}).get("p90")) for lo, hi in [iv]]
        if parts:
            c.print(f"80% interval of the predicted p90 (from held-out calibration runs): {', '.join(parts)}")
        for line in _lines(li.get("missing")):
            c.print(line, markup=False)
        for line in _lines(li.get("unlike_runs")):  # the interval was never tested on such plans
            c.print(f"unlike the runs behind that interval: {line}", markup=False)
    if explain:
        r = Table(title="verified options, best first")
        for col in ("mode", "unit", "goodput", "per GPU"):
            r.add_column(col, overflow="fold")
        for o in d["search"]["ranking"]:
            r.add_row(o["mode"], o["unit"], f"{o['goodput']:.3g}", f"{o['goodput_per_gpu']:.3g}")
        c.print(r)
        pr = d["why"]["pruned"]
        if pr:
            c.print("pruned before screening: " + ", ".join(f"{k} {v}" for k, v in pr.items()))
        s = d["search"]
        c.print(f"search: {s['candidates']} configurations, {s['screened']} screened, "
                f"{s['verified']} verified with {s['simulated']} simulations, {s['wall_s']:.1f} s")
        for line in (d["why"].get("moe") or {}).get("summary", []):
            c.print(f"expert / data parallelism, {line}", markup=False)
        ex = d["why"].get("pruned_examples") or []
        for e in ex:
            c.print(f"  pruned for memory, e.g. {e}", markup=False)
    if d["search"].get("stopped_early"):
        c.print(f"[yellow]stopped early: {d['search']['stopped_early']}[/yellow]")
    c.print("\n[bold]vLLM[/bold]")
    for line in d["launch"]["vllm"]:
        c.print(line, soft_wrap=True, markup=False, highlight=False)
    c.print("\n[bold]SGLang[/bold]")
    for line in d["launch"]["sglang"]:
        c.print(line, soft_wrap=True, markup=False, highlight=False)
    for n in d["notes"]:
        c.print(f"note: {n}", markup=False)
    c.print(f"\nreproduce: {sim['command']}", markup=False, highlight=False, soft_wrap=True)
