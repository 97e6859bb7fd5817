"""Formal harness of `SetAssocCache`, the set-associative cache every TLB, paging-structure
cache and the nested TLB are built from, together with the key and invalidation construction of
`rtl/translation/keys.py` as the unit wires it.

The environment is free: every cycle the solver picks a lookup (key, enable), a fill (enable,
key, payload) and an invalidation. One key `K` is symbolic (`AnyConst`): whatever holds for `K`
holds for every key. The harness keeps a shadow of what the cache should know about `K`:

    ever   K has been filled at least once
    have   K was filled and no invalidation covering K came after that fill
    data   the payload of K's last fill
    dead   an invalidation covering K came after K's last fill

A fill is registered at the cache's input: presented in cycle t, it takes effect at the end of
cycle t+1 unless an invalidation is applied in that cycle or a scan runs (then it is dropped, so
no stale translation survives the invalidation). The harness models exactly that, with its own
copy of the input register. The environment applies invalidations only while the cache is not
busy (the unit's contract); an invalidation's effect is judged in the first cycle after its
scan, when the cache answers lookups again.

Properties (each can be selected on its own; see `PROPERTIES`):

    hit_data       a lookup of K that hits returns, one cycle later (non-transparent read
                   port), exactly the payload of K's last fill
    isolation      a lookup of K hits only if K itself (same VA / GPA bits, same EPT tag, same
                   VPID) was filled: entries of one VPID or EPTP never answer for another
    inval          after an invalidation that covers K (spec terms: ALL; VPID; EPTP; VPID+address)
                   a lookup of K misses until K is filled again
    inval_precise  an invalidation that does not cover K leaves K's entry in the cache: K hits
                   in the first cycle after the invalidation (after its scan)
    unique         no two valid entries hold the same key
    scan_clean     when an invalidation's scan ends, no valid entry matches its mask and match
                   (whatever the key; the structural form of `inval`)

Auxiliary assertions (always on, so proven too; they make k-induction close): the harness's
fill register equals the cache's, the scan position is a set, every valid entry whose key is
K holds `have` and `data` unless the running scan removes K and has not reached K's set yet, and
the sets a running scan has passed hold no entry it removes (entries read through comb read
ports added to the cache's memories, outside the RTL source).

Key schemes (`scheme`):

    raw                    key, mask and match are free bit vectors (the cache's own contract:
                           an invalidation clears every key with key & mask == match & mask)
    tlb4k, tlb2m, tlb1g    keys.tlb_key / keys.linear_inval(addr_lo=shift), as the TLB arrays
    gpsc1, gpsc2, gpsc3    keys.gpsc_key / keys.linear_inval without address (guest PSC, level)
    epsc1, epsc2, epsc3    keys.epsc_key / keys.physical_inval (EPT PSC, level)
    nested                 keys.nested_key / keys.physical_inval (nested TLB)

In the structured schemes the lookup and fill keys are built by keys.py from free fields (GLA or
GPA, EPT enable, EPTP, VPID) and the invalidation from a free invalidation record; whether an
invalidation covers K is decided by the harness from K's fields in the spec's words, not from the
mask and match.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Signal
from amaranth.lib import data

from rtl import arch
from rtl.arch import Invalidation
from rtl.translation import keys
from rtl.translation.cache import SetAssocCache
from rtl.translation.layouts import invalidation_layout

from . import AnyConst, AnySeq, Assert, Cover, FormalTop, internal_signal, past

PROPERTIES = ("hit_data", "isolation", "inval", "inval_precise", "unique", "scan_clean")
SCHEMES = ("raw", "tlb4k", "tlb2m", "tlb1g", "gpsc1", "gpsc2", "gpsc3",
           "epsc1", "epsc2", "epsc3", "nested")
INVAL_KINDS = ("ALL", "VPID", "EPTP", "VPID_ADDR")


class ObservedSetAssocCache(SetAssocCache):
    """`SetAssocCache` exactly as in rtl/, plus handles on its internal state for the harness,
    entry `e` = set * ways + way: `obs_keys` (the key each entry holds: its set index and the
    tag memory's row), `obs_mem` (its payload), both through combinational read ports added to
    the memories (read ports do not change what a memory holds); `obs_valid`, `obs_fill` (the
    registered fill: en, key, data), `obs_busy` and `obs_scan` (set, mask, match of the running
    scan). Mutations subclass this and override `mutate`."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.entries == 0:
            return m
        ib, kw = self.index_width, self.key_width
        tw = kw - ib
        self.obs_valid = internal_signal(m, "valid", "sync")
        self.obs_fill = tuple(internal_signal(m, name, "sync")
                              for name in ("fill_en", "fill_key", "fill_data"))
        self.obs_busy = internal_signal(m, "busy", "sync")
        self.obs_scan = tuple(internal_signal(m, name, "sync")
                              for name in ("scan_set", "scan_mask", "scan_match"))
        self.obs_keys, self.obs_mem = [], []
        for s in range(self.sets):
            for w in range(self.ways):
                tag = m.submodules[f"tag{w}"].read_port(domain="comb")
                pay = m.submodules[f"data{w}"].read_port(domain="comb")
                m.d.comb += [tag.addr.eq(s), pay.addr.eq(s)]
                key = Signal(kw, name=f"obs_key{s}_{w}")
                m.d.comb += key.eq(Cat(Const(s, ib), tag.data[:tw]) if ib else tag.data[:tw])
                self.obs_keys.append(key)
                self.obs_mem.append(pay.data)
        self.mutate(m)
        return m

    def mutate(self, m):
        """Hook for mutations (tb/formal/mutations.py): add overriding statements to `m`."""


# --- key schemes -------------------------------------------------------------------------------

class _Scheme:
    """How keys and invalidations are made for one kind of cache."""

    def __init__(self, name, maxphyaddr, raw_key_width):
        self.name = name
        M = self.M = maxphyaddr
        self.tw = keys.eptag_width(M)
        if name == "raw":
            self.kind = "raw"
            self.key_width = raw_key_width
        elif name.startswith("tlb"):
            self.kind = "linear"
            self.shift = {"tlb4k": 12, "tlb2m": 21, "tlb1g": 30}[name]
            self.addr = True
            self.low = 48 - self.shift
            self.key_width = keys.tlb_key_width(self.shift, M)
        elif name.startswith("gpsc"):
            self.kind = "linear"
            self.level = int(name[-1])
            self.shift = arch.level_shift(self.level)
            self.addr = False
            self.low = 48 - self.shift
            self.key_width = keys.gpsc_key_width(self.level, M)
        elif name.startswith("epsc") or name == "nested":
            self.kind = "physical"
            self.level = 0 if name == "nested" else int(name[-1])
            self.shift = arch.level_shift(self.level)
            self.low = M - self.shift
            self.key_width = (keys.nested_key_width(M) if name == "nested"
                              else keys.epsc_key_width(self.level, M))
        else:
            raise ValueError(f"unknown scheme {name!r}")

    def free_key(self, m, name):
        """A key as the unit would present it, from free fields."""
        if self.kind == "raw":
            return AnySeq(self.key_width)
        M = self.M
        ctx = SimpleNamespace(ept_enable=AnySeq(1), eptp=AnySeq(64))
        tag = keys.eptag(ctx, M)
        addr = AnySeq(64)
        if self.name.startswith("tlb"):
            key = keys.tlb_key(addr, self.shift, tag, AnySeq(keys.VPID_WIDTH))
        elif self.name.startswith("gpsc"):
            key = keys.gpsc_key(addr, self.level, tag, AnySeq(keys.VPID_WIDTH))
        elif self.name.startswith("epsc"):
            key = keys.epsc_key(addr[:M], self.level, tag, M)
        else:
            key = keys.nested_key(addr[:M], tag, M)
        sig = Signal(self.key_width, name=name)
        m.d.comb += sig.eq(key)
        assert len(key) == self.key_width
        return sig

    def inval(self, m, linear_inval=keys.linear_inval, physical_inval=keys.physical_inval):
        """(inv record or None, enable, mask, match) as the unit wires them."""
        if self.kind == "raw":
            return None, Const(1, 1), AnySeq(self.key_width), AnySeq(self.key_width)
        inv = Signal(invalidation_layout(), name="inv")
        m.d.comb += inv.eq(AnySeq(len(inv.as_value())))
        if self.kind == "linear":
            en, mask, match = linear_inval(inv, self.addr, self.low, self.M,
                                           addr_lo=self.shift if self.addr else None)
        else:
            en, mask, match = physical_inval(inv, self.low, self.M)
        return inv, en, mask, match

    def covers(self, key, inv, mask, match):
        """Does the invalidation cover `key`?  raw: the mask/match contract; otherwise the
        spec's words, from the key's fields (VA/GPA bits, EPT tag, VPID)."""
        if self.kind == "raw":
            return (key & mask) == (match & mask)
        M, low, tw = self.M, self.low, self.tw
        va = key[:low]
        tag = key[low:low + tw]
        ep4ta, tag_on = tag[:M - 12], tag[M - 11]
        kind = inv.kind
        same_ept = tag_on & (ep4ta == inv.eptp[12:M])
        if self.kind == "linear":
            vpid = key[low + tw:]
            same_vpid = vpid == inv.vpid
            same_addr = (va == inv.gla[self.shift:48]) if self.addr else Const(1, 1)
            return ((kind == Invalidation.ALL)
                    | ((kind == Invalidation.VPID) & same_vpid)
                    | ((kind == Invalidation.EPTP) & same_ept)
                    | ((kind == Invalidation.VPID_ADDR) & same_vpid & same_addr))
        return (kind == Invalidation.ALL) | ((kind == Invalidation.EPTP) & same_ept)


def _matches(key, mask, match):
    return (key & mask) == (match & mask)


def _after_invalidation(m, busy, event, name):
    """1 in the first cycle after the invalidation applied when `event` was 1 has finished: the
    next cycle for a one-cycle clear, the first cycle after its scan otherwise."""
    flag = Signal(name=name)
    with m.If(event):
        m.d.sync += flag.eq(1)
    with m.Elif(~busy):
        m.d.sync += flag.eq(0)
    return flag & ~busy


# --- the harness -------------------------------------------------------------------------------

class CacheHarness(FormalTop):
    """`SetAssocCache` in a free environment with the shadow of one symbolic key (module doc).

    `props`: the properties asserted (all by default); `covers`: emit the non-vacuity covers
    instead of the assertions; `aux`: also assert the auxiliary assertions (and `unique`),
    which k-induction needs (mutation checks turn them off, so that the property itself must
    catch the mutation); `cache_cls`: the cache class (mutations pass a broken one);
    `linear_inval`/`physical_inval`: the invalidation constructors (mutations pass broken ones).
    """

    def __init__(self, *, scheme="raw", sets=2, ways=2, key_width=4, data_width=3,
                 maxphyaddr=40, props=PROPERTIES, covers=False, aux=True,
                 cache_cls=ObservedSetAssocCache,
                 linear_inval=keys.linear_inval, physical_inval=keys.physical_inval):
        super().__init__()
        self.scheme = _Scheme(scheme, maxphyaddr, key_width)
        self.sets, self.ways = sets, ways
        self.data_width = data_width
        self.props = set(props)
        assert self.props <= set(PROPERTIES), self.props
        self.covers = covers
        self.aux = aux
        self.cache_cls = cache_cls
        self.linear_inval = linear_inval
        self.physical_inval = physical_inval

    def elaborate(self, platform):
        m = self.formal_module()
        sc = self.scheme
        n = self.sets * self.ways
        kw, dw = sc.key_width, self.data_width
        cache = self.cache_cls(key_width=kw, data_width=dw, sets=self.sets, ways=self.ways)
        # Elaborated here (not by Amaranth later) so the harness gets the `obs_*` handles.
        m.submodules.cache = cache.elaborate(platform)
        cache._MustUse__silence = True

        # --- free environment, wired as the unit wires it -------------------------------------
        lookup_key = sc.free_key(m, "lookup_key")
        fill_key = sc.free_key(m, "fill_key")
        fill_data = AnySeq(dw)
        fill_en = AnySeq(1)
        lookup_en = AnySeq(1)
        # The unit's "apply an invalidation now": never while a scan runs (the unit waits).
        inval_go = Signal(name="inval_go")
        busy = cache.obs_busy
        m.d.comb += inval_go.eq(AnySeq(1) & ~busy)
        inv, inv_en, mask, match = sc.inval(m, self.linear_inval, self.physical_inval)
        applied = Signal()
        m.d.comb += [
            applied.eq(inval_go & inv_en),
            cache.lookup_key.eq(lookup_key), cache.lookup_en.eq(lookup_en),
            cache.fill_en.eq(fill_en), cache.fill_key.eq(fill_key),
            cache.fill_data.eq(fill_data),
            cache.inval_en.eq(applied), cache.inval_mask.eq(mask), cache.inval_match.eq(match),
        ]

        # --- shadow of the symbolic key K -----------------------------------------------------
        K = Signal(kw, name="K")
        m.d.comb += K.eq(AnyConst(kw))
        covered = Signal(name="covered")          # this cycle's invalidation covers K
        m.d.comb += covered.eq(inval_go & sc.covers(K, inv, mask, match))

        p_en = Signal(name="p_fill_en")           # the harness's copy of the fill register
        p_key = Signal(kw, name="p_fill_key")
        p_data = Signal(dw, name="p_fill_data")
        m.d.sync += [p_en.eq(fill_en), p_key.eq(fill_key), p_data.eq(fill_data)]
        commit_k = Signal(name="commit_k")         # K's fill takes effect at the end of this cycle
        m.d.comb += commit_k.eq(p_en & (p_key == K) & ~applied & ~busy)

        ever = Signal(name="k_ever")
        have = Signal(name="k_have")
        dead = Signal(name="k_dead")
        kdata = Signal(dw, name="k_data")
        with m.If(covered):
            m.d.sync += [have.eq(0), dead.eq(1)]
        with m.Elif(commit_k):
            m.d.sync += [ever.eq(1), have.eq(1), dead.eq(0), kdata.eq(p_data)]

        hit_k = Signal(name="hit_k")
        m.d.comb += hit_k.eq((lookup_key == K) & cache.lookup_hit)
        prev_read_k = past(m, lookup_en & hit_k, "prev_read_k")
        prev_kdata = past(m, kdata, "prev_k_data")
        # K was present when an invalidation that does not cover it was applied, and that
        # invalidation has just finished (its scan, if any, is over).
        prev_precise = _after_invalidation(m, busy, applied & hit_k & ~covered, "precise")

        if self.covers:
            self._covers(m, sc, cache, inv, covered, hit_k, prev_read_k, prev_kdata,
                         prev_precise, applied, lookup_key, K, busy)
            return m

        # --- auxiliary assertions (inductive strengthening) -----------------------------------
        if self.aux or "unique" in self.props:
            # `unique` is asserted in every proof: the other properties' induction needs it.
            for i in range(n):
                for j in range(i + 1, n):
                    m.d.comb += Assert(
                        ~(cache.obs_valid[i] & cache.obs_valid[j]
                          & (cache.obs_keys[i] == cache.obs_keys[j])), f"unique {i} {j}")
        if self.aux:
            c_en, c_key, c_data = cache.obs_fill
            m.d.comb += Assert((c_en == p_en) & (c_key == p_key) & (c_data == p_data),
                               "aux: fill register")
            m.d.comb += Assert(~have | (ever & ~dead), "aux: shadow")
            scan_set, scan_mask, scan_match = cache.obs_scan
            m.d.comb += Assert(~busy | (scan_set < self.sets), "aux: scan position")
            # An entry holding K is current, unless the running scan removes K and has not
            # reached K's set yet.
            scan_kills_k = busy & _matches(K, scan_mask, scan_match)
            # The sets the running scan has passed hold no entry it removes.
            for i in range(n):
                m.d.comb += Assert(
                    ~(busy & (i // self.ways < scan_set) & cache.obs_valid[i]
                      & _matches(cache.obs_keys[i], scan_mask, scan_match)),
                    f"aux: scanned entry {i}")
            for i in range(n):
                holds_k = cache.obs_valid[i] & (cache.obs_keys[i] == K)
                pending = scan_kills_k & (scan_set <= i // self.ways)
                m.d.comb += Assert(~holds_k | (have & (cache.obs_mem[i] == kdata)) | pending,
                                   f"aux: entry {i} holding K")

        # --- the properties -------------------------------------------------------------------
        if "hit_data" in self.props:
            m.d.comb += Assert(~prev_read_k | (cache.lookup_data == prev_kdata), "hit_data")
        if "isolation" in self.props:
            m.d.comb += Assert(~hit_k | ever, "isolation")
        if "inval" in self.props:
            m.d.comb += Assert(~hit_k | ~dead, "inval")
        if "scan_clean" in self.props:
            scan_set, scan_mask, scan_match = cache.obs_scan
            ended = past(m, busy, "was_busy") & ~busy
            for i in range(n):
                m.d.comb += Assert(~(ended & cache.obs_valid[i] & _matches(
                    cache.obs_keys[i], scan_mask, scan_match)), f"scan_clean {i}")
        if "inval_precise" in self.props:
            m.d.comb += Assert(~(prev_precise & (lookup_key == K)) | cache.lookup_hit,
                               "inval_precise")
        return m

    def _covers(self, m, sc, cache, inv, covered, hit_k, prev_read_k, prev_kdata,
                prev_precise, applied, lookup_key, K, busy):
        """Non-vacuity: each property's antecedent happens."""
        m.d.comb += [
            Cover(prev_read_k & (cache.lookup_data == prev_kdata) & (prev_kdata != 0),
                  "hit returns K's fill"),
            Cover(prev_precise & (lookup_key == K) & cache.lookup_hit,
                  "K survives an invalidation that does not cover it"),
            Cover(cache.obs_valid.all(), "cache full"),
        ]
        # K present, then an invalidation of each kind removes it.
        if sc.kind == "raw":
            killed = _after_invalidation(m, busy, hit_k & applied & covered, "killed")
            m.d.comb += Cover(killed & (lookup_key == K) & ~cache.lookup_hit,
                              "invalidation removes K")
            return
        kinds = INVAL_KINDS if sc.kind == "linear" else ("ALL", "EPTP")
        for kname in kinds:
            kind_now = applied & covered & (inv.kind == Invalidation[kname])
            killed = _after_invalidation(m, busy, hit_k & kind_now, f"killed_{kname}")
            m.d.comb += Cover(killed & (lookup_key == K) & ~cache.lookup_hit,
                              f"invalidation {kname} removes K")
