"""Reference model of a set-associative translation cache (rtl/translation/cache.py's contract),
one operation at a time.

Sets are chosen by the key's low log2(sets) bits. A fill goes to the way already holding its key,
else the lowest invalid way, else the set's tree pseudo-LRU way; a lookup hit and a fill make
their way the most recently used of the set. An invalidation removes every valid entry whose key
equals `match` on the bits set in `mask`.

Tree pseudo-LRU, in the usual words: the ways are the leaves of a binary tree; each inner node has
one bit that says which half the next victim is taken from (0 = lower half). Using a way turns
every bit on its path to point at the other half. Written here from that definition with a list
of nodes (heap order), independently of the RTL's bit slicing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Way:
    valid: bool = False
    key: int = 0
    data: int = 0


@dataclass
class _Set:
    ways: list[_Way]
    nodes: list[int] = field(default_factory=list)    # heap order, nodes[0] unused


class SetAssocCacheModel:
    def __init__(self, sets: int, ways: int):
        assert sets & (sets - 1) == 0 and ways & (ways - 1) == 0
        self.n_sets = sets
        self.n_ways = ways
        self.sets = [_Set([_Way() for _ in range(ways)], [0] * max(1, ways))
                     for _ in range(sets)]

    def _set(self, key: int) -> _Set:
        return self.sets[key % self.n_sets]

    def _touch(self, s: _Set, way: int) -> None:
        node, lo, hi = 1, 0, self.n_ways
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lower = way < mid
            s.nodes[node] = 1 if lower else 0          # point away from the used half
            node = 2 * node + (0 if lower else 1)
            lo, hi = (lo, mid) if lower else (mid, hi)

    def _plru(self, s: _Set) -> int:
        node, lo, hi = 1, 0, self.n_ways
        while hi - lo > 1:
            mid = (lo + hi) // 2
            upper = s.nodes[node] == 1
            node = 2 * node + (1 if upper else 0)
            lo, hi = (mid, hi) if upper else (lo, mid)
        return lo

    def lookup(self, key: int) -> int | None:
        """The payload of `key`, or None on a miss."""
        s = self._set(key)
        for i, w in enumerate(s.ways):
            if w.valid and w.key == key:
                self._touch(s, i)
                return w.data
        return None

    def fill(self, key: int, data: int) -> int:
        """Store `key` -> `data`; returns the way used."""
        s = self._set(key)
        same = [i for i, w in enumerate(s.ways) if w.valid and w.key == key]
        free = [i for i, w in enumerate(s.ways) if not w.valid]
        way = same[0] if same else free[0] if free else self._plru(s)
        s.ways[way] = _Way(True, key, data)
        self._touch(s, way)
        return way

    def invalidate(self, mask: int, match: int) -> None:
        for s in self.sets:
            for w in s.ways:
                if w.valid and (w.key & mask) == (match & mask):
                    w.valid = False

    def contents(self) -> dict[int, int]:
        return {w.key: w.data for s in self.sets for w in s.ways if w.valid}
