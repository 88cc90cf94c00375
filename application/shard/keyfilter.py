"""Which idempotency keys a shard has certainly never stored, without asking its store.

Every placement carries a key (the order's deterministic id); a retry must find the first
outcome, so a batch's keys that are not among the recent ones would each be looked up in the
store: a round trip on the writer's thread for every batch, although nearly every key is new.
A Bloom filter answers "certainly new" for those from memory; "maybe" (a key seen, or one false
positive in a thousand) still goes to the store, which stays the only authority. A filter only
ever says "maybe" too often, never "new" wrongly: keys of a batch that then failed stay in it
harmlessly.
"""

from __future__ import annotations

import math

_MASK32 = 0xFFFFFFFF


class KeyFilter:
    """A scalable Bloom filter of strings (one process's lifetime: built on Python's str hash).

    Layers double in capacity as keys arrive, each sized for `error` false positives at its
    capacity, so memory follows the keys (about 1.8 bytes per key at 0.1 %).
    """

    def __init__(self, capacity: int = 1 << 16, error: float = 0.001) -> None:
        self._error = error
        self._hashes = max(1, round(-math.log2(error)))
        self._layers: list[tuple[bytearray, int]] = []
        self._capacity = capacity
        self._count = 0  # keys added to the newest layer
        self.total = 0  # keys added in all
        self._bits: bytearray = bytearray()
        self._size = 0
        self._grow()

    def _grow(self) -> None:
        capacity = self._capacity * (2 ** len(self._layers))
        size = max(64, math.ceil(-capacity * math.log(self._error) / (math.log(2) ** 2)))
        self._bits = bytearray((size + 7) // 8)
        self._size = size
        self._layers.append((self._bits, size))
        self._count = 0
        self._layer_capacity = capacity

    @property
    def layers(self) -> int:
        return len(self._layers)

    def add(self, key: str) -> None:
        """Remember a key (single writer: the caller serialises adds)."""
        if self._count >= self._layer_capacity:
            self._grow()
        h = hash(key)
        h1, h2 = h & _MASK32, ((h >> 32) & _MASK32) | 1
        bits, size = self._bits, self._size
        for i in range(self._hashes):
            p = (h1 + i * h2) % size
            bits[p >> 3] |= 1 << (p & 7)
        self._count += 1
        self.total += 1

    def __contains__(self, key: object) -> bool:
        """False: certainly never added. True: maybe added."""
        h = hash(key)
        h1, h2 = h & _MASK32, ((h >> 32) & _MASK32) | 1
        for bits, size in self._layers:
            for i in range(self._hashes):
                p = (h1 + i * h2) % size
                if not bits[p >> 3] & (1 << (p & 7)):
                    break
            else:
                return True
        return False
