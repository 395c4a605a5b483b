"""Speculative decoding: draft cost, accepted-token sampling and the adaptive draft length.

Per decoding sequence and verify step the draft proposes k tokens; the target accepts each with
probability `a` until the first rejection, then adds one token of its own (the bonus), so a
step yields X + 1 tokens with X = min(k, G), G geometric (P(G >= j) = a^j). The mean is
(1 - a^(k+1)) / (1 - a). The verify step is a target forward over k + 1 query tokens per
decoding sequence (`decode_query_tokens = k + 1`), so large batches can lose from it.

Draft cost per step:
- `draft`: a separate draft model (its own CostModel, same GPU and TP where its heads allow):
  the first of the k draft forwards also runs the batch's prefill chunks (the draft keeps its
  own KV cache), the other k - 1 are decodes.
- `self`: early-exit self-speculation; the draft is the target's first `self_layer_fraction`
  of layers (LayerSkip-style), k decode forwards of that truncated model, no prefill.
- `ngram`: prompt-lookup drafting on the host, taken as free.

Adaptive policy: the acceptance rate is estimated from the accepted counts (maximum likelihood
for the truncated geometric, exponentially decayed), and every `RECHECK_STEPS` steps (or when the
batch size moves by a quarter) k in 0..k_max is chosen to maximise expected tokens per second of
step time at the current batch.
"""

from __future__ import annotations

import numpy as np

from costmodel.model import CostModel
from sim.deployment import SpecConfig

RECHECK_STEPS = 16
DECAY = 0.95
DEFAULT_K_MAX = 8


def expected_tokens_per_step(a: float, k: int) -> float:
    """Mean tokens a sequence gains per verify step: (1 - a^(k+1)) / (1 - a)."""
    if k <= 0:
        return 1.0
    if a >= 1.0:
        return k + 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def build_draft_model(spec: SpecConfig, target: CostModel, self_layer_fraction: float) -> CostModel | None:
    """The CostModel whose forwards the draft costs (None for n-gram drafting)."""
    if spec.method == "draft":
        for tp in (target.tp, 1):
            try:
                return CostModel(spec.draft_model, target.gpu, tp=tp, pp=1, precision=target.precision,
                                 calibration=target.calibration)
            except ValueError:
                continue
        return CostModel(spec.draft_model, target.gpu, tp=1, pp=1, calibration=target.calibration)
    if spec.method == "self":
        layers = max(1, round(target.model.num_layers * self_layer_fraction))
        return CostModel(target.model.with_layers(layers), target.gpu, tp=target.tp, pp=1,
                         precision=target.precision, kv_dtype=target.kv_dtype,
                         calibration=target.calibration)
    return None


class SpecDecoder:
    """Draft length, draft time and accepted-token sampling for one replica."""

    def __init__(self, spec: SpecConfig, target: CostModel, rng: np.random.Generator,
                 self_layer_fraction: float = 0.25):
        self.method = spec.method
        self.a = float(spec.acceptance)
        self.adaptive = spec.adaptive or spec.num_speculative_tokens == 0
        self.k_max = spec.num_speculative_tokens or DEFAULT_K_MAX
        self.k = self.k_max
        self.target = target
        self.draft = build_draft_model(spec, target, self_layer_fraction)
        self.rng = rng
        # adaptive: decayed accepted / rejected counts, seeded with the configured acceptance
        self._acc = 10.0 * self.a
        self._rej = 10.0 * (1.0 - self.a)
        self._since = RECHECK_STEPS
        self._last_n = 0

    @property
    def a_hat(self) -> float:
        return self._acc / (self._acc + self._rej) if self._acc + self._rej > 0 else self.a

    def draft_time_s(self, prefill, n_dec: int, ctx_sum: float, k: int) -> float:
        """Time of the k draft forwards before a verify step."""
        d = self.draft
        if d is None or k <= 0 or n_dec == 0:
            return 0.0
        if self.method == "draft":
            first = d.step_time_s(prefill, n_dec, ctx_sum, 1)
            return first + (k - 1) * d.step_time_s((), n_dec, ctx_sum, 1)
        return k * d.step_time_s((), n_dec, ctx_sum, 1)

    def choose_k(self, n_dec: int, ctx_sum: float) -> int:
        """Draft length for this step (fixed k unless adaptive)."""
        if not self.adaptive or n_dec == 0:
            return self.k
        self._since += 1
        if self._since < RECHECK_STEPS and abs(n_dec - self._last_n) * 4 <= self._last_n:
            return self.k
        self._since, self._last_n = 0, n_dec
        a, best, best_rate = self.a_hat, 0, 0.0
        for k in range(self.k_max + 1):
            t = self.target.step_time_s((), n_dec, ctx_sum, k + 1) + self.draft_time_s((), n_dec, ctx_sum, k)
            rate = expected_tokens_per_step(a, k) / t
            if rate > best_rate:
                best, best_rate = k, rate
        self.k = best
        return best

    def sample_tokens(self, n: int, k: int) -> np.ndarray:
        """Tokens gained by each of n sequences in one verify step with draft length k."""
        if k <= 0 or self.a <= 0.0:
            acc = np.zeros(n, np.int64)
        else:
            acc = np.minimum(self.rng.geometric(1.0 - self.a, n) - 1, k)
        if self.adaptive and n and k > 0:
            s = float(acc.sum())
            self._acc = self._acc * DECAY + s
            self._rej = self._rej * DECAY + float(np.count_nonzero(acc < k))
        return acc + 1
