"""`serveplan cost step`: step time of one batch with a per-operator breakdown and memory plan."""

from __future__ import annotations

from pathlib import Path

import typer

from planner.cli.common import emit_json, load_calibration_opt, user_errors

cost_app = typer.Typer(help="Cost model: step time of a batch, accuracy against measurements.",
                       no_args_is_help=True)


@cost_app.command("step")
@user_errors
def step(
    model: str = typer.Option(..., "--model", help="preset (llama-3.1-70b, ...) or config.json path"),
    gpu: str = typer.Option(..., "--gpu", help="GPU preset (h100, a100-80g, ...)"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel degree"),
    pp: int = typer.Option(1, "--pp", help="pipeline-parallel degree"),
    ep: int = typer.Option(1, "--ep", help="MoE: expert-parallel size (1 = none)"),
    dp: int = typer.Option(1, "--dp", help="MoE: attention data-parallel ranks, each running the batch (1 = none)"),
    precision: str = typer.Option("bf16", "--precision",
                                  help="weights: bf16 | fp8 | int4 | fp8_block | auto (the checkpoint's own)"),
    kv_dtype: str = typer.Option("auto", "--kv-dtype", help="auto | bf16 | fp8 | int4"),
    prefill: list[str] = typer.Option(None, "--prefill", help="LEN[xN][+CACHED_PREFIX], repeatable"),
    decode: list[str] = typer.Option(None, "--decode", help="BATCHxCONTEXT, repeatable"),
    spec_tokens: int = typer.Option(0, "--spec-k", help="verify step: k draft tokens per decode"),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization"),
    calibration: Path = typer.Option(None, "--calibration", help="calibration profile JSON"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
):
    """Time one engine iteration of a batch, per operator, and the memory plan of one GPU."""
    from costmodel.step import cost_step

    out = cost_step(model, gpu, tp=tp, pp=pp, ep=ep, dp=dp, precision=precision, kv_dtype=kv_dtype,
                    prefill=prefill, decode=decode, spec_k=spec_tokens,
                    gpu_memory_utilization=gpu_memory_utilization,
                    calibration=load_calibration_opt(calibration))
    if as_json:
        emit_json(out)
        return
    _print_step(out)


def _print_step(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    moe = f", ep={out['ep']}, dp={out['dp']}" if out["ep"] > 1 or out["dp"] > 1 else ""
    t = Table(title=f"{out['model']} on {out['tp'] * out['pp'] * out['dp']} x {out['gpu']} "
                    f"(tp={out['tp']}, pp={out['pp']}{moe}, {out['precision']}): "
                    f"{out['num_tokens']} tokens, {out['num_seqs']} sequences")
    for col in ("operator", "time (ms)", "share", "GFLOP", "GB moved", "comm MB"):
        t.add_column(col, justify="right" if col != "operator" else "left")
    total = out["step_time_s"]
    for op in sorted(out["ops"], key=lambda o: -o["time_s"]):
        t.add_row(op["name"], f"{op['time_s'] * 1e3:.3f}", f"{op['time_s'] / total:.1%}",
                  f"{op['flops'] / 1e9:.1f}", f"{op['bytes'] / 1e9:.2f}", f"{op['comm_bytes'] / 1e6:.1f}")
    t.add_row("total", f"{total * 1e3:.3f}", "100%", "", "", "", style="bold")
    c.print(t)
    m = out["memory"]
    gib = 1024**3
    c.print(f"stage time {out['stage_time_s'] * 1e3:.3f} ms;  per GPU: weights {m['weights_bytes'] / gib:.1f} GiB, "
            f"activations {m['activation_bytes'] / gib:.1f} GiB, KV {m['kv_bytes'] / gib:.1f} GiB "
            f"= {m['kv_capacity_tokens']:,} tokens ({m['kv_blocks']:,} blocks of {m['block_size']})")


def register(app: typer.Typer) -> None:
    app.add_typer(cost_app, name="cost")
