"""SGLang `bench_serving` result files: JSON lines, one appended per run.

Fields read (sgl-project/sglang, `python/sglang/bench_serving.py`: the `result` dict at the
end of `benchmark`, and `calculate_metrics`):
- the load: `max_concurrency` (null when unset), `request_rate` (requests/s; inf, written
  `Infinity`, when every request is sent at once; "trace" when it replayed a trace's own
  timestamps, which is refused). Its open loop draws exponential gaps (Poisson). Note that
  `concurrency` in the file is the measured mean of requests in flight, not a setting: unread;
- the requests: `completed`, `total_input_tokens`, `total_output_tokens`,
  `request_throughput`; `dataset_name`, `random_input_len`, `random_output_len` and
  `random_range_ratio` (the random dataset draws input lengths uniformly from
  [max(1, int(L x ratio)), L], outputs likewise: ratio 1 is fixed lengths);
- latencies in ms: `mean_`, `median_`, `p99_` (and `p90_`/`p95_` in some versions) of `ttft`,
  `tpot`, `itl` and `e2e_latency` (a file without tpot fields: as vLLM's, `fields._tpot_from_e2e`);
- with `--output-details`: `input_lens`, `output_lens` (0 for a failed request), `errors`;
  `ttfts` and `itls` (seconds, not read); at the top, or under `details` in the versions
  whose `benchmark/metrics.py` writes the summary (they also name the token totals
  `total_input` and `total_output`);
- `backend` (sglang, sglang-oai, vllm, ...) for the engine (another engine's is refused);
  `server_info` (newer versions: the server's /get_server_info) for the engine `version`, the
  `model_path`, `tp_size` and `pp_size` (checked against the deployment given) and
  `speculative_algorithm`; `accept_length` (a speculative run's mean accepted tokens):
  a speculative run needs a deployment that decodes speculatively;
- `max_concurrent_requests` (the peak in flight, per second): under the cap, it never bound.

Lengths: per-request lists when present, else the random dataset's distribution, else fixed at
the means of the totals (the run's note says which).
"""

from __future__ import annotations

import math
from pathlib import Path

from costmodel.errors import ServePlanError
from sim.runs import fields
from sim.runs.fields import RunContext
from sim.runs.types import MeasuredRun

METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e_latency": "e2e"}


def _random_lengths(d: dict, where: str):
    """(workload, None, None, note) of the random dataset's lengths, or None when the run did
    not use it (other datasets leave random_input_len at its default in the file).

    The token totals say what was sent: newer versions take the tokenizer's special tokens off
    each prompt (1000 -> 999 for Llama), and a file whose totals' means lie further from the
    range's middle than its draw explains is replayed at them, with a note."""
    if not str(d.get("dataset_name") or "").startswith("random"):
        return None
    isl = fields.whole(d, "random_input_len", where, required=False)
    osl = fields.whole(d, "random_output_len", where, required=False)
    ratio = fields.number(d, "random_range_ratio", where, required=False)
    if not isl or not osl or ratio is None or ratio > 1:
        return None
    lo_in, lo_out = (isl, osl) if ratio == 1 else (max(1, int(isl * ratio)), max(1, int(osl * ratio)))
    in_key, out_key = fields.total_keys(d)
    done = fields.whole(d, "completed", where, required=False)
    totals = [fields.whole(d, k, where, required=False) for k in (in_key, out_key)]
    if done and None not in totals:
        means = [t / done for t in totals]
        # a uniform draw's mean lies within four standard errors, (hi - lo) / sqrt(12 n) each,
        # of the range's middle; a few tokens more for the special tokens taken off
        if ratio == 1 or any(abs(m - (lo + hi) / 2) > 8 + 4 * (hi - lo) / math.sqrt(12 * done)
                             for m, lo, hi in zip(means, (lo_in, lo_out), (isl, osl), strict=True)):
            workload, _, _, note = fields.mean_lengths_workload(d, where, done, in_key, out_key)
            said = f"random_input_len {isl}, random_output_len {osl}, range ratio {ratio:g}"
            return (workload, None, None, f"fixed lengths at the totals' means (random dataset, {said})"
                    if ratio == 1 else f"{note}; the file's {said} disagree with them")
    if ratio == 1:
        return f"fixed:{isl},{osl}", None, None, "fixed lengths (random dataset, range ratio 1)"
    return (f"uniform:{lo_in}-{isl},{lo_out}-{osl}", None, None,
            f"uniform lengths (random dataset, range ratio {ratio:g})")


def _run(d: dict, path: Path, run_id: str, ctx: RunContext) -> MeasuredRun:
    where = f"{path.name} run {run_id}"
    rate_field = d.get("request_rate")
    if isinstance(rate_field, str) and rate_field.strip().lower() == "trace":
        raise ServePlanError(f"{where}: request_rate='trace': the run replayed a trace's own "
                             "timestamps, which the file does not hold")
    c = fields.client_summary(d, where, ctx, METRICS, dataset_lengths=_random_lengths)
    workload, ins, outs, len_note = c.lengths
    info = d.get("server_info") if isinstance(d.get("server_info"), dict) else {}
    listed = fields.detail_lists(d).get("input_lens")
    n = len(listed) if isinstance(listed, list) else c.completed
    spec = (f"accept_length={d['accept_length']!r}" if d.get("accept_length") is not None else
            f"server_info.speculative_algorithm={info['speculative_algorithm']!r}"
            if info.get("speculative_algorithm") else None)
    return fields.finish_run(
        ctx, "sglang-bench", path, run_id, backend=d.get("backend"),
        default_engine="sglang", version_in_file=info.get("version"),
        model_in_file=info.get("model_path"), workload=workload, concurrency=c.concurrency,
        rate_rps=c.rate_rps, num_requests=n, measured=c.measured, input_lens=ins,
        output_lens=outs, notes=(c.load_note, len_note),
        server={f"server_info.{k}": info.get(k) for k in ("tp_size", "pp_size")}, spec_used=spec)


def read_sglang_bench(path: Path, ctx: RunContext) -> list[MeasuredRun]:
    docs = fields.read_json_docs(path)
    return [_run(d, path, run_id, ctx) for run_id, d in fields.selected(docs, ctx, path)]
