"""Request traces: read Azure CSV, Mooncake JSONL, Vidur length CSV and the native CSV.

A trace is a table of requests: input and output lengths in tokens, arrival times in seconds
from the first request (absent for length-only traces such as Vidur's arXiv set), and for
Mooncake the prefix-block hashes (`hash_ids`, one id per 512-token block of the prompt; equal
ids mean a shared prefix). The format is detected from the file's first line:

| format   | first line                                      | arrival column          |
|----------|-------------------------------------------------|-------------------------|
| azure    | `TIMESTAMP,ContextTokens,GeneratedTokens`       | datetime                |
| mooncake | a JSON object with `input_length`, `output_length` (`timestamp` ms, `hash_ids`) | ms |
| vidur    | `num_prefill_tokens,num_decode_tokens,...`      | none (lengths only)     |
| native   | `input_len,output_len[,arrival_s]`              | seconds                 |

Bad rows raise ServePlanError naming the file and the 1-based line. Parsed traces are cached
by path, size and modification time: the planner replays the same trace thousands of times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from costmodel.errors import ServePlanError

MOONCAKE_BLOCK_TOKENS = 512

# short names of the traces in <shared>/data/traces
TRACE_NAMES = {
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "mooncake-conv": "conversation_trace.jsonl",
    "mooncake-synthetic": "synthetic_trace.jsonl",
    "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
}


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests of one trace file. Arrays have one entry per request, in arrival order."""

    path: str
    format: str  # azure | mooncake | vidur | native
    input_len: np.ndarray  # int64 tokens
    output_len: np.ndarray  # int64 tokens
    arrival_s: np.ndarray | None  # float64 seconds from the first request; None = lengths only
    hash_ids: np.ndarray | None = None  # int64, all requests' block ids concatenated
    hash_offsets: np.ndarray | None = None  # int64 [n + 1]; request i owns ids[off[i]:off[i+1]]
    hash_block_tokens: int = MOONCAKE_BLOCK_TOKENS

    @property
    def num_requests(self) -> int:
        return int(self.input_len.size)

    @property
    def span_s(self) -> float:
        if self.arrival_s is None or self.arrival_s.size < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def rate_rps(self) -> float | None:
        """Mean arrival rate (requests per second) of the trace; None without timestamps."""
        if self.arrival_s is None or self.span_s <= 0:
            return None
        return (self.num_requests - 1) / self.span_s


def resolve_trace_path(name_or_path: str) -> Path:
    """A short name (`azure-conv`, ...) under <shared>/data/traces, or a file path."""
    key = name_or_path.strip()
    if key.lower() in TRACE_NAMES:
        from costmodel.paths import shared_dir

        return shared_dir() / "data" / "traces" / TRACE_NAMES[key.lower()]
    return Path(key).expanduser()


def load_trace(path: str | Path) -> Trace:
    """Parse a trace file (format detected); cached by path, size and mtime."""
    p = Path(path)
    try:
        st = p.stat()
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        raise ServePlanError(
            f"trace file {p} not found; expected a path or one of {', '.join(TRACE_NAMES)}"
        ) from None
    if not p.is_file():
        raise ServePlanError(f"trace {p} is not a file")
    return _load_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _load_cached(path: str, size: int, mtime_ns: int) -> Trace:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline().strip()
    if not first:
        raise ServePlanError(f"{path} line 1: empty file; expected a trace (Azure CSV, Mooncake "
                             "JSONL, Vidur or native CSV)")
    if first.startswith("{"):
        return _read_mooncake(path)
    cols = [c.strip().lower() for c in first.split(",")]
    if {"timestamp", "contexttokens", "generatedtokens"} <= set(cols):
        return _read_azure(path)
    if {"num_prefill_tokens", "num_decode_tokens"} <= set(cols):
        return _read_csv_lengths(path, "vidur", "num_prefill_tokens", "num_decode_tokens", None)
    if {"input_len", "output_len"} <= set(cols):
        return _read_csv_lengths(path, "native", "input_len", "output_len",
                                 "arrival_s" if "arrival_s" in cols else None)
    raise ServePlanError(
        f"{path} line 1: unknown trace format (header {first[:80]!r}); expected Azure CSV "
        "(TIMESTAMP,ContextTokens,GeneratedTokens), Mooncake JSONL (input_length, output_length, "
        "timestamp, hash_ids), Vidur CSV (num_prefill_tokens,num_decode_tokens) or native CSV "
        "(input_len,output_len[,arrival_s])"
    )


def _check_lengths(path: str, inp: np.ndarray, out: np.ndarray, first_line: int) -> None:
    """Every request needs >= 1 input and >= 1 output token; name the first bad line."""
    bad = np.flatnonzero(~(np.isfinite(inp) & np.isfinite(out)) | (inp < 1) | (out < 1))
    if bad.size:
        i = int(bad[0])
        raise ServePlanError(
            f"{path} line {i + first_line}: input length {float(inp[i]):g}, output length {float(out[i]):g}; "
            "expected whole numbers >= 1"
        )
    if inp.size == 0:
        raise ServePlanError(f"{path}: no requests in the trace")


def _check_arrivals(path: str, t: np.ndarray, first_line: int) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ServePlanError(f"{path} line {int(bad[0]) + first_line}: arrival time is not a number")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        # traces are replayed in arrival order; a few out-of-order rows are sorted, not rejected
        return np.sort(t, kind="stable")
    return t


def _int_col(path: str, df: pd.DataFrame, col: str, first_line: int) -> np.ndarray:
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    nonint = np.flatnonzero(np.isfinite(v) & (v != np.round(v)))
    if nonint.size:
        i = int(nonint[0])
        raise ServePlanError(f"{path} line {i + first_line}: {col} = {v[i]!r}; expected a whole number")
    return v


def _read_csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ServePlanError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def _read_azure(path: str) -> Trace:
    df = _read_csv(path)
    df.columns = [c.strip() for c in df.columns]
    inp = _int_col(path, df, "ContextTokens", 2)
    out = _int_col(path, df, "GeneratedTokens", 2)
    _check_lengths(path, inp, out, 2)
    ts = pd.to_datetime(df["TIMESTAMP"].str.strip(), format="ISO8601", errors="coerce")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise ServePlanError(f"{path} line {i + 2}: TIMESTAMP {df['TIMESTAMP'].iloc[i]!r}; "
                             "expected a date-time such as 2023-11-16 18:15:46.68")
    ns = ts.to_numpy().astype("datetime64[ns]").astype(np.int64)
    t = _check_arrivals(path, (ns - ns.min()) / 1e9, 2)
    return Trace(path, "azure", inp.astype(np.int64), out.astype(np.int64), t - t[0])


def _read_csv_lengths(path: str, fmt: str, in_col: str, out_col: str, t_col: str | None) -> Trace:
    df = _read_csv(path)
    df.columns = [c.strip().lower() for c in df.columns]
    inp = _int_col(path, df, in_col, 2)
    out = _int_col(path, df, out_col, 2)
    _check_lengths(path, inp, out, 2)
    t = None
    if t_col is not None:
        t = pd.to_numeric(df[t_col], errors="coerce").to_numpy(dtype=np.float64)
        t = _check_arrivals(path, t, 2)
        t = t - t[0]
    return Trace(path, fmt, inp.astype(np.int64), out.astype(np.int64), t)


def _read_mooncake(path: str) -> Trace:
    ts: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    ids: list[int] = []
    offsets = [0]
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                i, o = d["input_length"], d["output_length"]
                t = float(d.get("timestamp", 0.0)) / 1e3
                h = d.get("hash_ids") or []
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ServePlanError(
                    f"{path} line {lineno}: not a Mooncake record ({type(e).__name__}: {e}); "
                    "expected JSON with input_length, output_length, timestamp (ms), hash_ids"
                ) from None
            if not (isinstance(i, int) and isinstance(o, int) and i >= 1 and o >= 1):
                raise ServePlanError(f"{path} line {lineno}: input_length {i!r}, output_length "
                                     f"{o!r}; expected whole numbers >= 1")
            if not all(isinstance(x, int) for x in h):
                raise ServePlanError(f"{path} line {lineno}: hash_ids must be a list of integers")
            ts.append(t)
            inp.append(i)
            out.append(o)
            ids.extend(h)
            offsets.append(len(ids))
    if not inp:
        raise ServePlanError(f"{path}: no requests in the trace")
    t_arr = np.asarray(ts, dtype=np.float64)
    order = np.argsort(t_arr, kind="stable")
    if not np.array_equal(order, np.arange(order.size)):
        raise ServePlanError(f"{path}: Mooncake timestamps are not sorted; expected arrival order")
    return Trace(
        path, "mooncake", np.asarray(inp, np.int64), np.asarray(out, np.int64), t_arr - t_arr[0],
        np.asarray(ids, np.int64), np.asarray(offsets, np.int64), MOONCAKE_BLOCK_TOKENS,
    )
