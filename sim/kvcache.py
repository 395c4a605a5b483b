"""Paged KV-cache pool of one replica, with a hash-addressed prefix cache and a host tier.

Blocks hold `block_size` tokens. A block is either private to a running request, part of the
prefix cache (one cache entry = one trace hash block = `blocks_per_entry` KV blocks; Mooncake
hashes cover 512 tokens, so 32 blocks of 16), or free. Cache entries that running requests
use are pinned (reference-counted) and shared: they are counted once, as in vLLM's prefix
caching. Unpinned entries are evicted least-recently-used when an allocation finds too few free
blocks; with a host tier they move to host memory (LRU, bounded) and a later hit there is
loaded back over PCIe instead of recomputed.
"""

from __future__ import annotations

from collections import OrderedDict


class BlockPool:
    """Counts of private and cached blocks; `allocate` evicts cached blocks when it must."""

    __slots__ = ("total", "private", "cache")

    def __init__(self, total_blocks: int, cache: PrefixCache | None = None):
        self.total = int(total_blocks)
        self.private = 0
        self.cache = cache

    @property
    def cached(self) -> int:
        return self.cache.blocks if self.cache is not None else 0

    @property
    def free(self) -> int:
        return self.total - self.private - self.cached

    def available(self) -> int:
        """Free blocks plus cached blocks that eviction could reclaim."""
        return self.free + (self.cache.evictable_blocks if self.cache is not None else 0)

    def allocate(self, n: int) -> bool:
        """Take n private blocks, evicting unpinned cache entries if needed; False if impossible."""
        if n <= 0:
            return True
        if self.free < n:
            if self.cache is None or self.available() < n:
                return False
            self.cache.evict(n - self.free)
        self.private += n
        assert self.private + self.cached <= self.total, "KV blocks over capacity"
        return True

    def release(self, n: int) -> None:
        self.private -= n
        assert self.private >= 0, "released more KV blocks than were allocated"

    def in_use(self) -> int:
        """Blocks held by running requests (private + pinned cache entries)."""
        pinned = self.cached - (self.cache.evictable_blocks if self.cache is not None else 0)
        return self.private + pinned


class PrefixCache:
    """LRU map of prefix-block hash -> reference count, in units of `blocks_per_entry` blocks."""

    def __init__(self, blocks_per_entry: int, host_entries: int = 0):
        self.bpe = max(1, int(blocks_per_entry))
        self.entries: OrderedDict[int, int] = OrderedDict()
        self.unpinned = 0  # entries with reference count 0
        self.host: OrderedDict[int, None] = OrderedDict()
        self.host_capacity = int(host_entries)
        self.hit_tokens = 0
        self.host_hit_tokens = 0
        self.lookup_tokens = 0

    @property
    def blocks(self) -> int:
        return len(self.entries) * self.bpe

    @property
    def evictable_blocks(self) -> int:
        return self.unpinned * self.bpe

    def match(self, keys) -> tuple[int, int]:
        """(entries on the GPU, then entries in host memory) of the longest cached prefix."""
        g = 0
        ent = self.entries
        for k in keys:
            if k in ent:
                g += 1
            else:
                break
        h = 0
        if self.host_capacity:
            for k in keys[g:]:
                if k in self.host:
                    h += 1
                else:
                    break
        return g, h

    def pin(self, keys) -> None:
        ent = self.entries
        for k in keys:
            r = ent[k]
            if r == 0:
                self.unpinned -= 1
            ent[k] = r + 1
            ent.move_to_end(k)

    def unpin(self, keys) -> None:
        ent = self.entries
        for k in keys:
            r = ent[k] - 1
            ent[k] = r
            if r == 0:
                self.unpinned += 1

    def insert(self, keys) -> int:
        """Add unpinned entries for keys not cached yet (most recent); returns how many were new."""
        ent = self.entries
        new = 0
        for k in keys:
            if k in ent:
                ent.move_to_end(k)
            else:
                ent[k] = 0
                new += 1
                self.host.pop(k, None)
        self.unpinned += new
        return new

    def evict(self, n_blocks: int) -> int:
        """Evict LRU unpinned entries until n_blocks are freed (or none is left); blocks freed."""
        freed = 0
        ent = self.entries
        victims = []
        for k, r in ent.items():
            if freed >= n_blocks:
                break
            if r == 0:
                victims.append(k)
                freed += self.bpe
        for k in victims:
            del ent[k]
            if self.host_capacity:
                self.host[k] = None
                if len(self.host) > self.host_capacity:
                    self.host.popitem(last=False)
        self.unpinned -= len(victims)
        return freed

    def take_from_host(self, keys) -> None:
        for k in keys:
            self.host.pop(k, None)

    def holds(self, keys) -> int:
        """Length of the cached prefix (GPU entries), for prefix-affinity routing."""
        return self.match(keys)[0]
