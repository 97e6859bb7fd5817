"""Deliberately broken variants of the design, one per property: each must make its proof fail.

Nothing in rtl/ is edited. A mutation is either

- a subclass of `ObservedSetAssocCache` (itself the unchanged `SetAssocCache`) whose `mutate`
  hook adds a later assignment that overrides one internal combinational signal of the
  elaborated cache (in Amaranth the last assignment to a signal wins), or
- a broken replacement of a keys.py invalidation constructor, handed to the harness, or
- for the translation unit, a subclass of `Walker` / `TranslationUnit` that overrides signals of
  the elaborated module in the same way (see `tb/formal/unit.py`).
"""

from __future__ import annotations

from amaranth import Cat, Const, Mux

from rtl.arch import Invalidation
from rtl.translation import keys

from . import internal_signal
from .cache import ObservedSetAssocCache

# --- SetAssocCache -------------------------------------------------------------------------------


class FillIgnoresSameKey(ObservedSetAssocCache):
    """A fill never looks for a way already holding its key: it takes a free or pseudo-LRU way,
    so the key can end up in two ways (breaks `unique`)."""

    def mutate(self, m):
        m.d.comb += internal_signal(m, "fill_match").eq(0)


class FillWritesWrongEntry(ObservedSetAssocCache):
    """The payload of a fill is written to the next way of the set instead of the way that
    takes its tag (breaks `hit_data`)."""

    def mutate(self, m):
        tag_we = internal_signal(m, "tag_we")
        m.d.comb += internal_signal(m, "payload_we").eq(Cat(tag_we[-1], tag_we[:-1]))


def lookup_ignores_high_bits(ignored):
    """A cache whose tag compare ignores the top `ignored` key bits (for a TLB-shaped key: the
    VPID), so an entry of one VPID answers for another (breaks `isolation`)."""

    class LookupIgnoresHighBits(ObservedSetAssocCache):
        def mutate(self, m):
            cut = self.key_width - ignored
            ib, W = self.index_width, self.ways
            key = self.lookup_key
            match = internal_signal(m, "match")
            m.d.comb += match.eq(Cat(
                Cat(((key[:ib] == s) if ib else Const(1, 1))
                    & self.obs_valid[s * W + w]
                    & (self.obs_keys[s * W + w][:cut] == key[:cut])
                    for s in range(self.sets)).any()
                for w in range(W)))

    return LookupIgnoresHighBits


class IgnoresInvalidation(ObservedSetAssocCache):
    """`inval_en` is never acted on: no scan starts, a zero mask clears nothing (breaks
    `inval`)."""

    def mutate(self, m):
        busy = self.obs_busy
        new_valid = internal_signal(m, "new_valid")
        m.d.sync += busy.eq(0)
        with m.If(self.inval_en):
            m.d.sync += self.obs_valid.eq(new_valid)


class ScanEndsEarly(ObservedSetAssocCache):
    """The invalidation scan stops before the last set (breaks `inval`: an entry of the last
    set survives)."""

    def mutate(self, m):
        busy, (scan_set, _, _) = self.obs_busy, self.obs_scan
        with m.If(busy & (scan_set == self.sets - 2)):
            m.d.sync += busy.eq(0)


class HitsDuringScan(ObservedSetAssocCache):
    """Lookups are answered while the scan runs, from sets it has not reached (breaks
    `inval`)."""

    def mutate(self, m):
        m.d.comb += self.lookup_hit.eq(internal_signal(m, "match").any())


class FillsDuringScan(ObservedSetAssocCache):
    """A fill that meets a scan is kept (breaks `inval`: a fill from before the invalidation
    lands in a set the scan has passed)."""

    def mutate(self, m):
        m.d.comb += internal_signal(m, "fill_go").eq(
            self.obs_fill[0] & ~self.inval_en)


# --- keys.py invalidation constructors -----------------------------------------------------------


def linear_inval_vpid_ignores_vpid(inv, kind_ok_addr, low_width, maxphyaddr, addr_lo=None):
    """Invalidation by VPID that ignores the VPID: every entry goes (breaks `inval_precise`)."""
    en, mask, match = keys.linear_inval(inv, kind_ok_addr, low_width, maxphyaddr, addr_lo)
    is_vpid = inv.kind == Invalidation.VPID
    return en, Mux(is_vpid, 0, mask), Mux(is_vpid, 0, match)


def linear_inval_addr_ignored(inv, kind_ok_addr, low_width, maxphyaddr, addr_lo=None):
    """Invalidation of one address (INVLPG / INVVPID individual) that compares the address under
    the wrong VPID bits: it matches the address and a VPID of 0 (breaks `inval`)."""
    en, mask, match = keys.linear_inval(inv, kind_ok_addr, low_width, maxphyaddr, addr_lo)
    is_addr = inv.kind == Invalidation.VPID_ADDR
    total = len(mask)
    vpid_lo = total - keys.VPID_WIDTH
    bad_match = Cat(match[:vpid_lo], Const(0, keys.VPID_WIDTH))
    return en, mask, Mux(is_addr, bad_match, match)


def physical_inval_no_eptp(inv, low_width, maxphyaddr):
    """INVEPT single-context does not reach guest-physical caches (breaks `inval`)."""
    en, mask, match = keys.physical_inval(inv, low_width, maxphyaddr)
    return en & (inv.kind == Invalidation.ALL), mask, match


# --- TranslationUnit -----------------------------------------------------------------------------

from amaranth.lib import data as _data  # noqa: E402

from rtl.arch import Outcome  # noqa: E402
from rtl.translation.walker import WalkState, walk_context_layout  # noqa: E402

from .unit import ObservedUnit, ObservedWalker  # noqa: E402


class WalkerWritesOnFault(ObservedWalker):
    """A walk that faults still commits the accessed/dirty writes it collected before the
    fault, then responds (breaks `no_fault_writes`)."""

    def mutate(self, m):
        layout = walk_context_layout(tag_width=self.tag_width, ctx_width=self.ctx_width,
                                     maxphyaddr=self.maxphyaddr)
        nxt = _data.View(layout, internal_signal(m, "e1_next"))
        nstate = internal_signal(m, "e1_next_state")
        e1_valid = internal_signal(m, "e1_valid", "sync")
        e1_ctx = internal_signal(m, "e1_ctx", "sync")
        fault_with_writes = (e1_valid & (nstate == WalkState.DONE)
                             & (nxt.outcome != Outcome.OK) & (nxt.nwrites != 0))
        states = [internal_signal(m, f"w{i}_state", "sync") for i in range(self.contexts)]
        for i in range(self.contexts):
            with m.If(fault_with_writes & (e1_ctx == i)):
                m.d.sync += states[i].eq(WalkState.COMMIT)


class WalkerReadTagZero(ObservedWalker):
    """Every memory request carries tag 0 instead of its walk context's number (breaks
    `mem_tags` with two contexts)."""

    def mutate(self, m):
        m.d.sync += self.mem_req.payload.tag.eq(0)


class WalkerUnstableRequest(ObservedWalker):
    """The memory request register changes its address while the port stalls (breaks
    `stable`)."""

    def mutate(self, m):
        with m.If(self.mem_req.valid & ~self.mem_req.ready):
            m.d.sync += self.mem_req.payload.addr.eq(self.mem_req.payload.addr ^ 8)


class WalkerDoneAtIssue(ObservedWalker):
    """The committer marks the walk DONE when its last accessed/dirty write enters the port's
    register instead of when memory accepts it, so the response can be offered while the write
    still waits (the bug `unit-writes_first` once found; breaks `writes_first`)."""

    def mutate(self, m):
        cm_take = internal_signal(m, "cm_take")
        cm_next = internal_signal(m, "cm_next", "sync")
        cm_count = internal_signal(m, "cm_count", "sync")
        cm_ctx = internal_signal(m, "cm_ctx", "sync")
        cm_busy = internal_signal(m, "cm_busy", "sync")
        cm_drain = internal_signal(m, "cm_drain", "sync")
        states = [internal_signal(m, f"w{i}_state", "sync") for i in range(self.contexts)]
        with m.If(cm_busy & ~cm_drain & cm_take & (cm_next == cm_count)):
            m.d.sync += [cm_busy.eq(0), cm_drain.eq(0)]
            for i in range(self.contexts):
                with m.If(cm_ctx == i):
                    m.d.sync += states[i].eq(WalkState.DONE)


def unit_with_walker(walker_cls):
    return type(f"UnitWith{walker_cls.__name__}", (ObservedUnit,), {"walker_cls": walker_cls})


class UnitRepeatsFaultResponse(ObservedUnit):
    """A response that reports a fault stays valid after it is taken, so the request is
    answered twice (breaks `once`)."""

    def mutate(self, m):
        with m.If(self.resp.valid & self.resp.ready & (self.resp.payload.outcome != Outcome.OK)):
            m.d.sync += self.resp.valid.eq(1)


class UnitLosesGeneralProtection(ObservedUnit):
    """The immediate general-protection answer of a non-canonical address is never sent: the
    request leaves the front end but no response comes (breaks `bounded`)."""

    def mutate(self, m):
        with m.If(internal_signal(m, "imm_gp")):
            m.d.sync += self.resp.valid.eq(0)


# --- VmxUnit ---------------------------------------------------------------------------------------
# Subclasses of `tb.formal.vmx.ObservedVmxUnit` whose `mutate` adds a later assignment to the
# elaborated unit's module (the harness calls it after building the unit); see tb/formal/vmx.py.

from rtl.arch.vmx import VmInstructionError, VmxMode, VmxOp, VmxResult  # noqa: E402
from rtl.vmx.decision import VmxAction as _Act  # noqa: E402

from .vmx import ObservedVmxUnit, module_signal  # noqa: E402


def _vmx_decided(unit):
    """The instruction the unit is deciding in IDLE: the offered one (the unit's `d`)."""
    return unit.instr.payload


class VmxInstrExitLeavesNonRoot(ObservedVmxUnit):
    """An instruction that causes a VM exit in VMX non-root operation (answered VM_EXIT) also
    puts the unit back in root operation, instead of waiting for the exit on the `exit` port
    (breaks `mode`)."""

    def mutate(self, m):
        d = _vmx_decided(self)
        mode = module_signal(m, "mode", "sync")
        accept, o_kind = module_signal(m, "accept"), module_signal(m, "o_kind")
        with m.If(accept & ~d.precheck & (o_kind == VmxResult.VM_EXIT.value)
                  & (mode == VmxMode.NON_ROOT.value)):
            m.d.sync += mode.eq(VmxMode.ROOT.value)


class VmxVmptrldSkipsAddressCheck(ObservedVmxUnit):
    """VMPTRLD does not reject a pointer that is not 4 KiB aligned or reaches MAXPHYADDR
    (error 9 becomes a VMPTRLD; breaks `ptr`)."""

    def mutate(self, m):
        d = _vmx_decided(self)
        o_err, o_act, o_kind = (module_signal(m, n) for n in ("o_err", "o_act", "o_kind"))
        with m.If((d.op == VmxOp.VMPTRLD)
                  & (o_err == VmInstructionError.VMPTRLD_INVALID_ADDRESS.value)):
            m.d.comb += [o_act.eq(_Act.VMPTRLD.value), o_kind.eq(VmxResult.SUCCEED.value)]


class VmxFillTagOfCurrent(ObservedVmxUnit):
    """The slot a VMPTRLD miss fills is tagged with the old current-VMCS pointer instead of the
    loaded region's address, so two slots can hold one VMCS (breaks `unique`)."""

    def mutate(self, m):
        cur = module_signal(m, "cur_ptr", "sync")
        with m.If(self.cache.fill):
            m.d.comb += self.cache.fill_tag.eq(cur[12:self.maxphyaddr])


class VmxHighWriteClearsLow(ObservedVmxUnit):
    """A VMWRITE of the high access of a 64-bit field clears the field's low half instead of
    keeping it (breaks `vmrw`)."""

    def mutate(self, m):
        f_high, value = module_signal(m, "f_high"), module_signal(m, "vmwrite_value")
        halves = module_signal(m, "vmwrite_halves")
        with m.If(f_high):
            m.d.comb += [value[0:32].eq(0), halves.eq(0b11)]


class VmxCopyIgnoresWrites(ObservedVmxUnit):
    """A VMPTRLD's copy into the working copy reads a row of the wide copy in the cycle a write
    goes into that row (the copy no longer sees the cache's writes), so the working copy takes
    what the block RAM leaves undefined (breaks `vmrw`)."""

    def mutate(self, m):
        m.d.comb += self.blocks["row_copy"].wr_en.eq(0)
