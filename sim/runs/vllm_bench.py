"""`vllm bench serve --save-result` files: one JSON object per run (`--append-result` adds one
line per run to the same file).

Fields read (vllm-project/vllm, `vllm/benchmarks/serve.py`: `main_async` writes the settings,
`benchmark` the results, `process_one_metric` the latency statistics):
- the load: `max_concurrency` (null when unset), `request_rate` (a number, or "inf"),
  `burstiness` (the gamma shape of the inter-arrival gaps: their CV is 1 / sqrt(burstiness);
  inf sends the requests evenly spaced, CV 0);
  a run with `ramp_up_strategy` changed its rate as it ran and is refused;
- the requests: `num_prompts` (sent), `completed` (succeeded), `total_input_tokens`,
  `total_output_tokens`, `request_throughput` (completed / duration, requests/s);
- latencies in ms: `mean_`, `median_` and `p<P>_` (`--metric-percentiles`, 99 by default) of
  `ttft`, `tpot`, `itl` and `e2el` (`--percentile-metrics`; ttft, tpot, itl by default; a file
  without tpot takes its mean from the mean E2E and TTFT when the outputs were all alike);
- with `--save-detailed`, per request sent: `input_lens`, `output_lens` (0 for a failed one),
  `errors` ("" for a successful one); also `ttfts` and `itls` in seconds (not read);
- `model_id` (checked against the deployment when it names a known model), `backend` (the
  engine: vllm, sglang, or an OpenAI-compatible client of either; another engine's is refused);
- `max_concurrent_requests` (the peak in flight, per second of the run): under the cap, the
  cap never bound;
- `spec_decode_acceptance_length` / `_rate` (newer versions, when the server drafted tokens):
  the deployment given must decode speculatively.

Lengths: the successful requests' own lengths with `--save-detailed` (fixed when all are the
same); otherwise fixed at the means `total_input_tokens / completed` and
`total_output_tokens / completed`: exact for vLLM's random dataset at its default range ratio
0, an approximation of any other dataset (the run's note says which).
"""

from __future__ import annotations

import math
from pathlib import Path

from costmodel.errors import ServePlanError
from sim.runs import fields
from sim.runs.fields import RunContext
from sim.runs.types import MeasuredRun

METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}
# written when the server decoded speculatively (its /metrics counted drafts)
SPEC_FIELDS = ("spec_decode_acceptance_length", "spec_decode_acceptance_rate")


def _run(d: dict, path: Path, run_id: str, ctx: RunContext) -> MeasuredRun:
    where = f"{path.name} run {run_id}"
    if d.get("ramp_up_strategy"):
        raise ServePlanError(f"{where}: ramp_up_strategy={d['ramp_up_strategy']!r}: the request "
                             "rate changed during the run, which a replay at one rate cannot repeat")
    burst = fields.number(d, "burstiness", where, required=False)
    burst = 1.0 if burst is None else burst
    if not burst > 0:
        raise ServePlanError(f"{where}: burstiness={burst:g}; expected a gamma shape > 0 (1: Poisson, "
                             "inf: evenly spaced)")
    c = fields.client_summary(d, where, ctx, METRICS, gap_cv=1.0 / math.sqrt(burst))
    workload, ins, outs, len_note = c.lengths
    sent = fields.whole(d, "num_prompts", where, required=False)
    failed = fields.whole(d, "failed", where, required=False) or 0
    if sent is not None and sent < c.completed + failed:
        raise ServePlanError(f"{where}: num_prompts={sent} but completed={c.completed} and "
                             f"failed={failed}; a run completes or fails at most the requests it sent")
    if sent is not None and isinstance(d.get("input_lens"), list) and len(d["input_lens"]) != sent:
        raise ServePlanError(f"{where}: num_prompts={sent} but input_lens lists {len(d['input_lens'])} "
                             "requests; expected one entry per request sent")
    if failed and isinstance(d.get("input_lens"), list) and len(d["input_lens"]) != c.completed + failed:
        raise ServePlanError(f"{where}: completed={c.completed} and failed={failed} but input_lens lists "
                             f"{len(d['input_lens'])} requests; expected one entry per request sent")
    spec = next((f"{k}={d[k]!r}" for k in SPEC_FIELDS if d.get(k) is not None), None)
    return fields.finish_run(
        ctx, "vllm-bench", path, run_id, backend=d.get("backend"),
        default_engine="vllm", version_in_file=None, model_in_file=d.get("model_id"),
        workload=workload, concurrency=c.concurrency, rate_rps=c.rate_rps,
        num_requests=sent or c.completed,
        measured=c.measured, burstiness_cv=1.0 / math.sqrt(burst),  # inf: 0, evenly spaced
        input_lens=ins, output_lens=outs, spec_used=spec,
        notes=(c.load_note, len_note, "evenly spaced arrivals (burstiness inf)"
               if c.rate_rps is not None and math.isinf(burst) else ""))


def read_vllm_bench(path: Path, ctx: RunContext) -> list[MeasuredRun]:
    docs = fields.read_json_docs(path)
    return [_run(d, path, run_id, ctx) for run_id, d in fields.selected(docs, ctx, path)]
