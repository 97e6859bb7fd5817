"""Formal harness of the VMX unit (`rtl.vmx.unit.VmxUnit`, with its `VmcsCache`).

The unit is built unchanged (small configuration: 2 cache slots, MAXPHYADDR 32, the smallest
`VmEntryChecks` accepts) and driven by free inputs that keep the stream rules.

Environment (assumptions):

- `instr`: valid stays up and the payload stays unchanged until `ready` (stream rules); the
  instruction and its operands and processor state are otherwise free;
- `exit`: valid stays up until `ready`; the payload is free;
- `mem_resp`: valid only while a read is outstanding (reads taken on `mem_req` minus responses
  taken), held until `ready` with the data unchanged; the data is free (any memory contents);
- `result.ready`, `mem_req.ready`, `inval.ready`, `exit_resp.ready`, `msr_addr`: free.

Abstractions (cut points; each replaces a signal of the design by a free value, so the harness
has every behaviour of the real design and more: a safety property proven with the cut holds
without it):

- `data`: the read data of the VMCS cache's field memory and of its wide copy
  (`VmcsCache.rd_data`, `row_data`) is free in every cycle, so both memories drop out of the
  model; for `vmrw` (VMREAD answers from the field memory, the working copy takes rows of the
  wide copy) except field F: the harness keeps F's row of each slot as a register written as
  the write port writes it (per 32-bit half) and read as the synchronous read ports read it, and
  a read of F's row returns it (a read of the wide row that holds F: in F's lane, the other lanes
  free);
- `checks`: `VmEntryChecks` is replaced by a block whose outputs (`done`, `result`,
  `link_read_needed`, `link_addr`) are free in every cycle: any check outcome at any time;
- `wc` (properties `mode`, `ptr`, `unique` only): the working copy of the current VMCS is free
  in every cycle, so every decision that reads a VMCS field may go either way.

Properties (`PROPERTIES`):

    mode    the VMX mode changes only as the SDM allows: OUTSIDE -> ROOT exactly when a VMXON
            is answered SUCCEED; ROOT -> OUTSIDE exactly when a VMXOFF is answered SUCCEED;
            ROOT -> NON_ROOT only while a VMLAUNCH/VMRESUME is executing, and such an
            instruction is answered VM_ENTRY exactly when it did; NON_ROOT -> ROOT exactly on
            a VM exit taken on the `exit` port (an instruction answered VM_EXIT in non-root
            operation leaves the mode alone: the core then reports the exit on `exit`);
            nothing else (never OUTSIDE <-> NON_ROOT)
    ptr     the current-VMCS pointer is all ones, or 4 KiB aligned, below 2^MAXPHYADDR and not
            the VMXON pointer; outside VMX operation it is all ones
    unique  no two valid VMCS-cache slots hold the same VMCS (region address tag)
    vmrw    for one symbolic field F (any of `FIELDS`): a VMREAD of F answered SUCCEED returns
            what the VMWRITEs of F answered SUCCEED since the last other VMCS-changing event
            wrote, as the field's width, the operand size (32 bits outside 64-bit mode: zero-
            extended on write, truncated on read) and the high access (bits 63:32 of a 64-bit
            field) make it; events that end the comparison: any instruction other than VMREAD,
            VMWRITE, VMPTRST or a precheck, and a VM exit on the `exit` port

Auxiliary assertions (`lemmas=True`, proven with the properties) relate the harness's record of
the instruction in flight to the unit's sequencer (its FSM state `seq`, the instruction
register `q`, the region register `base`) so that k-induction closes.

`start="state"` (covers and mutation checks only): at step 0 no input is valid and the harness
overrides the next value of the unit's architectural registers (mode, VMXON pointer, current-
VMCS pointer, working-copy slot, cache tags/valid/launch state, working copy) with free
constants that satisfy the invariants proven here; the design then runs from step 1 from a
state that VMXON and VMPTRLDs of free memory reach, without the ~140 cycles a VMPTRLD miss
spends loading the fields (see docs/formal.md for the argument).
"""

from __future__ import annotations

import contextlib

from amaranth import Array, Cat, Const, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import FIELDS, INVALID_VMCS_POINTER, VmxMode, VmxOp, VmxResult
from rtl.vmx import entry_sequence as entry_sequence_module
from rtl.vmx import unit as unit_module
from rtl.vmx.exit_fields import EXIT_WRITTEN_FIELDS
from rtl.vmx.layouts import ENTRY_CHECK_RESULT_LAYOUT, WORKING_FIELDS, member_name
from rtl.vmx.unit import VmxUnit
from rtl.vmx.vmcs_cache import FIELD_LANES, VmcsCache, field_lane, field_row

from . import (AnyConst, AnySeq, Assert, Assume, Cover, FormalTop, internal_signal,
                internal_signals, past)

PROPERTIES = ("mode", "ptr", "unique", "vmrw")
#: Properties that need the working copy (the others are proven with it cut).
NEEDS_WC = {"vmrw"}


# --- finding internal signals of modules with FSMs -------------------------------------------------

def module_signals(module, domain=None):
    """`tb.formal.internal_signals` of a module with FSMs: flushes the module's control stack
    first so that FSM state signals exist (so only outside an open control block of `module`)."""
    module._flush()
    return internal_signals(module, domain)


def module_signal(module, name, domain=None):
    module._flush()
    return internal_signal(module, name, domain)


def fsm_state(module, name):
    """(state signal, {state name: encoding}) of FSM `name` of an elaborated `Module`."""
    module._flush()
    fsm = module._generated[name]
    return fsm._data["signal"], dict(fsm.encoding)


@contextlib.contextmanager
def _patched(module, **values):
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


# --- observed / abstracted sub-blocks --------------------------------------------------------------

class ObservedVmcsCache(VmcsCache):
    """`VmcsCache` as in rtl/; keeps its elaborated module (`self.module`) for observation. With
    `free_data` the field memory's read data is a free value (cut point)."""

    free_data = True

    def elaborate(self, platform):
        m = super().elaborate(platform)
        self.module = m
        if self.free_data:
            m.d.comb += [self.rd_data.eq(AnySeq(64)),
                         self.row_data.eq(AnySeq(64 * FIELD_LANES))]
        self.mutate(m)
        return m

    def mutate(self, m):
        """Hook for mutations."""


class FreeEntryChecks(wiring.Component):
    """Stand-in for `VmEntryChecks` (same ports): every output free in every cycle."""

    def __init__(self, *, maxphyaddr=None, revision_id=None):
        from rtl.vmx.layouts import CPU_STATE_LAYOUT, WORKING_LAYOUT
        super().__init__({
            "vmcs": In(WORKING_LAYOUT), "cpu": In(CPU_STATE_LAYOUT), "link_revision": In(32),
            "current_vmcs": In(64), "link_read_needed": Out(1), "link_addr": Out(64),
            "start": In(1), "done": Out(1),
            "result": Out(ENTRY_CHECK_RESULT_LAYOUT),
        })

    def elaborate(self, platform):
        from amaranth import Module
        m = Module()
        m.d.comb += [self.link_read_needed.eq(AnySeq(1)), self.link_addr.eq(AnySeq(64)),
                     self.done.eq(AnySeq(1)),
                     self.result.as_value().eq(AnySeq(len(self.result.as_value())))]
        return m


class ObservedVmxUnit(VmxUnit):
    """`VmxUnit` as in rtl/, built with `cache_cls` (and `checks_cls`) in place of `VmcsCache`
    (`VmEntryChecks`). Mutations override `mutate` (statements added to the unit's module)."""

    cache_cls = ObservedVmcsCache
    checks_cls = FreeEntryChecks

    def elaborate(self, platform):
        with _patched(unit_module, VmcsCache=self.cache_cls):
            m = super().elaborate(platform)
        return m

    def checks_patched(self):
        """A context in which `EntrySequence` builds `checks_cls` for its `VmEntryChecks`."""
        if self.checks_cls is None:
            return contextlib.nullcontext()
        return _patched(entry_sequence_module, VmEntryChecks=self.checks_cls)

    def mutate(self, m):
        """Hook for mutations."""


# --- the harness -------------------------------------------------------------------------------------

def _field_table(m, fi, name):
    """Constants of the symbolic field number `fi`: encoding, bits, has_high, read_only."""
    enc = Signal(15, name=f"{name}_enc")
    wide = Signal(name=f"{name}_64")        # a 64-bit field (has a high access)
    bits32 = Signal(name=f"{name}_le32")    # at most 32 bits wide
    ro = Signal(name=f"{name}_ro")
    fmask = Signal(64, name=f"{name}_mask")
    with m.Switch(fi):
        for f in FIELDS:
            with m.Case(f.slot):
                m.d.comb += [enc.eq(f.encoding), wide.eq(f.has_high), bits32.eq(f.bits <= 32),
                             ro.eq(f.read_only), fmask.eq(f.mask)]
    return enc, wide, bits32, ro, fmask


class VmxHarness(FormalTop):
    """`VmxUnit` in the environment of the module doc; asserts `props`."""

    def __init__(self, *, slots=2, maxphyaddr=32, props=PROPERTIES, covers=None, lemmas=False,
                 unit_cls=ObservedVmxUnit, cut_wc=None, start="reset", field=None,
                 start_assume=None):
        super().__init__()
        self.slots = slots
        self.maxphyaddr = maxphyaddr
        self.props = set(props)
        assert self.props <= set(PROPERTIES), self.props
        self.covers = covers
        self.lemmas = lemmas
        self.unit_cls = unit_cls
        self.cut_wc = (not (self.props & NEEDS_WC)) and covers is None if cut_wc is None \
            else cut_wc
        assert start in ("reset", "state")
        self.start = start
        #: vmrw: the name of the field F (None: F is symbolic, any of FIELDS)
        self.field = field
        #: start="state": extra assumptions on the start state (a function of the harness's
        #: signal dict, returning a list of conditions)
        self.start_assume = start_assume

    def elaborate(self, platform):
        m = self.formal_module()
        mpa = self.maxphyaddr
        unit = self.unit_cls(slots=self.slots, maxphyaddr=mpa)
        m.submodules.unit = um = unit.elaborate(platform)
        unit._MustUse__silence = True
        cache, loc = um._named_submodules["cache"]
        cm = cache.elaborate(platform)
        cache._MustUse__silence = True
        um._named_submodules["cache"] = (cm, loc)
        working_copy, wloc = um._named_submodules["working_copy"]
        wm = working_copy.elaborate(platform)
        working_copy._MustUse__silence = True
        um._named_submodules["working_copy"] = (wm, wloc)
        wsig = module_signals(wm, "sync")
        blocks = {}         # the unit's other register-holding blocks: component, module
        for name in ("exit_write_back", "read_back", "result_register", "region_transfer",
                     "entry_sequence", "row_copy"):
            block, bloc = um._named_submodules[name]
            with unit.checks_patched():
                blocks[name] = (block, block.elaborate(platform))
            block._MustUse__silence = True
            um._named_submodules[name] = (blocks[name][1], bloc)
        write_back, wbm = blocks["exit_write_back"]
        transfer, tm = blocks["region_transfer"]
        entry_seq, esm = blocks["entry_sequence"]
        row_copy, rcm = blocks["row_copy"]
        usig = module_signals(um)
        ssig = module_signals(um, "sync")

        def reg(name):
            c = ssig.get(name, [])
            assert len(c) == 1, (name, len(c))
            return c[0]

        seq, enc_of = fsm_state(um, "seq")
        q = data.View(unit.instr.payload.shape(), reg("q"))
        base = reg("base")
        wc_raw, = wsig["wc"]
        read_back = blocks["read_back"][0]
        rb_pending, rb_row, rb_mask = read_back.read, read_back.read_row, read_back.read_mask
        wc_row_take = row_copy.take     # the working copy takes a whole row of the copy
        land_valid, land_row, land_mask = read_back.land, read_back.land_row, read_back.land_mask
        wc_slot = reg("wc_slot")
        wc_live = reg("wc_live")
        victim = reg("victim")
        csig = module_signals(cm, "sync")
        tags = [csig[f"tag{i}"][0] for i in range(self.slots)]
        valid = [csig[f"valid{i}"][0] for i in range(self.slots)]
        launched = [csig[f"launched{i}"][0] for i in range(self.slots)]
        del usig

        wc_view = data.View(unit.vmcs.shape(), wc_raw)
        if self.cut_wc:
            wm.d.sync += wc_raw.eq(AnySeq(len(wc_raw)))
        elif self.field is not None:
            # Only F's register is the design's; every other field of the working copy is free.
            for f in WORKING_FIELDS:
                if f.name != self.field:
                    wm.d.sync += wc_view[member_name(f)].eq(AnySeq(f.bits))
        unit.cache = cache
        unit.blocks = {name: block for name, (block, _) in blocks.items()}
        unit.mutate(um)

        started = Signal(name="started")
        m.d.sync += started.eq(1)
        started2 = past(m, started, "started2")

        def in_state(*names):
            return Cat(*(seq == enc_of[n] for n in names)).any()

        # --- environment ---------------------------------------------------------------------
        instr, res = unit.instr, unit.result
        quiet = Signal()        # step 0 of start="state": nothing happens
        m.d.comb += quiet.eq(~started if self.start == "state" else 0)

        m.d.comb += [instr.valid.eq(AnySeq(1)),
                     instr.payload.as_value().eq(AnySeq(len(instr.payload.as_value()))),
                     res.ready.eq(AnySeq(1)),
                     unit.mem_req.ready.eq(AnySeq(1)),
                     unit.mem_resp.valid.eq(AnySeq(1)),
                     unit.mem_resp.payload.as_value().eq(AnySeq(64)),
                     unit.inval.ready.eq(AnySeq(1)),
                     unit.exit.valid.eq(AnySeq(1)),
                     unit.exit.payload.as_value().eq(
                         AnySeq(len(unit.exit.payload.as_value()))),
                     unit.exit_resp.ready.eq(AnySeq(1)),
                     unit.msr_addr.eq(AnySeq(32))]
        p_instr_wait = past(m, instr.valid & ~instr.ready, "p_instr_wait")
        p_instr = past(m, instr.payload.as_value(), "p_instr")
        with m.If(p_instr_wait):
            m.d.comb += [Assume(instr.valid), Assume(instr.payload.as_value() == p_instr)]
        p_exit_wait = past(m, unit.exit.valid & ~unit.exit.ready, "p_exit_wait")
        with m.If(p_exit_wait):
            m.d.comb += Assume(unit.exit.valid)
        # Memory: answers only outstanding reads; a response waits unchanged until taken.
        rd_take = unit.mem_req.valid & unit.mem_req.ready & ~unit.mem_req.payload.write
        rs_take = unit.mem_resp.valid & unit.mem_resp.ready
        outstanding = Signal(9, name="outstanding")
        m.d.sync += outstanding.eq(outstanding + rd_take - rs_take)
        m.d.comb += Assume(~unit.mem_resp.valid | (outstanding != 0))
        p_resp_wait = past(m, unit.mem_resp.valid & ~unit.mem_resp.ready, "p_resp_wait")
        p_resp = past(m, unit.mem_resp.payload.data, "p_resp")
        with m.If(p_resp_wait):
            m.d.comb += [Assume(unit.mem_resp.valid), Assume(unit.mem_resp.payload.data == p_resp)]
        with m.If(quiet):
            m.d.comb += [Assume(~instr.valid), Assume(~unit.exit.valid),
                         Assume(~unit.mem_resp.valid)]

        # --- the instruction in flight -------------------------------------------------------
        acc = instr.valid & instr.ready
        ip = instr.payload
        long_in = ip.cpu.efer[10] & ip.cpu.cs_l
        rec_op = Signal(VmxOp, name="rec_op")
        rec_pre = Signal(name="rec_pre")
        rec_enc = Signal(64, name="rec_enc")
        rec_val = Signal(64, name="rec_val")
        rec_long = Signal(name="rec_long")
        with m.If(acc):
            m.d.sync += [rec_op.eq(ip.op), rec_pre.eq(ip.precheck), rec_long.eq(long_in),
                         rec_enc.eq(Mux(long_in, ip.reg, ip.reg[0:32])),
                         rec_val.eq(Mux(long_in, ip.value, ip.value[0:32]))]
        shown = past(m, res.valid & ~res.ready, "shown")
        new_res = Signal(name="new_res")
        m.d.comb += new_res.eq(res.valid & ~shown)
        pending = Signal(name="pending")
        with m.If(acc):
            m.d.sync += pending.eq(1)
        with m.Elif(new_res):
            m.d.sync += pending.eq(0)
        rk = res.payload.kind
        answered = Signal(name="answered")      # the instruction in flight is answered now
        m.d.comb += answered.eq(pending & new_res)
        launch_op = (rec_op == VmxOp.VMLAUNCH) | (rec_op == VmxOp.VMRESUME)

        mode = unit.mode
        pmode = past(m, mode, "pmode")
        exit_hs = unit.exit.valid & unit.exit.ready
        p_exit_hs = past(m, exit_hs, "p_exit_hs")
        changed = Signal(name="changed")
        m.d.comb += changed.eq((started2 if self.start == "state" else started)
                               & (mode != pmode))
        to_nonroot = changed & (pmode == VmxMode.ROOT) & (mode == VmxMode.NON_ROOT)
        entered_r = Signal(name="entered_r")
        entered = Signal(name="entered")
        m.d.comb += entered.eq(entered_r | to_nonroot)
        with m.If(acc | answered):
            m.d.sync += entered_r.eq(0)
        with m.Else():
            m.d.sync += entered_r.eq(entered)

        cur = unit.current_vmcs
        von = unit.vmxon_pointer

        def ptr_ok(p):
            return (p[0:12] == 0) & (p[mpa:64] == 0)

        # start="state": step 0 is quiet, the start state (step 1) is assumed to satisfy every
        # property and auxiliary assertion, which are asserted from step 2 on.
        if self.start == "state":
            at_start = started & ~started2
            live = started2
        else:
            at_start = Const(0)
            live = Const(1)
        start_conds = []

        def want(group):
            """Build the checks of `group` (a property, or "aux" for the lemmas)?"""
            return (group in self.props or (group == "aux" and self.lemmas)
                    or self.start == "state")

        def check(cond, msg):
            group = msg.split(":")[0]
            # The prefix decides which jobs assert the check: a name outside the groups would
            # build a check that no job asserts.
            assert group in PROPERTIES or group == "aux", \
                f"check {msg!r}: its message must start with one of {PROPERTIES} or 'aux'"
            if self.start == "state":
                start_conds.append(cond)
            if group in self.props or (group == "aux" and self.lemmas):
                m.d.comb += Assert(cond | ~live, msg)

        # --- properties ------------------------------------------------------------------------
        if want("mode"):
            ok_vmxon = ((pmode == VmxMode.OUTSIDE) & (mode == VmxMode.ROOT) & answered
                        & (rk == VmxResult.SUCCEED) & (rec_op == VmxOp.VMXON) & ~rec_pre)
            ok_vmxoff = ((pmode == VmxMode.ROOT) & (mode == VmxMode.OUTSIDE) & answered
                         & (rk == VmxResult.SUCCEED) & (rec_op == VmxOp.VMXOFF) & ~rec_pre)
            ok_entry = ((pmode == VmxMode.ROOT) & (mode == VmxMode.NON_ROOT) & pending
                        & ~shown & launch_op & ~rec_pre)
            ok_exit = (pmode == VmxMode.NON_ROOT) & (mode == VmxMode.ROOT) & p_exit_hs
            check(~changed | ok_vmxon | ok_vmxoff | ok_entry | ok_exit,
                  "mode: change not by VMXON, VMXOFF, VM entry or VM exit")
            check(mode.as_value() != 3, "mode: valid encoding")
            with m.If(started):
                check(~(answered & (rec_op == VmxOp.VMXON) & ~rec_pre & (rk == VmxResult.SUCCEED))
                      | ok_vmxon, "mode: successful VMXON enters root")
                check(~(answered & (rec_op == VmxOp.VMXOFF) & ~rec_pre
                        & (rk == VmxResult.SUCCEED)) | ok_vmxoff,
                      "mode: successful VMXOFF leaves")
                check(~(p_exit_hs & (pmode == VmxMode.NON_ROOT)) | (mode == VmxMode.ROOT),
                      "mode: VM exit returns to root")
            check(~(answered & launch_op & ~rec_pre) | ((rk == VmxResult.VM_ENTRY) == entered),
                  "mode: VMLAUNCH/VMRESUME answered VM_ENTRY iff it entered")
            check(~(new_res & (rk == VmxResult.VM_ENTRY)) | (answered & launch_op & ~rec_pre),
                  "mode: VM_ENTRY only answers VMLAUNCH/VMRESUME")

        if want("ptr"):
            check((cur == INVALID_VMCS_POINTER) | (ptr_ok(cur) & (cur != von)),
                  "ptr: current-VMCS pointer all ones or aligned, < 2^M, not VMXON's")
            check((mode != VmxMode.OUTSIDE) | (cur == INVALID_VMCS_POINTER),
                  "ptr: all ones outside VMX operation")

        if want("unique"):
            for i in range(self.slots):
                for j in range(i + 1, self.slots):
                    check(~(valid[i] & valid[j] & (tags[i] == tags[j])),
                          f"unique: slots {i} and {j} hold one VMCS")

        # --- VMREAD after VMWRITE -----------------------------------------------------------
        wc = unit.vmcs
        if self.field is None:
            fi = AnyConst(range(len(FIELDS)))
        else:
            fi = Const(next(f.slot for f in FIELDS if f.name == self.field), range(len(FIELDS)))
        fi_s = Signal(range(len(FIELDS)), name="fi")
        m.d.comb += fi_s.eq(fi)
        m.d.comb += Assume(fi_s < len(FIELDS))
        f_enc, f_wide, f_le32, f_ro, f_mask = _field_table(m, fi_s, "F")
        # VMREAD reads the cache memory: its row of F in each slot is modelled (`mem_F<i>`,
        # written as the write port writes it, read as the synchronous read port reads it:
        # the old value in a cycle that also writes, held while `rd_en` is low); every other
        # row stays free (the `data` cut).
        mem_f = [Signal(64, name=f"mem_F{i}") for i in range(self.slots)]
        if want("vmrw"):
            rd_f = Signal(name="rd_F")
            rd_f_val = Signal(64, name="rd_F_val")
            for i, mf in enumerate(mem_f):
                w = (cache.wr_slot == i) & (cache.wr_field == fi_s)
                with cm.If(w & cache.wr_en[0]):
                    cm.d.sync += mf[0:32].eq(cache.wr_data[0:32])
                with cm.If(w & cache.wr_en[1]):
                    cm.d.sync += mf[32:64].eq(cache.wr_data[32:64])
            with cm.If(cache.rd_en):
                cm.d.sync += [rd_f.eq(cache.rd_field == fi_s),
                              rd_f_val.eq(Array(mem_f)[cache.rd_slot])]
            cm.d.comb += cache.rd_data.eq(Mux(rd_f, rd_f_val, AnySeq(64)))
            # The wide copy's row port the same way: F's lane of a row that holds F.
            row_f = Signal(name="row_F")
            row_f_val = Signal(64, name="row_F_val")
            with cm.If(cache.row_en):
                cm.d.sync += [row_f.eq(cache.row_index == field_row(fi_s)),
                              row_f_val.eq(Array(mem_f)[cache.row_slot])]
            lane_f = field_lane(fi_s)
            cm.d.comb += cache.row_data.eq(Cat(*(
                Mux(row_f & (lane_f == i), row_f_val, AnySeq(64)) for i in range(FIELD_LANES))))
        mfc = Signal(64, name="mem_F_cur")     # F in the current VMCS's row
        m.d.comb += mfc.eq(Array(mem_f)[wc_slot])
        wcf_reg = Signal(64, name="wc_F_reg")   # F's register in the working copy (the exit
        with m.Switch(fi_s):                    # write-back copies it into the row)
            for f in FIELDS:
                with m.Case(f.slot):
                    # A field the working copy does not hold: what it would hold is the row's.
                    m.d.comb += wcf_reg.eq(wc[member_name(f)] if f in WORKING_FIELDS else mfc)
        # F in the working copy once a write on its way (if any) has landed: read back from
        # the current VMCS's row (`rb_*`, the row then still holds it) or landing now (`land_*`,
        # the row port's data).
        f_row = field_row(fi_s)
        f_lane2 = Cat(Const(0, 1), field_lane(fi_s))     # F's first enable bit in a mask
        rb_h = [rb_pending & (rb_row == f_row) & rb_mask.bit_select(f_lane2 + h, 1)
                for h in range(2)]
        land_h = [land_valid & (land_row == f_row) & land_mask.bit_select(f_lane2 + h, 1)
                  for h in range(2)]
        rb_f = rb_h[0] | rb_h[1]
        land_f = land_h[0] | land_h[1]
        take_f = Signal(name="copy_takes_F")    # a VMPTRLD's copy takes F's row now
        m.d.comb += take_f.eq(wc_row_take & (row_copy.take_row == f_row))
        # The copy's read in the previous cycle was of the current VMCS's rows.
        copy_read_cur = Signal(name="copy_read_cur")
        copy_src = module_signal(rcm, "source", "sync")
        m.d.sync += copy_read_cur.eq(row_copy.row_read & (cache.row_slot == wc_slot))
        wcf = Signal(64, name="wc_F")
        if want("vmrw"):
            m.d.comb += wcf.eq(Cat(*(
                Mux(rb_h[h], mfc[32 * h:32 * h + 32],
                    Mux(land_h[h] | take_f, row_f_val[32 * h:32 * h + 32],
                        wcf_reg[32 * h:32 * h + 32]))
                for h in range(2))) & f_mask)
        sh = Signal(64, name="sh")          # what F holds after the recorded VMWRITEs
        sh_lo = Signal(name="sh_lo")        # sh[0:32] known (and, for a <= 32-bit field, all)
        sh_hi = Signal(name="sh_hi")        # sh[32:64] known
        is_full = rec_enc == f_enc
        is_high = f_wide & (rec_enc == (f_enc | 1))
        keeps = ((rec_op == VmxOp.VMREAD) | (rec_op == VmxOp.VMWRITE)
                 | (rec_op == VmxOp.VMPTRST))
        # sh_n/lo_n/hi_n: the shadow after this cycle (the registers follow them).
        sh_n = Signal(64, name="sh_n")
        lo_n = Signal(name="sh_lo_n")
        hi_n = Signal(name="sh_hi_n")
        m.d.comb += [sh_n.eq(sh), lo_n.eq(sh_lo), hi_n.eq(sh_hi)]
        m.d.sync += [sh.eq(sh_n), sh_lo.eq(lo_n), sh_hi.eq(hi_n)]
        wrote = answered & ~rec_pre & (rec_op == VmxOp.VMWRITE) & (rk == VmxResult.SUCCEED)
        with m.If(wrote & is_full):
            m.d.comb += [sh_n.eq(rec_val & f_mask), lo_n.eq(1), hi_n.eq(1)]
        with m.If(wrote & is_high):
            m.d.comb += [sh_n[32:64].eq(rec_val[0:32]), hi_n.eq(1)]
        # Any other instruction (not a precheck) or a VM exit ends the comparison.
        with m.If((acc & ~ip.precheck & ~((ip.op == VmxOp.VMREAD) | (ip.op == VmxOp.VMWRITE)
                                          | (ip.op == VmxOp.VMPTRST))) | exit_hs):
            m.d.comb += [lo_n.eq(0), hi_n.eq(0)]
        read_ok = answered & ~rec_pre & (rec_op == VmxOp.VMREAD) & (rk == VmxResult.SUCCEED)
        if want("vmrw"):
            # The wide copy is marked `no_rw_check` (`VmcsCache`): no read whose data the
            # working copy takes (a read-back landing, a row of a VMPTRLD's copy) may meet a
            # write of the same row.
            wide_wr = Cat(field_row(cache.wr_field), cache.wr_slot)
            collided = Signal(name="row_collided")
            m.d.sync += collided.eq(cache.wr_en.any()
                                    & (wide_wr == Cat(cache.row_index, cache.row_slot)))
            check(~(collided & (land_valid | wc_row_take)),
                  "vmrw: wide copy: no read the working copy takes meets a write of its row")
            # The same for the field memory (also `no_rw_check`): a VMREAD's read, and the
            # reads of a region write-back (no write at all in those states).
            narrow_collided = Signal(name="field_collided")
            m.d.sync += narrow_collided.eq(cache.rd_en & cache.wr_en.any()
                                           & (cache.rd_slot == cache.wr_slot)
                                           & (cache.rd_field == cache.wr_field))
            check(~(narrow_collided & read_ok),
                  "vmrw: field memory: no VMREAD's read meets a write of its field")
            check(~(narrow_collided & in_state("EVICT_WB", "CLEAR_WB")),
                  "vmrw: field memory: no region write-back's read meets a write of its field")
            rv = res.payload.value
            check(~(read_ok & is_full & sh_lo & (sh_hi | ~rec_long | f_le32))
                  | (rv == Mux(rec_long, sh, sh[0:32])),
                  "vmrw: VMREAD returns the value VMWRITE wrote")
            check(~(read_ok & is_high & sh_hi) | (rv == sh[32:64]),
                  "vmrw: VMREAD (high) returns the value VMWRITE wrote")

        # --- auxiliary assertions (k-induction) ------------------------------------------------
        if want("aux"):
            idle = in_state("IDLE")
            exiting = in_state("EXIT_INVAL", "EXIT_RESP")
            busy = ~idle & ~exiting
            res_valid = res.valid
            check(~busy | (pending & ~res_valid), "aux: busy -> pending, no result")
            check(~(pending & idle) | (res_valid & ~shown), "aux: pending in IDLE -> answer now")
            check(~exiting | (~pending & ~res_valid), "aux: exit -> nothing pending")
            check(pending | ~res_valid | shown, "aux: answered result was shown")
            check(~pending | ((q.op == rec_op) & (q.precheck == rec_pre)), "aux: q is in flight")
            check(~busy | ~q.precheck, "aux: prechecks never leave IDLE")
            vmxon_st = in_state("VMXON_REQ", "VMXON_RESP")
            check(~vmxon_st | ((q.op == VmxOp.VMXON) & (mode == VmxMode.OUTSIDE)
                               & (base[0:12] == 0)), "aux: VMXON sequence")
            entry_st = in_state("ENTRY", "ENTRY_FAIL")
            launchq = (q.op == VmxOp.VMLAUNCH) | (q.op == VmxOp.VMRESUME)
            check(~entry_st | (launchq & (mode == VmxMode.ROOT) & ~entered),
                  "aux: entry sequence in root")
            check(~in_state("ENTRY_INVAL") | (launchq & (mode == VmxMode.NON_ROOT) & entered),
                  "aux: entered")
            check(~entered | (pending & launch_op & (mode == VmxMode.NON_ROOT)
                                & (in_state("ENTRY_INVAL") | idle)),
                  "aux: entered only by VMLAUNCH/VMRESUME")
            check(~(pending & idle & entered) | (rk == VmxResult.VM_ENTRY), "aux: entered answer")
            ptr_st = in_state("PTR_REQ", "PTR_RESP", "EVICT", "EVICT_WB", "LOAD")
            qp = q.mem[0:64]
            check(~ptr_st | ((q.op == VmxOp.VMPTRLD) & (mode == VmxMode.ROOT) & ptr_ok(qp)
                             & (qp != von)), "aux: VMPTRLD sequence")
            check(~ptr_st | (base == qp[0:mpa]), "aux: VMPTRLD base")
            miss_st = in_state("EVICT", "EVICT_WB", "LOAD")
            # The lookup registered as the revision read went out (`tgt_hit`) still holds when
            # its answer comes: nothing changes the cache's tags before.
            tgt_hit = reg("tgt_hit")
            for i in range(self.slots):
                check(~in_state("PTR_RESP") | tgt_hit | ~valid[i] | (tags[i] != qp[12:mpa]),
                      f"aux: VMPTRLD lookup: a miss: slot {i} does not hold the VMCS")
            for i in range(self.slots):
                check(~miss_st | ~valid[i] | (tags[i] != qp[12:mpa]),
                      f"aux: miss: slot {i} does not hold the VMCS")
            # VMPTRLD and VMCLEAR wait for the exit's background copy into the cache memory,
            # whose counter stays within the fields it copies.
            wb_busy = write_back.busy
            check(internal_signal(wbm, "cnt", "sync") < len(EXIT_WRITTEN_FIELDS),
                  "aux: exit write-back: counter in range")
            check(~(ptr_st | in_state("CLEAR_START", "CLEAR_LS", "CLEAR_WB", "CLEAR_DONE"))
                  | ~wb_busy, "aux: VMPTRLD/VMCLEAR: no exit write-back running")
            # A VMPTRLD's copy runs from the current VMCS's slot (between the revision read and
            # its answer: from the slot the VMPTRLD switches to).
            check(~(wb_busy & row_copy.busy), "aux: no exit write-back while a copy runs")
            check(~row_copy.busy | ((mode != VmxMode.NON_ROOT)
                                    & ~in_state("ENTRY", "ENTRY_FAIL", "ENTRY_INVAL")),
                  "aux: no VM entry while a copy runs")
            switching = reg("switching")
            check(~(in_state("PTR_RESP") & switching) | tgt_hit, "aux: VMPTRLD switches on a hit")
            check(~(in_state("PTR_RESP") & tgt_hit & ~switching)
                  | (wc_live & (reg("tgt_slot") == wc_slot)),
                  "aux: VMPTRLD hit of the current VMCS's slot: no switch")
            check(~row_copy.busy | (copy_src == Mux(in_state("PTR_RESP") & switching,
                                                    reg("tgt_slot"), wc_slot)),
                  "aux: copy from the current VMCS's slot")
            # A region transfer runs exactly in the states that wait for it, on the slot and
            # region they name; a load's responses due are its reads not answered yet.
            t_loading = module_signal(tm, "loading", "sync")
            t_slot = module_signal(tm, "slot", "sync")
            t_region = module_signal(tm, "region", "sync")
            t_cnt = module_signal(tm, "cnt", "sync")
            t_rcnt = module_signal(tm, "rcnt", "sync")
            check(transfer.busy == in_state("CLEAR_WB", "EVICT_WB", "LOAD"),
                  "aux: region transfer: runs in CLEAR_WB, EVICT_WB, LOAD")
            check(~in_state("CLEAR_WB") | (~t_loading & (t_slot == reg("tgt_slot"))
                                           & (t_region == base[12:mpa])),
                  "aux: region transfer: VMCLEAR writes its VMCS back")
            check(~in_state("EVICT_WB") | (~t_loading & (t_slot == victim)),
                  "aux: region transfer: eviction writes the victim back")
            check(~in_state("LOAD") | (t_loading & (t_slot == victim)
                                       & (t_region == base[12:mpa])),
                  "aux: region transfer: VMPTRLD loads its region into the victim")
            nf = len(FIELDS)
            # The memory port's reads outstanding: one in the states that wait for one answer,
            # the issued minus the answered PDPTEs, none where nothing takes an answer.
            # The entry's checks (`EntrySequence`) run exactly in state ENTRY.
            e_seq, e_enc = fsm_state(esm, "entry")

            def in_entry(*names):
                return Cat(*(e_seq == e_enc[n] for n in names)).any()
            e_cnt = module_signal(esm, "cnt", "sync")
            e_rcnt = module_signal(esm, "rcnt", "sync")
            check(in_entry(*e_enc), "aux: entry checks' state is one of theirs")
            check(entry_seq.busy == in_state("ENTRY"), "aux: entry checks run in ENTRY")
            check(~in_state("VMXON_RESP", "FUNC_RESP", "PTR_RESP") & ~in_entry("LINK_RESP")
                  | (outstanding == 1), "aux: one read outstanding")
            check(~in_entry("PDPTE") | ((e_rcnt <= e_cnt) & (e_cnt <= 4)
                                        & (outstanding == e_cnt - e_rcnt)),
                  "aux: PDPTE reads outstanding")
            check(in_state("VMXON_RESP", "FUNC_RESP", "PTR_RESP", "LOAD")
                  | in_entry("LINK_RESP", "PDPTE") | (outstanding == 0),
                  "aux: no read outstanding")
            check(~transfer.busy | (t_loading & (t_rcnt <= t_cnt) & (t_cnt <= nf + 1)
                                    & (outstanding == t_cnt - t_rcnt))
                  | (~t_loading & (t_cnt <= nf) & (outstanding == 0)),
                  "aux: region transfer: counters, reads outstanding")
            clear_st = in_state("CLEAR_START", "CLEAR_LS", "CLEAR_WB", "CLEAR_DONE")
            check(~clear_st | ((q.op == VmxOp.VMCLEAR) & (mode == VmxMode.ROOT)),
                  "aux: VMCLEAR sequence")
            check(~in_state("INVAL") | (q.op == VmxOp.INVEPT) | (q.op == VmxOp.INVVPID),
                  "aux: INVEPT/INVVPID sequence")
            check(~in_state("FUNC_REQ", "FUNC_RESP") | ((q.op == VmxOp.VMFUNC)
                                                       & (mode == VmxMode.NON_ROOT)),
                  "aux: VMFUNC sequence")
            check((mode == VmxMode.OUTSIDE) | ptr_ok(von), "aux: VMXON pointer aligned")
            check((mode != VmxMode.OUTSIDE) | (cur == INVALID_VMCS_POINTER),
                  "aux: no current VMCS outside")
            check(mode.as_value() != 3, "aux: mode encoding")
            if want("vmrw"):
                check(~(lo_n | hi_n) | (idle & ~f_ro), "aux: shadow only in IDLE, writable F")
                check(~(lo_n | hi_n) | ~pending | keeps | rec_pre, "aux: shadow, in flight")
                # A write on its way into the working copy: read back in IDLE from the current
                # VMCS's row; landing with that row's value (unless F was written again since).
                check(~rb_pending | idle, "aux: read-back in IDLE")
                check(~land_valid | ~rb_pending | (land_row != rb_row),
                      "aux: read-back and landing of one row")
                check(~land_f | row_f, "aux: landing F: its row was read")
                check(~(land_f & ~rb_f) | (row_f_val == mfc), "aux: landing F: the row's value")
                check(~take_f | row_f, "aux: copy takes F: its row was read")
                check(~(land_valid & wc_row_take), "aux: one taker of the row port's data")
                check(~(take_f & copy_read_cur & ~rb_f) | (row_f_val == mfc),
                      "aux: copy takes F: the row's value")
                check(~(sh_lo | sh_hi) | ~wc_row_take | copy_read_cur,
                      "aux: shadow: the copy takes rows of the current VMCS")
                for v, where in ((mfc, "row"), (wcf, "working copy")):
                    check(~lo_n | ~f_wide | (v[0:32] == sh_n[0:32]), f"aux: shadow low ({where})")
                    check(~lo_n | f_wide | (v == sh_n), f"aux: shadow narrow ({where})")
                    check(~hi_n | ~f_wide | (v[32:64] == sh_n[32:64]),
                          f"aux: shadow high ({where})")
                    check(~(wrote & is_full) | (v == (rec_val & f_mask)),
                          f"aux: VMWRITE wrote F ({where})")
                    check(~(wrote & is_high) | (v[32:64] == rec_val[0:32]),
                          f"aux: VMWRITE wrote F (high, {where})")
        self.sigs = sigs = dict(seq=seq, enc_of=enc_of, mode=mode, cur=cur, von=von, valid=valid, tags=tags,
                    launched=launched, wc_slot=wc_slot, wc_live=wc_live, pending=pending,
                    wc_pending=rb_pending | land_valid, copy_busy=row_copy.busy,
                    not_copying=~row_copy.busy,
                    copy_src=copy_src,
                    res_valid=res.valid, q=q, wc=wc_view, in_state=in_state, victim=victim)

        # --- start="state": any state that satisfies the invariants ----------------------------
        if self.start == "state":
            mine = [pending, rec_op.as_value(), rec_pre, rec_enc, rec_val, rec_long, entered_r, sh, sh_lo,
                    sh_hi, outstanding]
            for mod, regs in ((um, module_signals(um, "sync")), (cm, module_signals(cm, "sync")),
                              (wm, wsig),
                              *((bm, module_signals(bm, "sync")) for _, bm in blocks.values()),
                              (m, {s.name: [s] for s in mine})):
                for lst in regs.values():
                    for r in lst:
                        with mod.If(~started):
                            mod.d.sync += r.eq(AnyConst(len(r)))
            conds = start_conds + (list(self.start_assume(sigs)) if self.start_assume else [])
            with m.If(at_start):
                m.d.comb += [Assume(c) for c in conds]

        # --- covers --------------------------------------------------------------------------
        if self.covers:
            saw_entry = Signal(name="saw_entry")
            with m.If(to_nonroot):
                m.d.sync += saw_entry.eq(1)
            cov = {
                "vmxon": answered & (rec_op == VmxOp.VMXON) & (rk == VmxResult.SUCCEED)
                & ~rec_pre & (mode == VmxMode.ROOT),
                "entry": to_nonroot,
                "exit": changed & (pmode == VmxMode.NON_ROOT) & (mode == VmxMode.ROOT)
                & saw_entry,
                "instr_exit": answered & (rk == VmxResult.VM_EXIT) & (mode == VmxMode.NON_ROOT),
                "vmrw": read_ok & is_full & sh_lo & sh_hi & rec_long & (sh[32:64] != 0),
                "two_slots": Cat(*valid).all() & (tags[0] != tags[1]),
            }
            names = {
                "vmxon": "cover: VMXON succeeds (root)",
                "entry": "cover: VM entry",
                "exit": "cover: VM exit after a VM entry",
                "instr_exit": "cover: instruction answered VM_EXIT in non-root",
                "vmrw": "cover: VMREAD after VMWRITE (64-bit, high half set)",
                "two_slots": "cover: two slots valid",
            }
            for key in self.covers:
                m.d.comb += Cover(cov[key] & live, names[key])
        return m


# --- start states of the covers (start="state") ---------------------------------------------------

def start_root_one_vmcs(s):
    """In VMX root operation, idle, nothing in flight, a current VMCS in the working copy and in
    its cache slot, no other slot valid: the state after VMXON and one VMPTRLD."""
    wcs = s["wc_slot"]
    conds = [s["in_state"]("IDLE"), ~s["pending"], ~s["wc_pending"], s["not_copying"],
             ~s["res_valid"],
             s["mode"] == VmxMode.ROOT,
             s["cur"] != INVALID_VMCS_POINTER, s["wc_live"]]
    for i, v in enumerate(s["valid"]):
        conds.append(v == (wcs == i))
    return conds


def start_root_copying(s):
    """`start_root_one_vmcs`, but right after the VMPTRLD's answer: its copy of the VMCS's rows
    into the working copy runs (any row next)."""
    conds = [c for c in start_root_one_vmcs(s) if c is not s["not_copying"]]
    return conds + [s["copy_busy"], s["copy_src"] == s["wc_slot"]]


def start_root_fresh_vmcs(s):
    """`start_root_one_vmcs` with the current VMCS never launched (VMLAUNCH may enter)."""
    return start_root_one_vmcs(s) + [~Cat(*s["launched"]).any()]


def start_load_one_valid(s):
    """A VMPTRLD miss loading into a free slot while the other slot holds a VMCS (reached from
    `start_root_one_vmcs` by a VMPTRLD of another region after ~140 cycles; the start lets the
    load be at any point, so the cover shows the fill, not the load)."""
    return [s["in_state"]("LOAD"), s["victim"] != s["wc_slot"], ~Cat(*s["valid"]).all(),
            Cat(*s["valid"]).any(), ~s["copy_busy"] | (s["copy_src"] == s["wc_slot"])]
