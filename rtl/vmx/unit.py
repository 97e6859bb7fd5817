"""The VMX unit: VMX instructions, the current VMCS (working copy), the VMCS cache, VM entry/exit.

Mirrors `tb.model.vmx.VmxModel` (the scoreboard) on the ports of `rtl.vmx.ports`:

* ``instr`` / ``result``: one VMX instruction, one answer. `InstructionDecision`
  (`rtl.vmx.decision`) decides the offered instruction; decisions that need no memory access
  (every #UD/#GP/VM-exit/VMfail check, VMREAD, VMWRITE, VMPTRST, VMXOFF, VMCALL) are answered
  one cycle after the instruction is accepted, and the next instruction is accepted in that same
  cycle: VMREAD/VMWRITE of the current VMCS run back to back at one per cycle.
* The current VMCS lives in its cache slot ``wc_slot``'s rows of the cache memory, and the fields
  that blocks read in parallel also in ``vmcs`` (the working copy, `rtl.vmx.working_copy`, a
  register bank of `WORKING_LAYOUT`), which the exit-decision and entry-check blocks read
  directly (``wc_live``: the working copy is that slot's). Both are kept equal (write-through):
  VMWRITE writes the row (each 32-bit half has its own write enable, so the high access of a
  64-bit field needs no read), a VMfail the error field, VMFUNC the EPTP; the cache's row port
  reads the row of the wide copy back in the next cycle and the working copy takes the field's
  lane from it in the cycle after (`ReadBack`; `WorkingCopy`'s row port, the only way into it
  besides the exit's parallel port): VMLAUNCH/VMRESUME, which read the working copy as they are
  accepted, wait those two cycles. A VM exit or VM-entry failure writes its fields in one cycle
  (`ExitFieldWrites`: the working copy's through its parallel port, the exit-information fields
  into the exit write-back's registers) and then copies those it wrote (of
  `EXIT_WRITTEN_FIELDS`, 27) into the row in the background (`ExitWriteBack`), one per cycle
  whenever no other write needs the port and no write is on its way into the working copy, in
  that order (the exit reason and qualification first); until that is done, VMPTRLD and VMCLEAR
  wait, a VMREAD waits while its field is not copied yet, and so does a VMWRITE of an
  exit-information field (a VMRESUME does not). So VMREAD reads the cache memory (the read
  port's address is the offered field, its data the answer), a VMCS leaving the working copy
  needs no write-back, and region write-back reads only the memory: nothing reads the working
  copy by field index.
* ``mem_req`` / ``mem_resp``: qword reads and writes (revision dwords, VMCS region load and
  write-back, VMCLEAR launch state, VMCS-link pointer, PDPTEs, EPTP-list entries).
* VMPTRLD always reads the revision dword (error 11), hit or miss, as the model does. The cache
  lookup happens as that read goes out; a hit of another slot starts the copy of its VMCS from
  the wide copy's rows into the working copy (`RowCopy`, one row of `FIELD_LANES` fields per
  cycle), which runs on in the background after the answer: only VMLAUNCH/VMRESUME, which read
  the working copy, wait for it. A wrong revision starts the copy of the current VMCS back (the
  other slot's rows may have begun to overwrite it) and answers the VMfail. A miss evicts the
  least recently used slot (written back to its region first if dirty), reads the region into
  its rows (`RegionTransfer`, which also does VMCLEAR's write-back) and answers, copying the
  rows the same way.
* VMLAUNCH/VMRESUME: the launch-state checks (errors 26, 4, 5, 6) in the decision, then
  `EntrySequence`: the VMCS-link-pointer revision read (when needed), `VmEntryChecks` (error 7,
  error 8, or a VM-entry failure with its qualification), the PDPTEs of a PAE guest (from the
  VMCS with EPT, else four memory reads at CR3[31:5]; qualification 2), then the
  guest runs: ``entry`` (`ENTRY_LAYOUT`, the model's `EntryEffects`), ``ctx`` (the translation
  unit's context; VMFUNC updates its EPTP), an invalidation of VPID 0 on ``inval`` when VPIDs
  are off (before the result), launch state "launched" after VMLAUNCH. A VM-entry failure writes
  exit reason 0x80000021 and the qualification, loads ``host`` and stays in root operation.
* ``exit`` / ``exit_resp``: a VM exit reported by the core (taken in a cycle in which no
  instruction is offered) writes the exit-information fields and the guest state (as the exit
  controls allow) into the working copy in the accepting cycle, updates "IA-32e mode guest",
  clears the valid bit of the VM-entry interruption information, asks for the VPID-0
  invalidation when the guest ran without VPIDs, and answers with the host state
  (`HOST_LOAD_LAYOUT`, also on ``host``) one cycle later.
* ``msr_addr`` / ``msr_value`` / ``msr_valid``: the capability MSRs (`VMX_MSRS`).

Region write-back on eviction stores in the qword at offset 8: bit 0 the launch state, bit 32
"launched before VMXOFF", bit 33 = 1 and bits 63:34 the number of VMXOFFs so far (mod 2^30;
the reserved dword at offset 12). A reload computes "launched before VMXOFF" as the stored flag,
or launched with a VMXOFF since the eviction, so that an evicted and reloaded VMCS gives
VMRESUME error 6 exactly as the model's never-evicted copy does (a VMXOFF cannot mark a VMCS that
is not on chip). VMCLEAR writes that qword as 0. (2^30 VMXOFFs between an eviction and the reload
would alias: not a practical concern.)
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.paging import Invalidation
from rtl.arch.vmx import (
    CR0_HOST_LOADED,
    EFER_LMA,
    EFER_LME,
    EXIT_REASON_INVALID_GUEST_STATE,
    FIELDS,
    INVALID_VMCS_POINTER,
    MAXPHYADDR,
    PROC2_ENABLE_EPT,
    PROC2_ENABLE_VM_FUNCTIONS,
    PROC2_ENABLE_VPID,
    PROC2_UNRESTRICTED_GUEST,
    PROC_ACTIVATE_SECONDARY,
    VMCS_REVISION_ID,
    VMX_MSRS,
    ExitReason,
    LaunchStateQwordLayout,
    VmInstructionError,
    VmxMode,
    VmxOp,
    VmxResult,
)
from rtl.arch.vmx import bit_position as bit
from rtl.translation.layouts import context_layout, invalidation_layout
from rtl.vmx.decision import InstructionDecision
from rtl.vmx.decision import VmxAction as _Act
from rtl.vmx.entry_checks import eptp_ok, revision_ok
from rtl.vmx.entry_sequence import EntryOutcome, EntrySequence
from rtl.vmx.exit_fields import EXIT_INFO_WRITTEN, ExitFieldWrites
from rtl.vmx.exit_write_back import ExitWriteBack
from rtl.vmx.layouts import WORKING_LAYOUT, member_name
from rtl.vmx.ports import (
    ENTRY_LAYOUT,
    EXIT_LAYOUT,
    HOST_LOAD_LAYOUT,
    INSTR_LAYOUT,
    MEM_REQ_LAYOUT,
    MEM_RESP_LAYOUT,
    RESULT_LAYOUT,
)
from rtl.vmx.read_back import ReadBack
from rtl.vmx.region_transfer import RegionTransfer
from rtl.vmx.result_register import ResultRegister
from rtl.vmx.row_copy import RowCopy
from rtl.vmx.state_loads import GuestStateLoad, HostStateLoad
from rtl.vmx.vmcs_cache import VmcsCache, field_row, lane_enables
from rtl.vmx.working_copy import PARALLEL_FIELDS, WorkingCopy

__all__ = ["VmxUnit"]

NF = len(FIELDS)
#: Field slot (row in the cache memory) of each working-copy member.
_SLOT = {member_name(f): f.slot for f in FIELDS}
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class VmxUnit(wiring.Component):
    def __init__(self, *, slots: int = 4, maxphyaddr: int = MAXPHYADDR,
                 revision_id: int = VMCS_REVISION_ID):
        self.slots = slots
        self.maxphyaddr = maxphyaddr
        self.revision_id = revision_id
        super().__init__({
            "instr": In(stream.Signature(INSTR_LAYOUT)),
            "result": Out(stream.Signature(RESULT_LAYOUT)),
            "mem_req": Out(stream.Signature(MEM_REQ_LAYOUT)),
            "mem_resp": In(stream.Signature(MEM_RESP_LAYOUT)),
            "inval": Out(stream.Signature(invalidation_layout())),
            # VM exit from the core; answered on `exit_resp` (the host state to load).
            "exit": In(stream.Signature(EXIT_LAYOUT)),
            "exit_resp": Out(stream.Signature(HOST_LOAD_LAYOUT)),
            # Host state of the last VM exit or VM-entry failure (held until the next one).
            "host": Out(HOST_LOAD_LAYOUT),
            # What the last successful VM entry established, and the translation context.
            "entry": Out(ENTRY_LAYOUT),
            "ctx": Out(context_layout()),
            "msr_addr": In(32),
            "msr_value": Out(64),
            "msr_valid": Out(1),
            "mode": Out(VmxMode),
            "current_vmcs": Out(64),
            "vmxon_pointer": Out(64),
            "vmcs": Out(WORKING_LAYOUT),
        })

    # ---------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        mpa = self.maxphyaddr
        m.submodules.cache = cache = VmcsCache(slots=self.slots, maxphyaddr=mpa)

        def ext(v, width):
            """`v` zero-extended into a named `width`-bit signal (Yosys keeps it, so Verilog
            operators see operands of equal width)."""
            w = Signal(width)
            m.d.comb += w.eq(v)
            return w

        # --- architectural state -----------------------------------------------------------------
        mode = Signal(VmxMode)
        vmxon_ptr = Signal(64)
        cur_ptr = Signal(64, init=INVALID_VMCS_POINTER)
        m.submodules.working_copy = working_copy = WorkingCopy()
        wc = working_copy.vmcs
        wc_slot = Signal(range(self.slots))
        wc_live = Signal()
        cur_valid = Signal()
        m.d.comb += [
            cur_valid.eq(cur_ptr != INVALID_VMCS_POINTER),
            self.mode.eq(mode),
            self.current_vmcs.eq(cur_ptr),
            self.vmxon_pointer.eq(vmxon_ptr),
            self.vmcs.eq(wc),
        ]

        # --- MSR port ----------------------------------------------------------------------------
        with m.Switch(self.msr_addr):
            for addr, value in VMX_MSRS.items():
                with m.Case(addr):
                    m.d.comb += [self.msr_value.eq(value), self.msr_valid.eq(1)]

        # --- working copy: rows of the cache memory's wide copy --------------------------------
        # Nothing reads the working copy by index: VMREAD and region write-back read the cache
        # memory, which every write keeps up to date (module doc, "write-through"). A write of
        # the current VMCS goes into the cache memory and reaches the working copy through the
        # row port two cycles later (`ReadBack`); a VMPTRLD copies whole rows (`RowCopy`).
        wc_dirty = Signal()     # the current VMCS changes this cycle: its slot becomes dirty
        m.d.comb += [cache.mark_dirty.eq(wc_dirty), cache.dirty_slot.eq(wc_slot)]
        m.submodules.read_back = read_back = ReadBack()
        wc_pending = read_back.pending  # a write is on its way into the working copy
        # (The data is the memory's output in every cycle: only the enables say which row.)
        m.d.comb += working_copy.row_data.eq(cache.row_data)
        m.submodules.row_copy = row_copy = RowCopy(slots=self.slots)
        m.d.comb += [row_copy.port_free.eq(~read_back.read),
                     row_copy.wr_en.eq(cache.wr_en.any()), row_copy.wr_slot.eq(cache.wr_slot),
                     row_copy.wr_row.eq(field_row(cache.wr_field))]
        with m.If(read_back.land):
            m.d.comb += [working_copy.row_index.eq(read_back.land_row),
                         working_copy.row_en.eq(read_back.land_mask)]
        with m.Elif(row_copy.take):
            m.d.comb += [working_copy.row_index.eq(row_copy.take_row),
                         working_copy.row_en.eq(-1)]

        # --- the instruction being decided ------------------------------------------------------
        # The decision looks at the offered instruction itself (answer in the next cycle) and
        # is used only in IDLE (every use of `d` and of what is computed from it is under
        # `idle`); sequenced instructions keep the instruction in `q` and read only `q`. (Until
        # 2026-11-27 `d` was `Mux(idle, offered, q)`: 650 bits of multiplexer in front of the
        # decision that no state outside IDLE looked at.)
        q = Signal(INSTR_LAYOUT)
        d = self.instr.payload
        idle = Signal()

        nonroot = mode == VmxMode.NON_ROOT
        ptr = d.mem[0:64]
        m.submodules.decision = decision = InstructionDecision(maxphyaddr=mpa)
        # The decision's answers under the names the sequencer (and the formal harness's
        # mutations) use.
        o_kind = Signal(VmxResult)
        o_err = Signal(5)
        o_exit = Signal(16)
        o_qual = Signal(64)
        o_val = Signal(64)
        o_act = Signal(_Act)
        o_pre = Signal()
        f_idx = Signal(range(NF))
        f_high = Signal()
        vmwrite_value = Signal(64)
        vmwrite_halves = Signal(2)
        long_mode = Signal()
        m.d.comb += [
            decision.instr.eq(d), decision.mode.eq(mode), decision.current_vmcs.eq(cur_ptr),
            decision.vmxon_pointer.eq(vmxon_ptr),
            o_kind.eq(decision.kind), o_err.eq(decision.error), o_exit.eq(decision.exit_reason),
            o_qual.eq(decision.qualification), o_val.eq(decision.value),
            o_act.eq(decision.action), o_pre.eq(decision.prechecked),
            f_idx.eq(decision.field), f_high.eq(decision.field_high),
            vmwrite_value.eq(decision.write_value), vmwrite_halves.eq(decision.write_halves),
            long_mode.eq(decision.long_mode),
        ]

        # Secondary controls in effect ("activate secondary controls"), the bits the unit uses.
        sec_on = wc.cpu_based_vm_exec_control[bit(PROC_ACTIVATE_SECONDARY)]

        def proc2_bit(flag, name):
            sig = Signal(name=name)
            m.d.comb += sig.eq(sec_on & wc.secondary_vm_exec_control[bit(flag)])
            return sig
        ept_on = proc2_bit(PROC2_ENABLE_EPT, "ept_on")
        vpid_on = proc2_bit(PROC2_ENABLE_VPID, "vpid_on")
        ug_on = proc2_bit(PROC2_UNRESTRICTED_GUEST, "ug_on")
        vmfunc_on = proc2_bit(PROC2_ENABLE_VM_FUNCTIONS, "vmfunc_on")
        m.d.comb += cache.a_slot.eq(wc_slot)
        launched_cur = cache.a_launched
        lbv_cur = cache.a_lbv

        m.d.comb += [decision.launched.eq(launched_cur),
                     decision.launched_before_vmxoff.eq(lbv_cur),
                     decision.vmfunc_enabled.eq(vmfunc_on),
                     decision.vm_function_control.eq(wc.vm_function_control)]

        # --- result register -----------------------------------------------------------------
        # A VMREAD's value comes from the cache memory's read port, whose address the accepting
        # cycle presents (the current VMCS's row of the field) and whose data then holds until
        # the next instruction is accepted.
        m.submodules.result_register = result_reg = ResultRegister()
        m.d.comb += result_reg.memory_data.eq(cache.rd_data)
        wiring.connect(m, result_reg.result, wiring.flipped(self.result))

        def answer(kind, err=0, exit_reason=0, qual=0, value=0, eptp=0, proceed=0):
            """Statements (comb) that load an answer into the result register."""
            a = result_reg.answer
            return [result_reg.load.eq(1), a.kind.eq(kind), a.error.eq(err),
                    a.exit_reason.eq(exit_reason), a.qualification.eq(qual), a.value.eq(value),
                    a.eptp.eq(eptp), a.proceed.eq(proceed)]

        port_taken = Signal()   # a state writes the cache memory this cycle (`mem_write`)

        def mem_write(slot, field, value, halves=0b11):
            """Statements (comb) that write `value` into row `field` of cache slot `slot`."""
            return [cache.wr_en.eq(halves), cache.wr_slot.eq(slot), cache.wr_field.eq(field),
                    cache.wr_data.eq(value), port_taken.eq(1)]

        def write_through(field, value, halves=0b11):
            """Statements (comb) that write `value` into field `field` of the current VMCS:
            its memory row now, the working copy two cycles later (`ReadBack`)."""
            if isinstance(field, int):
                field = Const(field, range(NF))
            m.d.comb += [wc_dirty.eq(1), *mem_write(wc_slot, field, value, halves),
                         read_back.write.eq(1), read_back.write_row.eq(field_row(field)),
                         read_back.write_lanes.eq(lane_enables(field, halves))]

        def commit_error(err):
            """VMfailValid: the error number goes to the current VMCS."""
            write_through(_SLOT["vm_instruction_error"], err)

        # --- memory port defaults ------------------------------------------------------------
        mreq = self.mem_req
        mresp = self.mem_resp

        # --- sequencing registers ------------------------------------------------------------
        base = Signal(mpa)              # the memory operand's address (a VMCS region's, ...)
        victim = Signal(range(self.slots))
        fail_qual = Signal(3)
        vmxoff_epoch = Signal(30)       # counts VMXOFFs (see the module docstring)
        tgt_hit = Signal()
        tgt_slot = Signal(range(self.slots))
        # Region write-backs and loads (`RegionTransfer`): the memory port is theirs while
        # they run (no state of the sequencer uses it then), and so is the cache memory's read
        # port outside IDLE.
        m.submodules.region_transfer = transfer = RegionTransfer(slots=self.slots,
                                                                 maxphyaddr=mpa)
        m.d.comb += [transfer.mem_req.ready.eq(mreq.ready),
                     transfer.mem_resp.valid.eq(mresp.valid),
                     transfer.mem_resp.payload.eq(mresp.payload),
                     transfer.rd_data.eq(cache.rd_data)]
        with m.If(transfer.busy):
            m.d.comb += [mreq.valid.eq(transfer.mem_req.valid),
                         mreq.payload.eq(transfer.mem_req.payload),
                         mresp.ready.eq(transfer.mem_resp.ready)]

        def start_transfer(load, slot, region, launch_qword=0):
            """Statements (comb) that start a region write-back or load."""
            return [transfer.start.eq(1), transfer.load.eq(load), transfer.slot.eq(slot),
                    transfer.region.eq(region), transfer.launch_qword.eq(launch_qword)]

        # The cache memory's read port: in IDLE the field of the offered instruction in the
        # current VMCS's row (a VMREAD's value), taken only when an instruction is accepted so
        # that it holds while the result waits; in the sequences the region write-back's.
        with m.If(idle):
            m.d.comb += [cache.rd_slot.eq(wc_slot), cache.rd_field.eq(f_idx),
                         cache.rd_en.eq(self.instr.valid & self.instr.ready)]
        with m.Else():
            m.d.comb += [cache.rd_slot.eq(transfer.rd_slot), cache.rd_field.eq(transfer.rd_field),
                         cache.rd_en.eq(1)]

        # A VMPTRLD that switches slots: the copy of the slot's rows into the working copy
        # (`RowCopy`) runs on after the answer (`switching`: this VMPTRLD started one).
        switching = Signal()

        def copy_slot(slot):
            """Statements (comb) that start the copy of slot `slot` into the working copy."""
            return [row_copy.start.eq(1), row_copy.slot.eq(slot)]

        def vmptrld_revision_error():
            """VMfailValid(11) if there is a current VMCS (else VMfailInvalid)."""
            with m.If(cur_valid):
                commit_error(VmInstructionError.VMPTRLD_INCORRECT_REVISION)
                m.d.comb += answer(VmxResult.FAIL_VALID,
                                   VmInstructionError.VMPTRLD_INCORRECT_REVISION)
            with m.Else():
                m.d.comb += answer(VmxResult.FAIL_INVALID)

        def vmptrld_done(slot):
            """VMPTRLD succeeds: the working copy holds (from the next cycle) cache slot `slot`."""
            m.d.sync += [wc_slot.eq(slot), wc_live.eq(1), cur_ptr.eq(q_ptr)]
            m.d.comb += answer(VmxResult.SUCCEED)
            m.next = "IDLE"

        # The row port: the read-back of a write (module doc above), else the copy's.
        with m.If(read_back.read):
            m.d.comb += [cache.row_slot.eq(wc_slot), cache.row_index.eq(read_back.read_row)]
        with m.Else():
            m.d.comb += [cache.row_slot.eq(row_copy.row_slot),
                         cache.row_index.eq(row_copy.row_index)]
        q_ptr = q.mem[0:64]
        m.d.comb += [cache.lookup_tag.eq(q_ptr[12:mpa]), cache.b_slot.eq(victim)]

        # Invalidation request register.
        # The request is INVEPT's or INVVPID's in state INVAL (from the operands in `q`), else
        # the VPID-0 invalidation of a VM entry or exit without VPIDs.
        inv = self.inval.payload
        inv_valid = Signal()
        m.d.comb += [self.inval.valid.eq(inv_valid), inv.kind.eq(Invalidation.VPID)]
        q_type = Signal(64)
        m.d.comb += q_type.eq(Mux(q.cpu.efer[bit(EFER_LMA)] & q.cpu.cs_l, q.reg, q.reg[0:32]))

        def region_revision_ok(dword):
            return revision_ok(dword, self.revision_id)

        # --- VM entry: its checks, host state, guest state loaded -----------------------------
        # The checks (`EntrySequence`: the link pointer's revision, `VmEntryChecks`, the
        # PDPTEs) start in IDLE as the instruction is accepted: the processor state is the
        # offered instruction's there, `q`'s after. The memory port is theirs while they run.
        m.submodules.entry_sequence = entry_seq = EntrySequence(maxphyaddr=mpa,
                                                                revision_id=self.revision_id)
        m.d.comb += [entry_seq.cpu.eq(Mux(idle, d.cpu, q.cpu)), entry_seq.vmcs.eq(wc),
                     entry_seq.current_vmcs.eq(cur_ptr), entry_seq.ept_enabled.eq(ept_on),
                     entry_seq.read_req.ready.eq(mreq.ready),
                     entry_seq.read_resp.valid.eq(mresp.valid),
                     entry_seq.read_resp.payload.eq(mresp.payload.data)]
        with m.If(entry_seq.busy):
            m.d.comb += [mreq.valid.eq(entry_seq.read_req.valid),
                         mreq.payload.addr.eq(entry_seq.read_req.payload),
                         mresp.ready.eq(entry_seq.read_resp.ready)]

        # Host state a VM exit or VM-entry failure loads, from the working copy and the CR0/EFER
        # the processor has when it happens (`current_cr0_efer`, set by the state that loads it).
        m.submodules.host_load = host_load = HostStateLoad(maxphyaddr=mpa)
        m.d.comb += host_load.vmcs.eq(wc)

        def current_cr0_efer(cr0, efer):
            return [host_load.kept_cr0.eq(cr0[0:32] & (~CR0_HOST_LOADED & _U32)),
                    host_load.kept_efer.eq(efer & (~(EFER_LMA | EFER_LME) & _U64))]
        host_calc = host_load.host
        host_reg = Signal(HOST_LOAD_LAYOUT)
        m.d.comb += [self.host.eq(host_reg), self.exit_resp.payload.eq(host_reg)]

        # Guest state a successful entry loads, from the working copy (the PDPTEs of a PAE
        # guest without EPT from memory: `EntrySequence` reads them).
        m.submodules.guest_load = guest_load = GuestStateLoad()
        m.d.comb += [guest_load.vmcs.eq(wc), guest_load.efer.eq(q.cpu.efer & (~EFER_LMA & _U64)),
                     *(guest_load.pdptes[i].eq(entry_seq.pdptes[64 * i:64 * (i + 1)])
                       for i in range(4)),
                     guest_load.ept_enabled.eq(ept_on), guest_load.vpid_enabled.eq(vpid_on),
                     guest_load.unrestricted_guest.eq(ug_on)]
        entry_calc = guest_load.entry
        guest_efer = entry_calc.guest.guest_ia32_efer
        m.d.comb += entry_seq.pae.eq(guest_load.pae)
        entry_reg = Signal(ENTRY_LAYOUT)
        m.d.comb += self.entry.eq(entry_reg)
        # Translation context of the running guest (eptp follows VMFUNC).
        ctx = Signal(context_layout())
        m.d.comb += self.ctx.eq(ctx)

        launch_op = q.op == VmxOp.VMLAUNCH

        # VM exit (model `vm_exit`): the port's payload.
        ex = self.exit.payload
        g_vpid_on = Signal()        # the running guest has VPIDs enabled

        # What a VM exit or a VM-entry failure writes in one cycle: `ExitFieldWrites`, enabled by
        # the state that takes the exit or fails the entry; the fields of the working copy go
        # to its parallel port, all of them to the exit write-back.
        m.submodules.exit_fields = exit_fields = ExitFieldWrites()
        n_info = len(EXIT_INFO_WRITTEN)
        m.d.comb += [exit_fields.exit.eq(ex), exit_fields.vmcs.eq(wc),
                     exit_fields.ept_enabled.eq(ept_on),
                     exit_fields.failure_qualification.eq(fail_qual),
                     *(working_copy.par_data[member_name(n)].eq(exit_fields.data[member_name(n)])
                       for n in PARALLEL_FIELDS),
                     working_copy.par_en.eq(exit_fields.enables[n_info:])]

        # Write-back of the fields a VM exit or a VM-entry failure wrote into the current VMCS's
        # row, in the background (`ExitWriteBack`), in every cycle no state writes the memory
        # (those assignments come later and win) and no indexed write is on its way into the
        # working copy. Meanwhile the guest may be resumed; what reads the rows waits (VMREAD,
        # VMPTRLD, VMCLEAR), and so does a VMWRITE of a field the write-back still holds (see
        # `needs_rows`).
        m.submodules.exit_write_back = write_back = ExitWriteBack()
        m.d.comb += [write_back.written.eq(exit_fields.data),
                     write_back.written_en.eq(exit_fields.enables),
                     *(write_back.current[member_name(n)].eq(wc[member_name(n)])
                       for n in PARALLEL_FIELDS),
                     write_back.hold.eq(wc_pending), write_back.taken.eq(port_taken),
                     write_back.query_field.eq(f_idx)]
        with m.If(write_back.wr_valid):
            m.d.comb += [cache.wr_en.eq(0b11), cache.wr_slot.eq(wc_slot),
                         cache.wr_field.eq(write_back.wr_field),
                         cache.wr_data.eq(write_back.wr_data)]
        side_wb = write_back.busy
        side_pending = write_back.query_pending
        side_held = write_back.query_held

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                accept = Signal()
                # Instructions that read the cache memory's rows wait for the write-back: a
                # VMREAD only for a field not copied yet, VMPTRLD and VMCLEAR for all of it.
                needs_rows = Signal()
                op_in = self.instr.payload.op
                m.d.comb += needs_rows.eq(((op_in == VmxOp.VMREAD) & side_pending)
                                          | ((op_in == VmxOp.VMWRITE) & side_held)
                                          | (op_in == VmxOp.VMPTRLD)
                                          | (op_in == VmxOp.VMCLEAR))
                # VMLAUNCH/VMRESUME read the working copy as they are accepted: not while an
                # indexed write is still on its way into it or a VMPTRLD's copy runs.
                entry_in = (op_in == VmxOp.VMLAUNCH) | (op_in == VmxOp.VMRESUME)
                m.d.comb += [self.instr.ready.eq(result_reg.free
                                                 & ~(side_wb & needs_rows)
                                                 & ~(entry_in & (wc_pending | row_copy.busy))),
                             accept.eq(self.instr.valid & self.instr.ready)]
                # A VM exit is taken when no instruction is (the core sends one or the other).
                m.d.comb += self.exit.ready.eq(~self.instr.valid & result_reg.free)
                with m.If(self.exit.valid & self.exit.ready):
                    with m.If(nonroot):
                        m.d.comb += exit_fields.vm_exit.eq(1)
                        m.d.comb += [wc_dirty.eq(1), *current_cr0_efer(ex.guest.guest_cr0,
                                                       ex.guest.guest_ia32_efer)]
                        m.d.sync += [host_reg.eq(host_calc), mode.eq(VmxMode.ROOT),
                                     ctx.eq(0)]
                        m.d.comb += write_back.start.eq(1)
                        with m.If(~g_vpid_on):
                            m.d.sync += inv_valid.eq(1)
                            m.next = "EXIT_INVAL"
                        with m.Else():
                            m.next = "EXIT_RESP"
                    with m.Else():
                        m.next = "EXIT_RESP"
                with m.If(accept):
                    m.d.sync += q.eq(self.instr.payload)
                    with m.If(d.precheck):
                        # Only the part the model's precheck covers; no state change.
                        with m.If(o_pre & ~((d.op == VmxOp.VMREAD)
                                            & (o_kind == VmxResult.SUCCEED))):
                            m.d.comb += answer(o_kind, o_err, o_exit, o_qual)
                        with m.Else():
                            m.d.comb += answer(VmxResult.SUCCEED, proceed=1)
                    with m.Elif(o_act == _Act.NONE):
                        m.d.comb += answer(o_kind, o_err, o_exit, o_qual, o_val)
                        with m.If(o_kind == VmxResult.FAIL_VALID):
                            commit_error(o_err)
                        with m.If((d.op == VmxOp.VMREAD) & (o_kind == VmxResult.SUCCEED)):
                            m.d.comb += [result_reg.from_memory.eq(1),
                                         result_reg.value_high.eq(f_high),
                                         result_reg.value_long.eq(long_mode)]
                    with m.Elif(o_act == _Act.VMWRITE):
                        write_through(f_idx, vmwrite_value, vmwrite_halves)
                        m.d.comb += answer(VmxResult.SUCCEED)
                    with m.Elif(o_act == _Act.VMXOFF):
                        m.d.sync += [mode.eq(VmxMode.OUTSIDE), vmxon_ptr.eq(0),
                                     cur_ptr.eq(INVALID_VMCS_POINTER)]
                        m.d.comb += cache.vmxoff.eq(1)
                        m.d.sync += vmxoff_epoch.eq(vmxoff_epoch + 1)
                        m.d.comb += answer(VmxResult.SUCCEED)
                    with m.Elif(o_act == _Act.VMXON):
                        m.d.sync += base.eq(ptr)
                        m.next = "VMXON_REQ"
                    with m.Elif(o_act == _Act.VMCLEAR):
                        m.d.sync += base.eq(ptr)
                        m.next = "CLEAR_START"
                    with m.Elif(o_act == _Act.VMPTRLD):
                        m.d.sync += base.eq(ptr)
                        m.next = "PTR_REQ"
                    with m.Elif(o_act == _Act.INVEPT):
                        m.d.sync += inv_valid.eq(1)
                        m.next = "INVAL"
                    with m.Elif(o_act == _Act.INVVPID):
                        m.d.sync += inv_valid.eq(1)
                        m.next = "INVAL"
                    with m.Elif(o_act == _Act.VMFUNC):
                        m.d.sync += base.eq(Cat(Const(0, 3), d.value[0:9],
                                                wc.eptp_list_address[12:mpa]))
                        m.next = "FUNC_REQ"
                    with m.Elif(o_act == _Act.ENTRY):
                        m.d.comb += entry_seq.start.eq(1)
                        m.next = "ENTRY"

            # --- INVEPT / INVVPID: hand the request to the translation unit -------------------
            with m.State("INVAL"):
                with m.If(q.op == VmxOp.INVEPT):
                    m.d.comb += [inv.kind.eq(Mux(q_type == 1, Invalidation.EPTP,
                                                 Invalidation.ALL)),
                                 inv.eptp.eq(Mux(q_type == 1, q.mem[0:64], 0))]
                with m.Else():
                    m.d.comb += [inv.kind.eq(Mux(q_type == 0, Invalidation.VPID_ADDR,
                                                 Mux(q_type == 2, Invalidation.ALL,
                                                     Invalidation.VPID))),
                                 inv.vpid.eq(Mux(q_type == 2, 0, q.mem[0:16])),
                                 inv.gla.eq(Mux(q_type == 0, q.mem[64:128], 0))]
                with m.If(self.inval.ready):
                    m.d.sync += inv_valid.eq(0)
                    m.d.comb += answer(VmxResult.SUCCEED)
                    m.next = "IDLE"

            # --- VMXON: revision dword of the VMXON region ----------------------------------
            with m.State("VMXON_REQ"):
                m.d.comb += [mreq.valid.eq(1), mreq.payload.addr.eq(base)]
                with m.If(mreq.ready):
                    m.next = "VMXON_RESP"
            with m.State("VMXON_RESP"):
                m.d.comb += mresp.ready.eq(1)
                with m.If(mresp.valid):
                    with m.If(region_revision_ok(mresp.payload.data[0:32])):
                        m.d.sync += [mode.eq(VmxMode.ROOT), vmxon_ptr.eq(ext(base, 64)),
                                     cur_ptr.eq(INVALID_VMCS_POINTER)]
                        m.d.comb += answer(VmxResult.SUCCEED)
                    with m.Else():
                        m.d.comb += answer(VmxResult.FAIL_INVALID)
                    m.next = "IDLE"

            # --- VMFUNC leaf 0: EPTP-list entry -------------------------------------------------
            with m.State("FUNC_REQ"):
                m.d.comb += [mreq.valid.eq(1), mreq.payload.addr.eq(base)]
                with m.If(mreq.ready):
                    m.next = "FUNC_RESP"
            with m.State("FUNC_RESP"):
                m.d.comb += mresp.ready.eq(1)
                with m.If(mresp.valid):
                    entry = mresp.payload.data
                    with m.If(eptp_ok(entry, mpa)):
                        m.d.sync += [ctx.eptp.eq(entry), entry_reg.eptp.eq(entry)]
                        write_through(_SLOT["ept_pointer"], entry)
                        m.d.comb += answer(VmxResult.COMPLETE, eptp=entry)
                    with m.Else():
                        m.d.comb += answer(VmxResult.VM_EXIT,
                                           exit_reason=ExitReason.VMFUNC.value)
                    m.next = "IDLE"

            # --- VMCLEAR --------------------------------------------------------------------
            with m.State("CLEAR_START"):
                m.d.sync += [tgt_hit.eq(cache.hit), tgt_slot.eq(cache.hit_slot)]
                with m.If(cache.hit):
                    m.d.comb += start_transfer(0, cache.hit_slot, base[12:mpa])
                    m.next = "CLEAR_WB"
                with m.Else():
                    m.next = "CLEAR_LS"
            with m.State("CLEAR_LS"):
                m.d.comb += [mreq.valid.eq(1),
                             mreq.payload.addr.eq(Cat(Const(8, 12), base[12:mpa])),
                             mreq.payload.write.eq(1), mreq.payload.data.eq(0)]
                with m.If(mreq.ready):
                    m.next = "CLEAR_DONE"
            with m.State("CLEAR_WB"):
                with m.If(transfer.done):
                    m.d.comb += [cache.free.eq(1), cache.free_slot.eq(tgt_slot)]
                    with m.If(wc_live & (wc_slot == tgt_slot)):
                        m.d.sync += wc_live.eq(0)
                    m.next = "CLEAR_DONE"
            with m.State("CLEAR_DONE"):
                with m.If(cur_ptr == ext(base, 64)):
                    m.d.sync += cur_ptr.eq(INVALID_VMCS_POINTER)
                m.d.comb += answer(VmxResult.SUCCEED)
                m.next = "IDLE"

            # --- VMPTRLD --------------------------------------------------------------------
            with m.State("PTR_REQ"):
                # The revision read, and meanwhile the lookup and, on a hit of another slot,
                # the start of the copy of its rows into the working copy.
                m.d.comb += [mreq.valid.eq(1), mreq.payload.addr.eq(base)]
                switch = cache.hit & ~(wc_live & (wc_slot == cache.hit_slot))
                with m.If(mreq.ready):
                    m.d.sync += [tgt_hit.eq(cache.hit), tgt_slot.eq(cache.hit_slot),
                                 victim.eq(cache.victim), switching.eq(switch)]
                    with m.If(switch):
                        m.d.comb += copy_slot(cache.hit_slot)
                    m.next = "PTR_RESP"
            with m.State("PTR_RESP"):
                m.d.comb += mresp.ready.eq(1)
                with m.If(mresp.valid):
                    with m.If(~region_revision_ok(mresp.payload.data[0:32])):
                        with m.If(switching):
                            # The copy has begun to overwrite the current VMCS's working copy:
                            # copy it back from its rows.
                            m.d.comb += copy_slot(wc_slot)
                        vmptrld_revision_error()
                        m.next = "IDLE"
                    with m.Elif(tgt_hit):
                        m.d.comb += [cache.touch.eq(1), cache.touch_slot.eq(tgt_slot)]
                        vmptrld_done(tgt_slot)
                    with m.Else():
                        m.d.comb += [cache.touch.eq(1), cache.touch_slot.eq(victim)]
                        m.next = "EVICT"
            with m.State("EVICT"):
                # The victim, if it holds a VMCS that changed, goes back to its region first.
                with m.If(cache.b_valid & cache.b_dirty):
                    launch_qword = Signal(LaunchStateQwordLayout)
                    m.d.comb += [launch_qword.eq(0),     # reserved bits 0
                                 launch_qword.launched.eq(cache.b_launched),
                                 launch_qword.launched_before_vmxoff.eq(cache.b_lbv),
                                 launch_qword.evicted.eq(1),
                                 launch_qword.vmxoff_count.eq(vmxoff_epoch),
                                 *start_transfer(0, victim, cache.b_tag, launch_qword)]
                    m.next = "EVICT_WB"
                with m.Else():
                    m.d.comb += start_transfer(1, victim, base[12:mpa])
                    m.next = "LOAD"
            with m.State("EVICT_WB"):
                with m.If(transfer.done):
                    m.d.comb += [cache.free.eq(1), cache.free_slot.eq(victim),
                                 *start_transfer(1, victim, base[12:mpa])]
                    m.next = "LOAD"
            with m.State("LOAD"):
                # The region into the victim's memory rows, then copied into the working
                # copy (`RowCopy`) after the answer.
                with m.If(transfer.wr_valid):
                    m.d.comb += mem_write(transfer.wr_slot, transfer.wr_field, transfer.wr_data)
                with m.If(transfer.done):
                    ld = transfer.launch
                    m.d.comb += [cache.fill.eq(1), cache.fill_slot.eq(victim),
                                 cache.fill_tag.eq(base[12:mpa]),
                                 cache.fill_launched.eq(ld.launched),
                                 cache.fill_lbv.eq(
                                     ld.launched_before_vmxoff
                                     | (ld.launched & ld.evicted
                                        & (ld.vmxoff_count != vmxoff_epoch)))]
                    m.d.comb += copy_slot(victim)
                    vmptrld_done(victim)
            # --- VM entry: the link pointer's revision (if needed), the checks, the PDPTEs --------
            with m.State("ENTRY"):
                with m.If(entry_seq.done):
                    outcome = entry_seq.outcome
                    with m.If(outcome == EntryOutcome.CONTROLS):
                        commit_error(VmInstructionError.ENTRY_INVALID_CONTROL_FIELD)
                        m.d.comb += answer(VmxResult.FAIL_VALID,
                                           VmInstructionError.ENTRY_INVALID_CONTROL_FIELD)
                        m.next = "IDLE"
                    with m.Elif(outcome == EntryOutcome.HOST):
                        commit_error(VmInstructionError.ENTRY_INVALID_HOST_STATE)
                        m.d.comb += answer(VmxResult.FAIL_VALID,
                                           VmInstructionError.ENTRY_INVALID_HOST_STATE)
                        m.next = "IDLE"
                    with m.Elif(outcome == EntryOutcome.GUEST):
                        m.d.sync += fail_qual.eq(entry_seq.qualification)
                        m.next = "ENTRY_FAIL"
                    with m.Else():
                        # The guest runs.
                        m.d.sync += [mode.eq(VmxMode.NON_ROOT), entry_reg.eq(entry_calc),
                                     g_vpid_on.eq(vpid_on),
                                     ctx.cr0.eq(wc.guest_cr0[0:32]), ctx.cr3.eq(wc.guest_cr3),
                                     ctx.cr4.eq(wc.guest_cr4[0:32]), ctx.efer.eq(guest_efer[0:32]),
                                     ctx.eptp.eq(Mux(ept_on, wc.ept_pointer, 0)),
                                     ctx.ept_enable.eq(ept_on),
                                     ctx.vpid.eq(Mux(vpid_on, wc.virtual_processor_id, 0))]
                        with m.If(launch_op):
                            m.d.comb += [cache.set_launched.eq(1), cache.launch_slot.eq(wc_slot),
                                         cache.launch_value.eq(1)]
                        with m.If(~vpid_on):
                            m.d.sync += inv_valid.eq(1)
                            m.next = "ENTRY_INVAL"
                        with m.Else():
                            m.d.comb += answer(VmxResult.VM_ENTRY)
                            m.next = "IDLE"
            with m.State("ENTRY_INVAL"):
                with m.If(self.inval.ready):
                    m.d.sync += inv_valid.eq(0)
                    m.d.comb += answer(VmxResult.VM_ENTRY)
                    m.next = "IDLE"
            with m.State("ENTRY_FAIL"):
                # VM-entry failure: exit reason and qualification written, host state loaded,
                # still in VMX root operation.
                m.d.comb += [exit_fields.entry_failure.eq(1),
                             wc_dirty.eq(1), *current_cr0_efer(q.cpu.cr0, q.cpu.efer)]
                m.d.sync += host_reg.eq(host_calc)
                m.d.comb += answer(VmxResult.VM_EXIT, exit_reason=EXIT_REASON_INVALID_GUEST_STATE,
                                   qual=fail_qual)
                m.d.comb += write_back.start.eq(1)
                m.next = "IDLE"

            # --- VM exit: invalidation (no VPIDs), then the host state --------------------------
            with m.State("EXIT_INVAL"):
                with m.If(self.inval.ready):
                    m.d.sync += inv_valid.eq(0)
                    m.next = "EXIT_RESP"
            with m.State("EXIT_RESP"):
                m.d.comb += self.exit_resp.valid.eq(1)
                with m.If(self.exit_resp.ready):
                    m.next = "IDLE"

        return m
