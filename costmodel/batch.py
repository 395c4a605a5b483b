"""The work of one engine iteration: prefill chunks and decoding sequences.

A prefill chunk is `(chunk_tokens, cached_prefix_tokens)`: `chunk_tokens` new tokens of a prompt
whose first `cached_prefix_tokens` already sit in the KV cache (earlier chunks, or a prefix-cache
hit). A decoding sequence is its context length (tokens already in the cache); each decode adds
`decode_query_tokens` query tokens (1 for plain decoding, k+1 for a speculative verify step).
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.errors import ServePlanError


@dataclass(frozen=True)
class Batch:
    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()
    decode_query_tokens: int = 1

    def __post_init__(self):
        for chunk, prefix in self.prefill:
            if chunk <= 0 or prefix < 0:
                raise ServePlanError(
                    f"prefill chunk ({chunk}, {prefix}): expected chunk_tokens > 0 and "
                    "cached_prefix_tokens >= 0"
                )
        if any(c < 0 for c in self.decode):
            raise ServePlanError(f"decode context lengths {self.decode}: expected all >= 0")
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
                chunks += [(int(length), int(prefix) if prefix else 0)] * n
            except ValueError:
                raise ServePlanError(
                    f"--prefill {spec!r}; expected LEN, LENxN or LEN+CACHED_PREFIX (e.g. 2048x4)"
                ) from None
        ctxs: list[int] = []
        for spec in decode or []:
            try:
                b, ctx = spec.lower().split("x")
                ctxs += [int(ctx)] * int(b)
            except ValueError:
                raise ServePlanError(
                    f"--decode {spec!r}; expected BATCHxCONTEXT (e.g. 64x1500)"
                ) from None
        if not chunks and not ctxs:
            raise ServePlanError("empty batch: give --prefill and/or --decode")
        return cls(prefill=tuple(chunks), decode=tuple(ctxs))
