"""A fully associative cache: tags in flip-flops, payloads in a `Memory`.

Every translation cache of the unit is one of these (the TLB per page size, the guest and EPT
paging-structure caches per level, the nested TLB). The tags sit in registers so that a lookup
compares every entry in one cycle and an invalidation clears every matching entry in one cycle;
the payloads sit in an Amaranth `Memory` (block RAM on the FPGA) read synchronously, so a lookup
presented in cycle t gives its payload in cycle t+1.

- lookup: `lookup_key` (combinational compare) -> `lookup_hit`, `lookup_index` in the same cycle,
  `lookup_data` one cycle later (the read port is enabled by `lookup_en`, so it holds when 0).
- fill: `fill_en`, `fill_key`, `fill_data`, registered at the input (a fill is visible to lookups
  two cycles after it is presented; this keeps the walker's logic off the tag-compare path). A
  fill whose key is already present overwrites that entry, so a key is never held twice;
  otherwise it takes the first free entry, else the entry a round-robin pointer names.
- `entries=0` builds a cache that never hits, to measure the walker without caching.
- invalidation: `inval_en` clears every valid entry whose key matches `inval_match` on the bits
  set in `inval_mask` (mask 0 clears everything).
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2


class AssocCache(wiring.Component):
    def __init__(self, *, key_width, data_width, entries):
        assert entries >= 0
        self.key_width = key_width
        self.data_width = data_width
        self.entries = entries
        index_width = max(1, ceil_log2(entries))
        super().__init__({
            "lookup_key": In(key_width),
            "lookup_en": In(1),
            "lookup_hit": Out(1),
            "lookup_index": Out(index_width),
            "lookup_data": Out(data_width),
            "fill_en": In(1),
            "fill_key": In(key_width),
            "fill_data": In(data_width),
            "inval_en": In(1),
            "inval_mask": In(key_width),
            "inval_match": In(key_width),
            "valid": Out(max(1, entries)),   # exported for formal harnesses and debug
        })

    def elaborate(self, platform):
        m = Module()
        n = self.entries
        if n == 0:
            # A cache of no entries: every lookup misses (for measuring uncached walks).
            return m
        index_width = len(self.lookup_index)

        keys = Array(Signal(self.key_width, name=f"key{i}") for i in range(n))
        valid = Signal(n)
        m.d.comb += self.valid.eq(valid)

        m.submodules.data = data = memory.Memory(shape=self.data_width, depth=n, init=[])
        rd = data.read_port()           # synchronous, not transparent: old data on a same-cycle fill
        wr = data.write_port()

        # Lookup: compare all tags, pick the lowest matching index (there is at most one).
        match = Signal(n)
        m.d.comb += match.eq(Cat((keys[i] == self.lookup_key) & valid[i] for i in range(n)))
        index = Signal(index_width)
        for i in reversed(range(n)):
            with m.If(match[i]):
                m.d.comb += index.eq(i)
        m.d.comb += [
            self.lookup_hit.eq(match.any()),
            self.lookup_index.eq(index),
            rd.addr.eq(index),
            rd.en.eq(self.lookup_en),
            self.lookup_data.eq(rd.data),
        ]

        # Fill: same key -> same entry; else first free entry; else round robin.
        fill_en = Signal()
        fill_key = Signal(self.key_width)
        fill_data = Signal(self.data_width)
        m.d.sync += [fill_en.eq(self.fill_en), fill_key.eq(self.fill_key),
                     fill_data.eq(self.fill_data)]
        fill_match = Signal(n)
        m.d.comb += fill_match.eq(Cat((keys[i] == fill_key) & valid[i] for i in range(n)))
        rr = Signal(index_width)
        victim = Signal(index_width)
        m.d.comb += victim.eq(rr)
        for i in reversed(range(n)):
            with m.If(~valid[i]):
                m.d.comb += victim.eq(i)
        for i in reversed(range(n)):
            with m.If(fill_match[i]):
                m.d.comb += victim.eq(i)

        with m.If(fill_en & ~self.inval_en):
            m.d.sync += [keys[victim].eq(fill_key), valid.bit_select(victim, 1).eq(1)]
            m.d.comb += [wr.addr.eq(victim), wr.data.eq(fill_data), wr.en.eq(1)]
            with m.If(~fill_match.any() & valid.all()):
                m.d.sync += rr.eq(Mux(rr == n - 1, 0, rr + 1))

        with m.If(self.inval_en):
            kill = Cat(((keys[i] & self.inval_mask) == (self.inval_match & self.inval_mask))
                       for i in range(n))
            m.d.sync += valid.eq(valid & ~kill)

        return m
