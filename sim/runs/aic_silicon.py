"""AIConfigurator's silicon CSV: one end-to-end run per row (as in `../shared/data/e2e_runs`).

Columns read: `id`, `backend` (vllm | sglang), `backend_version`, `model_path` (a Hugging Face
id), `system` (`h100_sxm`, `h200_sxm`, ...), `precision` / `gemm_quant_mode` (empty = bf16;
`fp8`, `fp8_block`), `mode` (`agg` colocated, `disagg`), `isl`, `osl`, `batch_size` (the
client's concurrency of an `agg` run), `tp_size`, `pp_size`, and for `disagg` runs
`prefill_tp_size`, `prefill_num_workers`, `decode_tp_size`, `decode_num_workers`,
`decode_batch_size`; measured `silicon_ttft_ms` and `silicon_tpot_ms` (means over requests).

A disaggregated run's concurrency is its decode batch times its decode workers (every decode
slot kept full). Runs with attention data parallelism or expert parallelism are refused by
name until the simulator has them.

What a row does not say is taken from how AIConfigurator makes these runs (its public
`generator` rules and `eval` harness; the research notes are in benchmarks/RESULTS.md):
- the benchmark: aiperf at a fixed concurrency with fixed lengths (`ignore_eos`), a warm-up of
  2 x concurrency requests that drains before the measured phase, then 10 x concurrency
  requests that start as one burst and are all averaged (`num_requests`; `sim.runs.replay`
  counts every request, as the client does);
- vLLM's token budget: its aggregated rule sets `max_num_tokens` (vLLM's
  `--max-num-batched-tokens`) to the batch size + ISL + 1500, so a step prefills about one
  prompt (vLLM's own default, 8192 on an H100, is what `serveplan` assumes elsewhere);
- SGLang's prefill batches: its rule sets `--max-prefill-tokens` to ISL + 1500 (whole prompts
  while that is not used up, the chunked-prefill size capping the batch); its aggregated rule asks for
  `--enable-mixed-chunk`, which only the 0.5.6.post2 launch template prints (`cli_args.0.5.6.post2.j2`;
  the 0.5.1.post1 and generic templates test a key, `enable-mix-chunk`, the rule never sets), so
  0.5.6.post2 runs mix decodes into prefill batches (`prefill_mixed`) and the others run
  prefill batches alone (SGLang's default, `prefill_only`);
- fp8 runs: a row does not say its KV cache's dtype. SGLang and vLLM keep the model's dtype
  unless told (`--kv-cache-dtype auto`), and AIConfigurator's launch templates print the flag only
  when its config sets one. So the fp8 rows of one configuration of the harness (engine, version,
  model, GEMM quantisation) run an fp8 cache when one of them needs it: with a bf16 cache its
  decode steps would read more bytes than HBM moves in the measured TPOT (`sim.runs.physics`),
  or its request would not fit; otherwise a bf16 cache. vLLM 0.12's Qwen3-32B fp8 rows and
  SGLang 0.5.6's disaggregated Qwen3-32B rows need one; SGLang 0.5.6's Llama-3.1-8B H200 rows
  (at most 64% of HBM bandwidth with bf16) do not, and their fit agrees: with a bf16 cache the
  decode kernel scale fitted on them is 1.10 instead of 1.46 (benchmarks/RESULTS.md,
  2026-12-06 afternoon).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.specs import MODEL_PRESETS, load_model
from sim.deployment import Deployment, PoolConfig
from sim.runs.deployments import require_fits
from sim.runs.physics import work_bounds
from sim.runs.types import MAX_CONCURRENCY, MAX_TOKENS, MeasuredRun, check_context, check_measured

# the aiperf harness's measured requests per client, and vLLM's aggregated token budget slack
BENCH_REQUESTS_PER_CLIENT = 10
VLLM_AGG_BUDGET_SLACK = 1500
SGLANG_PREFILL_SLACK = 1500  # --max-prefill-tokens = ISL + this
SGLANG_MIXED_CHUNK_VERSIONS = ("0.5.6.post2",)  # launch templates that print --enable-mixed-chunk
REQUIRED = ("id", "backend", "model_path", "system", "mode", "isl", "osl", "tp_size",
            "silicon_ttft_ms", "silicon_tpot_ms")
_PRECISION = {"": "bf16", "bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "fp8_block": "fp8"}


# checkpoint-name suffixes that do not change the architecture (precision comes from its column)
_CHECKPOINT_SUFFIXES = ("-instruct", "-chat", "-hf", "-it", "-fp8", "-fp8-dynamic", "-fp8-block",
                        "-w8a8", "-awq", "-gptq", "-int4", "-base")


def model_preset(hf_id: str) -> str:
    """The preset of a Hugging Face id: its own (case-insensitive), else the preset named by the
    id's last part without its vendor prefix and checkpoint suffixes (`nvidia/Llama-3.1-8B-
    Instruct-FP8` -> llama-3.1-8b), else what load_model takes."""
    low = str(hf_id).strip().lower()
    for name, spec in MODEL_PRESETS.items():
        if spec.hf_id.lower() == low:
            return name
    base = low.split("/")[-1].removeprefix("meta-")
    while True:
        cut = next((sfx for sfx in _CHECKPOINT_SUFFIXES if base.endswith(sfx)), None)
        if cut is None:
            break
        base = base[: -len(cut)]
    if base in MODEL_PRESETS:
        return base
    return load_model(hf_id).name


def gpu_preset(system: str) -> str:
    return load_gpu(str(system).strip().lower().replace("_", "-")).name


def _num(row, col: str, where: str, default=None) -> float:
    v = row.get(col, default)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        if default is not None:
            return default
        raise ServePlanError(f"{where}: column {col!r} is empty or NaN; expected a number")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ServePlanError(f"{where}: {col}={str(v)[:40]}; expected a number") from None
    if not math.isfinite(f):
        raise ServePlanError(f"{where}: {col}={v!r}; expected a finite number")
    return f


def _whole(row, col: str, where: str, default=None, most: int = MAX_TOKENS) -> int:
    v = _num(row, col, where, default)
    if v != int(v) or not 1 <= v <= most:
        raise ServePlanError(f"{where}: {col}={v!r}; expected a whole number in [1, {most:,}]")
    return int(v)


def _text(row, col: str) -> str:
    v = row.get(col, "")
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip().lower()


def _precision(row, where: str) -> str:
    q = _text(row, "gemm_quant_mode") or _text(row, "precision")
    if not q and "fp8" in _text(row, "model_path"):  # an FP8 checkpoint, columns left empty
        q = "fp8"
    if q not in _PRECISION:
        raise ServePlanError(f"{where}: gemm_quant_mode {q!r}; expected one of "
                             f"{', '.join(k or 'empty' for k in _PRECISION)}")
    return _PRECISION[q]


def _run(row, source: str, fp8_kv: bool = True) -> MeasuredRun:
    rid = str(row["id"])
    where = f"{source} run {rid}"
    engine = _text(row, "backend")
    for col in ("attention_dp_size", "moe_ep_size", "prefill_attention_dp_size",
                "decode_attention_dp_size"):
        if _num(row, col, where, 1.0) > 1:
            raise ServePlanError(f"{where}: {col}={row[col]}; attention data parallelism and "
                                 "expert parallelism are not simulated yet")
    model = model_preset(row["model_path"])
    gpu = gpu_preset(row["system"])
    prec = _precision(row, where)
    isl, osl = _whole(row, "isl", where), _whole(row, "osl", where)
    kv = "fp8" if prec == "fp8" and fp8_kv else "auto"
    policy = None
    if engine == "sglang" and _text(row, "backend_version") in SGLANG_MIXED_CHUNK_VERSIONS:
        policy = "prefill_mixed"
    mode = _text(row, "mode")
    if mode == "agg":
        conc = _whole(row, "batch_size", where, most=MAX_CONCURRENCY)
        if engine == "vllm":
            mbt = conc + isl + VLLM_AGG_BUDGET_SLACK
        else:  # --max-prefill-tokens; the chunked-prefill size keeps SGLang's default
            mbt = isl + SGLANG_PREFILL_SLACK
        pools = (PoolConfig("colocated", gpu, tp=_whole(row, "tp_size", where),
                            pp=_whole(row, "pp_size", where, 1.0), precision=prec, kv_dtype=kv,
                            max_num_batched_tokens=mbt),)
        dep = Deployment(model, pools, engine=engine)
    elif mode == "disagg":
        pools = (PoolConfig("prefill", gpu, tp=_whole(row, "prefill_tp_size", where),
                            pp=_whole(row, "prefill_pp_size", where, 1.0),
                            replicas=_whole(row, "prefill_num_workers", where), precision=prec,
                            kv_dtype=kv),
                 PoolConfig("decode", gpu, tp=_whole(row, "decode_tp_size", where),
                            pp=_whole(row, "decode_pp_size", where, 1.0),
                            replicas=_whole(row, "decode_num_workers", where), precision=prec,
                            kv_dtype=kv))
        conc = _whole(row, "decode_batch_size", where, most=MAX_CONCURRENCY) * pools[1].replicas
        dep = Deployment(model, pools, mode="disaggregated", engine=engine)
    else:
        raise ServePlanError(f"{where}: mode {mode!r}; expected agg or disagg")
    measured = {"ttft_mean_s": _num(row, "silicon_ttft_ms", where) / 1e3,
                "tpot_mean_s": _num(row, "silicon_tpot_ms", where) / 1e3}
    check_measured(measured, where, BENCH_REQUESTS_PER_CLIENT * conc)
    check_context(model, isl + osl, where, "isl + osl =")
    require_fits(dep, isl + osl, where)
    return MeasuredRun(source=source, run_id=rid, engine=engine,
                       engine_version=_text(row, "backend_version"), deployment=dep,
                       workload=f"fixed:{isl},{osl}", concurrency=conc,
                       num_requests=BENCH_REQUESTS_PER_CLIENT * conc, measured=measured,
                       policy=policy)


def read_aic_silicon(path: Path, tpot_evidence: set[str] | None = None) -> list[MeasuredRun]:
    """Every row of the CSV at `path` as a run. `tpot_evidence`: the ids of the rows whose
    measured TPOT may decide their configuration's KV dtype (None: every row); a benchmark
    that scores held-out rows passes its fitted ones, so no scored row picks its own cache."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ServePlanError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ServePlanError(f"{path}: missing columns {missing}; an AIConfigurator silicon CSV "
                             f"has {', '.join(REQUIRED)}")
    if df.empty:
        raise ServePlanError(f"{path}: no runs")
    twice = df["id"].astype(str)[df["id"].astype(str).duplicated()]
    if len(twice):  # fitted twice, and a left-out copy would still be in the fit
        raise ServePlanError(f"{path.name}: run id {twice.iloc[0]!r} is on more than one row; "
                             "expected one row per run")
    rows = df.to_dict("records")
    fp8_kv = _fp8_kv_configs(rows, path.name, tpot_evidence)
    runs = []
    for r in rows:
        try:
            runs.append(_run(r, path.name, _config(r) in fp8_kv))
        except ServePlanError as e:  # a model or GPU lookup does not know which row it read
            msg = str(e)
            raise ServePlanError(msg if path.name in msg else f"{path.name} run {r['id']}: {msg}") from None
    return runs


def _config(row) -> tuple[str, ...]:
    """One configuration of AIConfigurator's harness: what its launch line depends on."""
    return tuple(_text(row, c) for c in ("backend", "backend_version", "model_path", "gemm_quant_mode",
                                         "precision"))


def _fp8_kv_configs(rows: list[dict], source: str, tpot_evidence: set[str] | None = None
                    ) -> set[tuple[str, ...]]:
    """The configurations whose fp8 rows need an fp8 KV cache (module doc): one of their rows
    does not fit with a bf16 cache, or (a row of `tpot_evidence`, default all) moves more bytes
    than HBM can at its measured TPOT with one."""
    need = set()
    for r in rows:
        cfg = _config(r)
        if cfg in need:
            continue
        try:
            run = _run(r, source, fp8_kv=False)
        except ServePlanError:  # reported when the row is read for good
            need.add(cfg)
            continue
        if tpot_evidence is not None and run.run_id not in tpot_evidence:
            continue
        if run.deployment.pools[0].precision == "fp8" and work_bounds(run).memory_fraction > 1.0:
            need.add(cfg)
    return need
