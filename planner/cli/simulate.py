"""`serveplan simulate`: run the discrete-event simulator on a deployment and a workload.

The deployment comes from `--plan FILE` (a Plan JSON's "deployment" block, or a bare
deployment object) or from flags (one colocated pool, or `--disaggregated` prefill and decode
pools). Prints RunMetrics: one JSON document with `--json`, else a table.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from costmodel.errors import ServePlanError
from planner.cli.common import emit_json, load_calibration_opt, ms_text, output_paths, user_errors
from planner.cli.sweep import progress_callback
from sim.slo import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S


@user_errors
def simulate_cmd(
    plan: Path = typer.Option(None, "--plan", help="Plan JSON (its deployment) or a deployment JSON"),
    model: str = typer.Option(None, "--model", help="preset (llama-3.1-70b, ...) or config.json path"),
    gpu: str = typer.Option(None, "--gpu", help="GPU preset (h100, a100-80g, ...)"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel degree"),
    pp: int = typer.Option(1, "--pp", help="pipeline-parallel degree"),
    ep: int = typer.Option(1, "--ep", help="MoE: expert-parallel size (1 = none)"),
    dp: int = typer.Option(1, "--dp", help="MoE: attention data-parallel ranks per replica (1 = none)"),
    replicas: int = typer.Option(1, "--replicas", help="replicas of the colocated pool"),
    precision: str = typer.Option("bf16", "--precision",
                                  help="weights: bf16 | fp8 | int4 | fp8_block | auto (the checkpoint's own)"),
    max_num_seqs: int = typer.Option(None, "--max-num-seqs", help="default: vLLM's for the GPU"),
    max_num_batched_tokens: int = typer.Option(None, "--max-num-batched-tokens"),
    chunk_size: int = typer.Option(None, "--chunk-size", help="most prompt tokens per request per step"),
    kv_dtype: str = typer.Option("auto", "--kv-dtype", help="auto | bf16 | fp8 | int4"),
    kv_budget: int = typer.Option(None, "--kv-budget", help="per-request KV token budget"),
    gpu_memory_utilization: float = typer.Option(None, "--gpu-memory-utilization"),
    router: str = typer.Option("least_tokens", "--router", help="round_robin | least_tokens | prefix_affinity"),
    engine: str = typer.Option("vllm", "--engine", help="vllm | sglang: its scheduler and defaults"),
    policy: str = typer.Option(None, "--policy", help="decode_first (vLLM V1) | prefill_first | "
                               "prefill_only (SGLang); default: the engine's"),
    spec_method: str = typer.Option("none", "--spec-method", help="none | draft | self | ngram"),
    spec_k: int = typer.Option(0, "--spec-k", help="draft tokens per step; 0 with a method: adaptive, "
                               "k chosen per step up to 8"),
    spec_acceptance: float = typer.Option(None, "--spec-acceptance", help="per-token acceptance a"),
    spec_adaptive: bool = typer.Option(False, "--spec-adaptive", help="choose k per step, up to --spec-k "
                                       "(up to 8 when --spec-k is 0)"),
    draft_model: str = typer.Option(None, "--draft-model", help="draft model preset (--spec-method draft)"),
    disaggregated: bool = typer.Option(False, "--disaggregated", help="separate prefill and decode pools"),
    prefill_tp: int = typer.Option(None, "--prefill-tp"),
    prefill_pp: int = typer.Option(1, "--prefill-pp"),
    prefill_replicas: int = typer.Option(1, "--prefill-replicas"),
    decode_tp: int = typer.Option(None, "--decode-tp"),
    decode_pp: int = typer.Option(1, "--decode-pp"),
    decode_replicas: int = typer.Option(1, "--decode-replicas"),
    kv_link_gbs: float = typer.Option(None, "--kv-link-gbs", help="prefill->decode GB/s (default: NICs)"),
    workload: str = typer.Option(..., "--workload", help="fixed:ISL,OSL | trace:PATH | azure-conv | ..."),
    rate: float = typer.Option(None, "--rate", help="requests per second (open loop)"),
    concurrency: int = typer.Option(None, "--concurrency", help="clients (closed loop)"),
    burstiness: float = typer.Option(1.0, "--burstiness", help="gamma inter-arrival CV (1 = Poisson, 0 = evenly spaced)"),
    requests: int = typer.Option(1000, "--requests", help="number of requests"),
    seed: int = typer.Option(0, "--seed"),
    ttft_slo: float = typer.Option(None, "--ttft-slo", help=f"seconds (default {DEFAULT_TTFT_SLO_S:g})"),
    tpot_slo: float = typer.Option(None, "--tpot-slo", help=f"seconds (default {DEFAULT_TPOT_SLO_S:g})"),
    slo_percentile: float = typer.Option(90.0, "--slo-percentile"),
    attainment: float = typer.Option(0.9, "--attainment"),
    host_cache_gib: float = typer.Option(0.0, "--host-cache-gib", help="host prefix-cache tier per replica"),
    calibration: Path = typer.Option(None, "--calibration", help="calibration profile JSON"),
    requests_csv: Path = typer.Option(None, "--requests-csv", help="write the per-request frame"),
    plot: Path = typer.Option(None, "--plot", help="write an HTML report: latency CDFs, KV and "
                              "queue over time, utilisation"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
):
    """Simulate a deployment under a workload and print RunMetrics."""
    output_paths(requests_csv=requests_csv, plot=plot)
    from planner.uncertainty import simulated_metrics
    from sim import SLO, Deployment, SpecConfig, parse_workload, simulate
    from sim.deployment import plan_deployment
    from sim.slo import requested_slo

    # first: a profile may define a GPU that is not a preset, which the plan or --gpu names
    cal = load_calibration_opt(calibration)
    if plan is not None:
        if model is not None or gpu is not None:
            raise ServePlanError("give either --plan or --model/--gpu, not both")
        dep = plan_deployment(plan)
    else:
        if model is None or gpu is None:
            raise ServePlanError("give --plan FILE, or --model and --gpu (with --tp, --replicas, ...)")
        spec = SpecConfig.from_flags(spec_method, spec_k, spec_acceptance, draft_model=draft_model,
                                     adaptive=spec_adaptive)
        knobs = {"precision": precision, "max_num_seqs": max_num_seqs,
                 "max_num_batched_tokens": max_num_batched_tokens, "chunk_size": chunk_size,
                 "kv_dtype": kv_dtype, "kv_budget_tokens": kv_budget,
                 "gpu_memory_utilization": gpu_memory_utilization, "ep": ep, "dp": dp}
        if disaggregated:
            dep = Deployment.disaggregated(
                model, gpu, prefill=(prefill_tp or tp, prefill_pp, prefill_replicas),
                decode=(decode_tp or tp, decode_pp, decode_replicas), spec=spec, router=router,
                kv_link_bw_bytes_s=kv_link_gbs * 1e9 if kv_link_gbs else None, engine=engine,
                **knobs)
        else:
            dep = Deployment.colocated(model, gpu, tp=tp, pp=pp, replicas=replicas, spec=spec,
                                       router=router, engine=engine, **knobs)
    slo = requested_slo(ttft_slo, tpot_slo, slo_percentile, attainment)
    wl = parse_workload(workload, rate=rate, concurrency=concurrency, burstiness_cv=burstiness)
    prog, _ = progress_callback(not as_json, f"simulating {requests} requests")
    if prog:
        prog.start()
    try:
        res = simulate(dep, wl, num_requests=requests, seed=seed, calibration=cal, slo=slo,
                       keep_requests=requests_csv is not None or plot is not None, policy=policy,
                       host_cache_gib=host_cache_gib)
    finally:
        if prog:
            prog.stop()
    if requests_csv is not None:
        requests_csv.parent.mkdir(parents=True, exist_ok=True)
        res.requests.to_csv(requests_csv, index_label="request")
    if plot is not None:
        from planner.cli.plots import write_simulate_report

        m = res.metrics
        write_simulate_report(res, plot, slo=SLO(m.slo_ttft_s, m.slo_tpot_s, slo_percentile, attainment),
                              title=f"{dep.model} on {dep.num_gpus} GPU(s), {wl.name}")
    # a profile fitted on engine runs carries 80% intervals of TTFT and TPOT: reported around
    # these predictions, with how this deployment and workload differ from those runs
    out, block = simulated_metrics(cal, dep, res)
    if as_json:
        emit_json(out)
        return
    _print_metrics(res.metrics, dep, wl, block)


def _print_metrics(m, dep, wl, block: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    pools = ", ".join(f"{p.role}: {p.replicas} x {p.tp * p.pp * p.dp} {p.gpu} (tp={p.tp}, pp={p.pp}"
                      + (f", ep={p.ep}, dp={p.dp}" if p.ep > 1 or p.dp > 1 else "") + ")" for p in dep.pools)
    load = f"{wl.concurrency} clients" if wl.closed_loop else (
        f"{wl.rate_rps} req/s" if wl.rate_rps else "trace rate")
    t = Table(title=f"{dep.model} | {pools} | {wl.name} at {load}")
    for col in ("metric", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name, unit, scale in (("ttft", "ms", 1e3), ("tpot", "ms", 1e3), ("e2e", "s", 1.0)):
        vals = [getattr(m, f"{name}_{s}_s") * scale for s in ("mean", "p50", "p90", "p99")]
        t.add_row(f"{name.upper()} ({unit})", *(f"{v:.3f}" if unit == "s" else f"{v:.1f}" for v in vals))
    c = Console()
    c.print(t)
    util = sum(m.utilisation) / max(len(m.utilisation), 1)
    c.print(f"throughput {m.throughput_tok_s:,.0f} tok/s | goodput {m.goodput_rps:.2f} req/s | "
            f"SLO attainment {m.slo_attainment:.1%} (TTFT {m.slo_ttft_s} s, TPOT {m.slo_tpot_s} s) | "
            f"completed {m.num_completed}/{m.num_requests}, rejected {m.num_rejected} | "
            f"preemptions {m.preemptions} | KV peak {m.kv_peak_fraction:.0%} | utilisation {util:.0%} | "
            f"prefix hits {m.prefix_cache_hit_rate:.1%} | tokens/step {m.mean_accepted_tokens_per_step:.2f}")
    c.print(f"excluded: {m.warmup_excluded}; simulated {m.sim_duration_s:,.1f} s in {m.sim_wall_s:.2f} s wall")
    for note in m.notes:
        c.print(f"note: {note}")
    for line in interval_lines(block):
        c.print(line, markup=False, soft_wrap=True)


def interval_lines(block: dict | None) -> list[str]:
    """What `simulate` prints of a `latency_interval_80` block: the interval of each mean, and
    of each percentile the runs measured, what is missing, and how the deployment differs from
    the runs."""
    if not block:
        return []
    out = []
    for m in ("ttft", "tpot"):
        ratio = block.get(f"{m}_log_ratio")
        if not ratio:
            continue
        x = f"x{math.exp(ratio[0]):.2f}-x{math.exp(ratio[1]):.2f}"
        ranges = block.get(f"{m}_s") or {}
        iv = ranges.get("mean")
        line = (f"80% interval of the mean {m.upper()} (from held-out calibration runs): "
                + (f"{ms_text(iv[0])}-{ms_text(iv[1])} ms ({x} the prediction)" if iv
                   else f"{x} the prediction, which this run has none of"))
        for st in ("p50", "p90", "p99"):  # percentiles the runs measured have intervals of their own
            if st in ranges and st in (block.get(f"{m}_measured_stats") or []):
                line += f"; of the {st}: {ms_text(ranges[st][0])}-{ms_text(ranges[st][1])} ms"
        out.append(line)
    out += [str(x) for x in block.get("missing") or []]
    out += [f"unlike the runs behind that interval: {x}" for x in block.get("unlike_runs") or []]
    return out


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
