"""Measured-table corrections: the roofline times a factor learned from nearby measurements.

Where a GPU has been measured densely (AIConfigurator's GEMM and attention tables), the
roofline's residual is smooth over shape but not zero (kernel choice, split-KV heuristics, L2
effects). A `CorrectionTable` keeps, for each measured row, its shape in log2 coordinates and
log(measured / roofline); a lookup averages the K nearest measured shapes of the same category
(inverse-square-distance weights). A shape farther than MAX_DIST_OCTAVES from every measurement
gets no correction: the roofline stays the fallback. Lookups are memoised per shape, so the
simulator's hot path pays a dict hit after the first call.

Kinds and their shape features (categorical first, then numbers taken as log2(x + 1)):
- `gemm`: precision | m, n, k
- `attn_prefill`: kv_dtype, windowed | batch, chunk, prefix, heads, kv heads, head dim
- `attn_decode`: kv_dtype, windowed | batch, context, heads, kv heads, head dim
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from costmodel.errors import ServePlanError

KINDS = ("gemm", "attn_prefill", "attn_decode")
# a table's point: the category code, then its shape numbers (module doc)
POINT_COLUMNS = {"gemm": 4, "attn_prefill": 7, "attn_decode": 6}
# a measured time within e^20 of the roofline's either way: past it a value is no measurement
# (and e^709 overflows); real tables stay within +-6
MAX_LOG_RATIO = 20.0
NEIGHBOURS = 6
MAX_DIST_OCTAVES = 2.0
_SOFT = 0.05  # octaves^2 added to squared distances (an exact hit does not take all weight)
_CAT_GAP = 1e3  # categories sit this far apart: neighbours never cross categories


@dataclass
class CorrectionTable:
    kind: str
    cats: list[tuple] = field(default_factory=list)  # distinct categories, index = code
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))  # (rows, 1 + d)
    log_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        self._tree = None
        self._memo: dict[tuple, float] = {}

    @classmethod
    def fit(cls, kind: str, cats: list[tuple], feats: np.ndarray, log_ratio: np.ndarray) -> CorrectionTable:
        """cats: one categorical tuple per row; feats: (rows, d) raw shape numbers."""
        if kind not in KINDS:
            raise ServePlanError(f"table kind {kind!r}; expected one of {', '.join(KINDS)}")
        lr = np.asarray(log_ratio, float)
        ok = np.isfinite(lr)
        distinct = sorted({tuple(c) for c in cats}, key=str)
        code = {c: i for i, c in enumerate(distinct)}
        codes = np.array([code[tuple(c)] for c in cats], float)
        pts = np.column_stack([codes, np.log2(np.asarray(feats, float) + 1.0)])
        return cls(kind, distinct, pts[ok], lr[ok])

    def _query(self, cat: tuple, feats) -> float:
        try:
            code = self.cats.index(tuple(cat))
        except ValueError:
            return 0.0
        if self._tree is None:
            from scipy.spatial import cKDTree

            scaled = self.points.copy()
            scaled[:, 0] *= _CAT_GAP
            self._tree = cKDTree(scaled)
        x = [code * _CAT_GAP, *(math.log2(f + 1.0) for f in feats)]
        k = min(NEIGHBOURS, len(self.log_ratio))
        d, i = self._tree.query(x, k=k)
        d, i = np.atleast_1d(d), np.atleast_1d(i)
        if d[0] > MAX_DIST_OCTAVES:
            return 0.0
        w = 1.0 / (d * d + _SOFT)
        return float(w.dot(self.log_ratio[i]) / w.sum())

    def log_factor(self, cat: tuple, feats) -> float:
        key = (*cat, *feats)
        v = self._memo.get(key)
        if v is None:
            v = self._query(cat, feats)
            if len(self._memo) > 500_000:
                self._memo.clear()
            self._memo[key] = v
        return v

    def factor(self, cat: tuple, feats) -> float:
        return math.exp(self.log_factor(cat, feats))

    def factor_v(self, cats: list[tuple], feats: np.ndarray) -> np.ndarray:
        return np.exp([self.log_factor(tuple(c), tuple(f)) for c, f in
                       zip(cats, np.asarray(feats, float).tolist(), strict=True)])

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": self.kind, "cats": [list(c) for c in self.cats],
                "points": np.round(self.points, 5).tolist(),
                "log_ratio": np.round(self.log_ratio, 5).tolist()}

    @classmethod
    def from_dict(cls, d: dict, where: str = "tables") -> CorrectionTable:
        try:
            kind = d["kind"]
            if not isinstance(d["cats"], list) or not all(isinstance(c, list) for c in d["cats"]):
                raise TypeError("cats must be a list of lists")
            cats = [tuple(c) for c in d["cats"]]
            pts = np.asarray(d["points"], float)
            lr = np.asarray(d["log_ratio"], float)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ServePlanError(f"{where}: malformed correction table ({str(e)[:80]})") from None
        if kind not in KINDS:
            raise ServePlanError(f"{where}: table kind {kind!r}; expected one of {', '.join(KINDS)}")
        if lr.ndim != 1 or pts.ndim != 2 or len(pts) != len(lr) or len(lr) == 0 \
                or not np.all(np.isfinite(lr)) or not np.all(np.isfinite(pts)):
            raise ServePlanError(f"{where}: points and log_ratio must be equal-length, non-empty, finite")
        if pts.shape[1] != POINT_COLUMNS[kind]:
            raise ServePlanError(f"{where}: a {kind} point has {POINT_COLUMNS[kind]} columns, not {pts.shape[1]}")
        codes, logs = pts[:, 0], pts[:, 1:]
        if np.any(codes != np.round(codes)) or codes.min() < 0 or codes.max() >= max(len(cats), 1) \
                or logs.min() < 0 or logs.max() > 128:
            raise ServePlanError(f"{where}: a point is a category index into cats, then log2(shape + 1) "
                                 "numbers in [0, 128]")
        if np.abs(lr).max() > MAX_LOG_RATIO:
            raise ServePlanError(f"{where}: log_ratio reaches {np.abs(lr).max():.3g} at row "
                                 f"{int(np.abs(lr).argmax())}; a correction lies within +-{MAX_LOG_RATIO:g}")
        return cls(kind, cats, pts, lr)


@dataclass
class MeasuredTables:
    """The correction tables of one GPU (what `CalibrationProfile.tables_for` returns)."""

    tables: dict[str, CorrectionTable] = field(default_factory=dict)

    def gemm_factor(self, precision: str, m: int, n: int, k: int) -> float:
        t = self.tables.get("gemm")
        return 1.0 if t is None else t.factor((precision,), (m, n, k))

    def prefill_attn_factor(self, kv_dtype: str, window: int, batch: int, chunk: float,
                            prefix: float, heads: int, kv_heads: int, head_dim: int) -> float:
        t = self.tables.get("attn_prefill")
        return 1.0 if t is None else t.factor((kv_dtype, int(window > 0)),
                                              (batch, chunk, prefix, heads, kv_heads, head_dim))

    def decode_attn_factor(self, kv_dtype: str, window: int, batch: int, ctx: float, heads: int,
                           kv_heads: int, head_dim: int) -> float:
        t = self.tables.get("attn_decode")
        return 1.0 if t is None else t.factor((kv_dtype, int(window > 0)),
                                              (batch, ctx, heads, kv_heads, head_dim))

    def allreduce_time_s(self, n_gpus: int, msg_bytes: float) -> float | None:
        """No collective tables yet: the latency-bandwidth model answers (None)."""
        return None

    def to_dict(self) -> dict:
        return {k: t.to_dict() for k, t in self.tables.items()}

    @classmethod
    def from_dict(cls, d: dict, where: str = "tables") -> MeasuredTables:
        if not isinstance(d, dict):
            raise ServePlanError(f"{where}: expected an object of kind -> table")
        out = {}
        for k, v in d.items():
            t = CorrectionTable.from_dict(v, f"{where}.{k}") if isinstance(v, dict) else None
            if t is None or t.kind != k:
                raise ServePlanError(f"{where}.{k}: expected a {k!r} correction table (kinds: "
                                     f"{', '.join(KINDS)})")
            out[k] = t
        return cls(out)


def row_keys(kind: str, r) -> tuple[list[tuple], np.ndarray]:
    """Categorical keys and shape features of measured rows (native schema) of one kind."""
    if kind == "gemm":
        cats = [(str(p),) for p in r["precision"]]
        return cats, r[["m", "n", "k"]].to_numpy(float)
    win = (r["window"].to_numpy() > 0).astype(int).tolist()
    cats = [(str(a), int(b)) for a, b in zip(r["kv_dtype"], win, strict=True)]
    if kind == "attn_prefill":
        cols = ["batch_size", "prefill_len", "context_len", "num_heads", "num_kv_heads", "head_dim"]
    else:
        cols = ["batch_size", "context_len", "num_heads", "num_kv_heads", "head_dim"]
    return cats, r[cols].to_numpy(float)


def build_tables(rows, predicted: np.ndarray) -> MeasuredTables:
    """Correction tables from measured rows of one GPU and the roofline's predictions of them."""
    out = MeasuredTables()
    ops = rows["op"].to_numpy()
    lr = np.log(rows["measured_s"].to_numpy(float) / np.asarray(predicted, float))
    from costmodel.importers import GEMM_OPS

    for kind, sel in (("gemm", np.isin(ops, GEMM_OPS)), ("attn_prefill", ops == "attn_prefill"),
                      ("attn_decode", ops == "attn_decode")):
        if sel.sum() == 0:
            continue
        cats, feats = row_keys(kind, rows[sel])
        out.tables[kind] = CorrectionTable.fit(kind, cats, feats, lr[sel])
    return out
