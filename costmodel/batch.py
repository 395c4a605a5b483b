"""The work of one engine iteration: prefill chunks and decoding sequences.

A prefill chunk is `(chunk_tokens, cached_prefix_tokens)`: `chunk_tokens` new tokens of a prompt
whose first `cached_prefix_tokens` already sit in the KV cache (earlier chunks, or a prefix-cache
hit). A decoding sequence is its context length (tokens already in the cache); each decode adds
`decode_query_tokens` query tokens (1 for plain decoding, k+1 for a speculative verify step).
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.errors import ServePlanError

# bounds on one iteration, far beyond any engine's (vLLM caps max_num_seqs at a few thousand):
# they keep a mistyped `--prefill 1000000000x1000000000` an error instead of hours of work
MAX_SEQS = 1 << 16  # sequences in one batch
MAX_SEQ_TOKENS = 1 << 24  # tokens of one prefill chunk, cached prefix or decode context


@dataclass(frozen=True)
class Batch:
    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()
    decode_query_tokens: int = 1

    def __post_init__(self):
        if len(self.prefill) + len(self.decode) > MAX_SEQS:
            raise ServePlanError(f"{len(self.prefill) + len(self.decode)} sequences in one batch; "
                                 f"expected at most {MAX_SEQS}")
        for chunk, prefix in self.prefill:
            if not (0 < chunk <= MAX_SEQ_TOKENS and 0 <= prefix <= MAX_SEQ_TOKENS):
                raise ServePlanError(
                    f"prefill chunk ({chunk}, {prefix}): expected chunk_tokens in [1, {MAX_SEQ_TOKENS}] "
                    f"and cached_prefix_tokens in [0, {MAX_SEQ_TOKENS}]"
                )
        if any(not 0 <= c <= MAX_SEQ_TOKENS for c in self.decode):
            bad = next(c for c in self.decode if not 0 <= c <= MAX_SEQ_TOKENS)
            raise ServePlanError(f"decode context length {bad}: expected all in [0, {MAX_SEQ_TOKENS}]")
        if self.decode_query_tokens < 1:
            raise ServePlanError(
                f"decode_query_tokens={self.decode_query_tokens}; expected >= 1"
            )

    @property
    def num_tokens(self) -> int:
        return sum(c for c, _ in self.prefill) + len(self.decode) * self.decode_query_tokens

    @property
    def num_seqs(self) -> int:
        return len(self.prefill) + len(self.decode)

    @classmethod
    def parse(cls, prefill: list[str] | None, decode: list[str] | None) -> Batch:
        """CLI form: prefill `LEN[xN][+PREFIX]`, decode `BATCHxCONTEXT`."""
        chunks: list[tuple[int, int]] = []
        for spec in prefill or []:
            try:
                body, _, prefix = spec.partition("+")
                length, _, count = body.lower().partition("x")
                n = int(count) if count else 1
                _check_count(n, len(chunks), spec, "--prefill")
                chunks += [(int(length), int(prefix) if prefix else 0)] * n
            except ServePlanError:
                raise
            except ValueError:
                raise ServePlanError(
                    f"--prefill {spec!r}; expected LEN, LENxN or LEN+CACHED_PREFIX (e.g. 2048x4)"
                ) from None
        ctxs: list[int] = []
        for spec in decode or []:
            try:
                b, ctx = spec.lower().split("x")
                _check_count(int(b), len(chunks) + len(ctxs), spec, "--decode")
                ctxs += [int(ctx)] * int(b)
            except ServePlanError:
                raise
            except ValueError:
                raise ServePlanError(
                    f"--decode {spec!r}; expected BATCHxCONTEXT (e.g. 64x1500)"
                ) from None
        if not chunks and not ctxs:
            raise ServePlanError("empty batch: give --prefill and/or --decode")
        return cls(prefill=tuple(chunks), decode=tuple(ctxs))


def _check_count(n: int, have: int, spec: str, flag: str) -> None:
    """Refuse a repeat count before the list is built (10^9 copies would exhaust memory)."""
    if not 1 <= n <= MAX_SEQS - have:
        raise ServePlanError(f"{flag} {spec!r}: {n} sequences; expected 1..{MAX_SEQS} in one batch")
