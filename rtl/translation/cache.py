"""A set-associative translation cache: tags in LUTRAM, payloads in RAM, two-stage lookups.

Every translation cache of the unit is one of these (the TLB per page size, the guest and EPT
paging-structure caches per level, the nested TLB). A key is split into the set index, its low
``log2(sets)`` bits (the lowest page-number bits of the address the entry translates: every
key of `keys.py` starts with them), and the tag, the rest. Each way has a tag memory (read
asynchronously: LUTRAM on the FPGA) and a payload memory (read synchronously: LUTRAM or block
RAM); valid bits and the pseudo-LRU state are flip-flops.

Lookup, one per cycle:
  cycle t    `lookup_key`: the set's tags are read and compared in every way -> `lookup_hit`
             (combinational, 0 while an invalidation scan runs). The set's payloads are read in
             every way at the set index alone (no compare result on a RAM address).
  cycle t+1  the way that hit selects `lookup_data` (it holds while `lookup_en` is 0).
Fill: registered at the input; in the next cycle the set's tags are read through the second tag
  port and the fill goes to the way already holding its key (a key is never held twice), else
  the lowest invalid way, else the set's pseudo-LRU way. A fill is visible to lookups two cycles
  after it is presented. A fill that meets an invalidation (the cycle it is accepted or any cycle
  of its scan) is dropped: dropping only costs a later walk, keeping it could keep a stale entry.
Replacement: a tree pseudo-LRU per set (ways - 1 bits), updated by lookup hits and fills.
Invalidation: `inval_en` (only while `busy` is 0) removes every valid entry whose key equals
  `inval_match` on the bits set in `inval_mask`. A zero mask (everything) clears the valid bits in
  that cycle. Any other mask starts a scan: one set per cycle through the second tag port, `busy`
  high for `sets` cycles, during which lookups miss and fills are dropped; the caller holds its
  requests until `busy` falls.
`entries=0` (sets or ways 0) builds a cache that never hits, to measure the walker without it.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

__all__ = ["SetAssocCache", "cache_geometry", "cache_of", "plru_victim", "plru_touch", "MAX_WAYS"]

#: Ways of a cache of `entries` entries when the caller does not say (at most this many).
MAX_WAYS = 4


def cache_geometry(entries, ways=MAX_WAYS):
    """(sets, ways) of a cache of `entries` entries with at most `ways` ways: a power-of-two
    number of sets, as many ways as `entries` allows up to `ways`."""
    if entries == 0:
        return 0, 0
    w = min(entries, ways)
    if entries % w or entries // w & (entries // w - 1):
        raise ValueError(f"{entries} entries are not a power-of-two number of sets of {w} ways")
    return entries // w, w


# --- tree pseudo-LRU ----------------------------------------------------------------------------
# State of one set: ways-1 bits, node n (1 = root, children 2n and 2n+1, leaves ways..2*ways-1 =
# ways 0..ways-1) stored at bit n-1; a bit of 0 sends the victim search to the lower half.

def plru_victim(state, ways):
    """The way a fill replaces when every way is valid (an Amaranth value)."""
    if ways == 1:
        return Const(0, 1)
    chosen = []                           # the victim's way bits, most significant first
    for level in range(exact_log2(ways)):
        nodes = [state[(1 << level) - 1 + j] for j in range(1 << level)]
        chosen.append(nodes[0] if level == 0 else Array(nodes)[Cat(*reversed(chosen))])
    return Cat(*reversed(chosen))


def plru_touch(state, way, ways):
    """The state after `way` (a `log2(ways)`-bit value) was used: every node on its path points
    away from it."""
    if ways == 1:
        return state
    levels = exact_log2(ways)
    out = [state[i] for i in range(ways - 1)]
    for level in range(levels):
        away = ~way[levels - level - 1]
        for j in range(1 << level):
            node = (1 << level) + j
            on_path = (way >> (levels - level)) == j
            out[node - 1] = Mux(on_path, away, state[node - 1])
    return Cat(*out)


def cache_of(entries, *, key_width, data_width, ways=MAX_WAYS):
    """A `SetAssocCache` of `entries` entries in the geometry `cache_geometry` gives."""
    sets, w = cache_geometry(entries, ways)
    return SetAssocCache(key_width=key_width, data_width=data_width, sets=sets, ways=w)


class SetAssocCache(wiring.Component):
    def __init__(self, *, key_width, data_width, sets, ways):
        assert sets >= 0 and ways >= 0 and (sets == 0) == (ways == 0)
        if sets:
            exact_log2(sets)
            exact_log2(ways)
        self.key_width = key_width
        self.data_width = data_width
        self.sets = sets
        self.ways = ways
        self.entries = sets * ways
        self.index_width = ceil_log2(sets) if sets else 0
        assert self.index_width <= key_width
        super().__init__({
            "lookup_key": In(key_width),
            "lookup_en": In(1),
            "lookup_hit": Out(1),
            "lookup_data": Out(data_width),
            "fill_en": In(1),
            "fill_key": In(key_width),
            "fill_data": In(data_width),
            "inval_en": In(1),
            "inval_mask": In(key_width),
            "inval_match": In(key_width),
            "busy": Out(1),
            # Valid bits, entry set * ways + way (for formal harnesses and debug).
            "valid": Out(max(1, self.entries)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.entries == 0:
            return m
        S, W, ib = self.sets, self.ways, self.index_width
        kw, dw = self.key_width, self.data_width
        tw = kw - ib

        def set_of(key):
            return key[:ib] if ib else Const(0, 1)

        def is_set(index, s):
            return (index == s) if ib else Const(1, 1)

        valid = Signal(S * W)
        m.d.comb += self.valid.eq(valid)

        def valid_of(s, w):
            """Valid bit of way `w` in set `s` (a value)."""
            if S == 1:
                return valid[w]
            return Array(valid[i * W + w] for i in range(S))[s]

        lk_tag, fs_tag, rd_pay, wr_tag, wr_pay = [], [], [], [], []
        for w in range(W):
            # At least two rows: a one-row memory would have a zero-width address in Verilog.
            tag_mem = memory.Memory(shape=max(1, tw), depth=max(2, S), init=[])
            pay_mem = memory.Memory(shape=dw, depth=max(2, S), init=[])
            m.submodules[f"tag{w}"] = tag_mem
            m.submodules[f"data{w}"] = pay_mem
            lk_tag.append(tag_mem.read_port(domain="comb"))
            fs_tag.append(tag_mem.read_port(domain="comb"))
            wr_tag.append(tag_mem.write_port())
            rd_pay.append(pay_mem.read_port())    # synchronous, not transparent
            wr_pay.append(pay_mem.write_port())

        def tag_of(key):
            return key[ib:] if tw else Const(0, 1)

        # --- scan state -------------------------------------------------------------------------
        busy = Signal()
        scan_set = Signal(max(1, ib))
        scan_mask = Signal(kw)
        scan_match = Signal(kw)
        m.d.comb += self.busy.eq(busy)

        # --- lookup: compare in cycle t, select in t+1 ------------------------------------------
        lk_set = set_of(self.lookup_key)
        match = Signal(W)
        for w in range(W):
            m.d.comb += [lk_tag[w].addr.eq(lk_set), rd_pay[w].addr.eq(lk_set),
                         rd_pay[w].en.eq(self.lookup_en)]
        m.d.comb += match.eq(Cat((lk_tag[w].data == tag_of(self.lookup_key)) & valid_of(lk_set, w)
                                 for w in range(W)))
        m.d.comb += self.lookup_hit.eq(match.any() & ~busy)

        sel = Signal(W)                   # the way that hit, one-hot, for the payload select
        sel_set = Signal(max(1, ib))
        touch = Signal()
        with m.If(self.lookup_en):
            m.d.sync += [sel.eq(match & ~busy.replicate(W)), sel_set.eq(lk_set),
                         touch.eq(self.lookup_hit)]
        with m.Else():
            m.d.sync += touch.eq(0)
        data = Const(0, dw)
        for w in range(W):
            data = data | (rd_pay[w].data & sel[w].replicate(dw))
        m.d.comb += self.lookup_data.eq(data)

        # --- fill -------------------------------------------------------------------------------
        fill_en = Signal()
        fill_key = Signal(kw)
        fill_data = Signal(dw)
        m.d.sync += [fill_en.eq(self.fill_en), fill_key.eq(self.fill_key),
                     fill_data.eq(self.fill_data)]
        fill_set = set_of(fill_key)
        port_set = Signal(max(1, ib))     # the second tag port: the scan's set, else the fill's
        m.d.comb += port_set.eq(Mux(busy, scan_set, fill_set))
        for w in range(W):
            m.d.comb += fs_tag[w].addr.eq(port_set)
        fill_match = Signal(W)
        invalid = Signal(W)
        m.d.comb += [
            fill_match.eq(Cat((fs_tag[w].data == tag_of(fill_key)) & valid_of(fill_set, w)
                              for w in range(W))),
            invalid.eq(Cat(~valid_of(fill_set, w) for w in range(W))),
        ]
        plru = Array(Signal(max(1, W - 1), name=f"plru{s}") for s in range(S))
        wb = max(1, ceil_log2(W))
        victim = Signal(wb)
        m.d.comb += victim.eq(plru_victim(plru[fill_set], W) if W > 1 else 0)
        for w in reversed(range(W)):
            with m.If(invalid[w]):
                m.d.comb += victim.eq(w)
        for w in reversed(range(W)):
            with m.If(fill_match[w]):
                m.d.comb += victim.eq(w)
        fill_go = Signal()
        m.d.comb += fill_go.eq(fill_en & ~self.inval_en & ~busy)
        tag_we = Signal(W)                # per way: the fill's tag and payload writes
        payload_we = Signal(W)
        m.d.comb += [tag_we.eq(Cat(fill_go & (victim == w) for w in range(W))),
                     payload_we.eq(tag_we)]
        for w in range(W):
            m.d.comb += [
                wr_tag[w].addr.eq(fill_set), wr_tag[w].data.eq(tag_of(fill_key)),
                wr_tag[w].en.eq(tag_we[w]),
                wr_pay[w].addr.eq(fill_set), wr_pay[w].data.eq(fill_data),
                wr_pay[w].en.eq(payload_we[w]),
            ]

        # --- pseudo-LRU: a fill's touch wins over a lookup's in the same set --------------------
        if W > 1:
            sel_way = Signal(wb)
            for w in range(W):
                with m.If(sel[w]):
                    m.d.comb += sel_way.eq(w)
            with m.If(touch):
                m.d.sync += plru[sel_set].eq(plru_touch(plru[sel_set], sel_way, W))
            with m.If(fill_go):
                m.d.sync += plru[fill_set].eq(plru_touch(plru[fill_set], victim, W))

        # --- valid bits: fills, scans, invalidate-all -------------------------------------------
        new_valid = Signal(S * W)
        m.d.comb += new_valid.eq(valid)
        with m.If(fill_go):
            for s in range(S):
                for w in range(W):
                    with m.If(is_set(fill_set, s) & (victim == w)):
                        m.d.comb += new_valid[s * W + w].eq(1)
        with m.If(busy):
            for w in range(W):
                key = Cat(scan_set[:ib], fs_tag[w].data[:tw]) if ib else fs_tag[w].data[:tw]
                kill = (key & scan_mask) == (scan_match & scan_mask)
                for s in range(S):
                    with m.If(is_set(scan_set, s) & kill):
                        m.d.comb += new_valid[s * W + w].eq(0)
        m.d.sync += valid.eq(new_valid)

        with m.If(self.inval_en & ~busy):
            with m.If(self.inval_mask == 0):
                m.d.sync += valid.eq(0)
            with m.Else():
                m.d.sync += [busy.eq(1), scan_set.eq(0), scan_mask.eq(self.inval_mask),
                             scan_match.eq(self.inval_match)]
        with m.If(busy):
            m.d.sync += scan_set.eq(scan_set + 1)
            with m.If(scan_set == S - 1):
                m.d.sync += busy.eq(0)
        return m

