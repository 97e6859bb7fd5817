"""The execution engine of the x86-64 core: a multi-cycle FSM around `Decoder`, `AddressGen`
(the effective address), `ExecuteUnit` (operands, `Alu`, branch) and `Destination` (where the
result goes, the stack's use), with `FetchLines`, `Prefetcher`, `PrefetchPolicy` and
`WindowSelect` on the fetch side.

One instruction at a time; one memory request of the FSM's outstanding (the prefetcher may add
one for code).
Per instruction: FETCH/FETCH_WAIT one qword at a time into a 3-qword window buffer, DEC_WAIT +
DECODE until the decoded length fits in the bytes fetched (or the 15-byte window is full),
then [LOAD] the memory or stack source, EXEC (ALU, condition, new RIP, write-back values, all
registered), [STORE] the memory or stack destination, [SP_UPDATE], RETIRE (register, RFLAGS,
RIP); an instruction that falls through retires earlier, in DECODE, EXEC or STORE_WAIT
(docs/core.md). Architectural state changes only in SP_UPDATE, RETIRE and those commits, after
every access that can fault, so a fault leaves the state of the instruction's start (see
docs/core.md for the one exception: a split store whose second half faults).

Memory port (`mem_req` / `mem_resp`, `rtl.core.core_layouts`): qword-aligned accesses with a
byte mask; an access crossing a qword boundary is split in two. Responses come in order, one per
request, with an `Outcome` and error code.

The core starts in IDLE; `load` (one cycle, only while `idle`: no request outstanding) loads
RIP, RFLAGS (as given: bit 1 must be set) and the GPRs from `init_*` and starts fetching. HLT
ends in HALTED (`halted`); a fault or an instruction that needs another unit ends in STOPPED
(`exception`). Stops and their vectors / units: docs/core.md.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.paging import CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME, Access, Outcome
from ..arch.vmx import (
    CR0_ET,
    CR0_MP,
    CR0_NE,
    RFLAGS_AC,
    RFLAGS_ARITH,
    RFLAGS_DF,
    RFLAGS_FIXED1,
    RFLAGS_ID,
    RFLAGS_IF,
    RFLAGS_IOPL,
    RFLAGS_NT,
    RFLAGS_RF,
    RFLAGS_TF,
)
from ..translation.checks import canonical
from .access import AccessLanes
from .address import AddressGen
from .core_layouts import (
    EXCEPTION_LAYOUT,
    MEM_REQ_LAYOUT,
    MEM_RESP_LAYOUT,
    SYS_REQ_LAYOUT,
    SYS_RESP_LAYOUT,
    VECTOR_GP,
    VECTOR_PF,
    VECTOR_SS,
    VECTOR_UD,
    CoreState,
    NeedsUnit,
    StopKind,
    SysAction,
    SysKind,
)
from .decode import Decoder
from .destination import STACK_LOAD, STACK_STORE, Destination
from .execute import ExecuteUnit
from .fetch_lines import QWORD_ADDR_WIDTH, FetchLines
from .layouts import DECODED_LAYOUT, MAX_INSN_BYTES, InsnClass, OpSize, bytes_of, is_one_of
from .prefetch import Prefetcher
from .prefetch_policy import PrefetchPolicy
from .regfile import READ_PORTS, RSP, RegisterFile, high8
from .window import WindowSelect

__all__ = ["Core", "RESET_CR0", "RESET_CR4", "RESET_EFER", "POPF_MASK"]

#: Boot state of issue 5: protected mode with paging, long mode active.
RESET_CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
RESET_CR4 = CR4_PAE
RESET_EFER = EFER_LME | EFER_LMA

#: RFLAGS bits POPF writes at CPL 0 in 64-bit mode (SDM POPF: all non-reserved flags except RF,
#: VIP, VIF and VM; VIP, VIF, VM are unaffected and RF is cleared).
POPF_MASK = (RFLAGS_ARITH | RFLAGS_TF | RFLAGS_IF | RFLAGS_DF | RFLAGS_IOPL | RFLAGS_NT
             | RFLAGS_AC | RFLAGS_ID)
# The register file's read ports (`rtl.core.regfile`).
_READ_RM, _READ_REG, _READ_OPREG, _READ_BASE, _READ_INDEX = range(READ_PORTS)
#: Qwords of recently fetched code kept by linear address (`rtl.core.fetch_lines`).
FETCH_LINES = 4

_NEEDS_UNIT = {
    InsnClass.CPUID: NeedsUnit.CPUID, InsnClass.RDTSC: NeedsUnit.TSC,
    InsnClass.RDMSR: NeedsUnit.MSR, InsnClass.WRMSR: NeedsUnit.MSR,
    InsnClass.MOV_FROM_CR: NeedsUnit.CR, InsnClass.MOV_TO_CR: NeedsUnit.CR,
    InsnClass.INVLPG: NeedsUnit.TLB,
    InsnClass.IN_IMM: NeedsUnit.IO, InsnClass.IN_DX: NeedsUnit.IO,
    InsnClass.OUT_IMM: NeedsUnit.IO, InsnClass.OUT_DX: NeedsUnit.IO,
    **{c: NeedsUnit.VMX for c in InsnClass if c.value >= InsnClass.VMCALL.value},
}

# Classes whose r/m operand is a source read before EXEC (when it is memory).
_RM_SOURCE = (InsnClass.ALU_RM_R, InsnClass.ALU_R_RM, InsnClass.ALU_RM_IMM, InsnClass.UNARY_RM,
              InsnClass.SHIFT_RM_IMM, InsnClass.SHIFT_RM_CL, InsnClass.MOV_R_RM, InsnClass.MOVZX,
              InsnClass.MOVSX, InsnClass.CMOVCC, InsnClass.PUSH_RM, InsnClass.JMP_RM,
              InsnClass.CALL_RM)
_EXECUTED = (*_RM_SOURCE, *STACK_LOAD, *STACK_STORE, InsnClass.ALU_ACC_IMM,
             InsnClass.MOV_RM_R, InsnClass.MOV_RM_IMM, InsnClass.MOV_OPREG_IMM, InsnClass.LEA,
             InsnClass.SETCC, InsnClass.JCC, InsnClass.JMP_REL, InsnClass.NOP)
# Classes the system executes (the `sys_req` port): HLT too, because in VMX non-root operation
# it may exit to the hypervisor.
_SYSTEM = (*_NEEDS_UNIT, InsnClass.HLT)
# System instructions that, outside VMX non-root operation, change no translation, no control
# register and no code byte: a prefetch may be in flight while the system port runs them.
# (WRMSR other than to EFER keeps the fetched bytes too, but whether it writes EFER is known
# only from the system's answer.)
_OVERLAPPED = (InsnClass.CPUID, InsnClass.RDTSC, InsnClass.RDMSR, InsnClass.IN_IMM,
               InsnClass.IN_DX, InsnClass.OUT_IMM, InsnClass.OUT_DX, InsnClass.VMREAD,
               InsnClass.VMWRITE)
assert not set(_EXECUTED) & set(_SYSTEM)
assert set(_EXECUTED) | set(_SYSTEM) | {InsnClass.INVALID} == set(InsnClass)


class Core(wiring.Component):
    """The core's execution engine; see the module docstring and docs/core.md."""

    mem_req: Out(stream.Signature(MEM_REQ_LAYOUT))
    mem_resp: In(stream.Signature(MEM_RESP_LAYOUT))
    # The system port: system instructions, faults and boundary events (core_layouts).
    sys_req: Out(stream.Signature(SYS_REQ_LAYOUT))
    sys_resp: In(stream.Signature(SYS_RESP_LAYOUT))
    event_pending: In(1)    # an event waits for the next instruction boundary (or wakes HLT)
    non_root: In(1)         # VMX non-root operation: any system instruction may exit
    fetch_flush: Out(1)     # every fetched byte is dropped now (see `MEM_RESP_LAYOUT.code`)

    load: In(1)
    init_rip: In(64)
    init_rflags: In(64)
    init_gpr: In(data.ArrayLayout(64, 16))
    init_cr3: In(64)        # CR0, CR4 and EFER take their boot values on `load`

    state: Out(CoreState)
    idle: Out(1)            # IDLE, HALTED or STOPPED: no request outstanding, `load` is safe
    halted: Out(1)
    exception: Out(EXCEPTION_LAYOUT)
    retired: Out(1)         # one-cycle pulse per retired instruction
    retiring: Out(1)        # an instruction retires at the end of this cycle
    retired_count: Out(64)
    retired_rip: Out(64)    # with `retired`: the instruction's RIP, length and bytes
    retired_len: Out(4)
    retired_bytes: Out(8 * MAX_INSN_BYTES)
    gpr: Out(data.ArrayLayout(64, 16))
    # While the system port works on an instruction: the registers its ModRM.rm and ModRM.reg
    # name (64 bits; the system classes have no AH..BH operands), from the read ports.
    sys_rm_val: Out(64)
    sys_reg_val: Out(64)
    rip: Out(64)
    rflags: Out(64)
    cr0: Out(64)
    cr3: Out(64)
    cr4: Out(64)
    efer: Out(64)

    def __init__(self, *, reset_cr3=0):
        self._reset_cr3 = reset_cr3
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = dec = Decoder()
        m.submodules.lines = lines = FetchLines(lines=FETCH_LINES, ports=2)
        flush_lines = Signal()
        m.d.comb += [lines.flush.eq(flush_lines), self.fetch_flush.eq(flush_lines)]

        # --- Architectural state -----------------------------------------------------------
        m.submodules.regs = regs = RegisterFile()
        gpr = regs.gpr
        rip = Signal(64)
        rflags = Signal(64, init=RFLAGS_FIXED1)
        cr0 = Signal(64, init=RESET_CR0)
        cr3 = Signal(64, init=self._reset_cr3)
        cr4 = Signal(64, init=RESET_CR4)
        efer = Signal(64, init=RESET_EFER)
        count = Signal(64)
        m.d.comb += [self.gpr[i].eq(gpr[i]) for i in range(16)]
        m.d.comb += [self.rip.eq(rip), self.rflags.eq(rflags), self.cr0.eq(cr0),
                     self.cr3.eq(cr3), self.cr4.eq(cr4), self.efer.eq(efer),
                     self.retired_count.eq(count)]

        def reg(port, n):
            """64-bit read of GPR number `n` (a 4-bit value) on the register file's read port
            `port`."""
            m.d.comb += regs.rd_addr[port].eq(n)
            return regs.rd_data[port]

        def rd(port, n, size):
            """GPR `n` as an operand of `size` (AH..BH land in bits 7:0), on read port `port`."""
            hi8 = high8(n, size, insn.rex)
            full = reg(port, Mux(hi8, n & 3, n))
            return Mux(hi8, full[8:16], full)

        fsm = Signal(CoreState)
        in_decode = fsm == CoreState.DECODE
        m.submodules.prefetch = pf = Prefetcher()
        pf_busy = pf.busy
        # The instruction being executed: the decoder's output in DECODE; after it, the copy
        # DECODE took (`xinsn`), because in DECODE the decoder already works on the next
        # instruction's window.
        xinsn = Signal(DECODED_LAYOUT)
        insn = Signal(DECODED_LAYOUT)
        m.d.comb += insn.eq(Mux(in_decode, dec.insn.as_value(), xinsn.as_value()))
        m.d.comb += [self.state.eq(fsm),
                     self.idle.eq(((fsm == CoreState.IDLE) | (fsm == CoreState.HALTED)
                                   | (fsm == CoreState.STOPPED)) & ~pf_busy),
                     self.halted.eq(fsm == CoreState.HALTED)]

        # --- Fetch window -------------------------------------------------------------------
        buf = Signal(3 * 64)            # qwords fetched from the window's qword
        nq = Signal(2)                  # how many are valid
        # The window's start in the first qword: RIP[2:0], except in the RETIRE of an
        # instruction whose successor's window was set up in EXEC (`advanced`).
        woff = Signal(3)
        advanced = Signal()
        m.submodules.window = ws = WindowSelect()
        window = ws.window              # the 15 bytes from the window's start
        next_sum = ws.next_sum          # woff + the length
        fetched = ws.fetched            # bytes of the window that are real
        # In the states that may retire an instruction (DECODE, EXEC, STORE_WAIT) the decoder
        # gets the window of the next instruction in sequence (after the instruction's length),
        # so that the successor is decoded by the next cycle; everywhere else the window itself.
        # The length: the decoder's in DECODE, the copy's after it (the decoder's output may be
        # the next instruction's already).
        m.d.comb += [ws.buf.eq(buf), ws.nq.eq(nq), ws.woff.eq(woff),
                     ws.length.eq(Mux(in_decode, dec.insn.length, xinsn.length)),
                     ws.ahead.eq(in_decode | (fsm == CoreState.EXEC)
                                 | (fsm == CoreState.STORE_WAIT)),
                     dec.window.as_value().eq(ws.dec_window), dec.window_valid.eq(1)]
        # Small operands are widened through tables of constants: Verilator's -Wall wants both
        # operands of an addition or comparison at the expression's width.
        length = Signal(64)
        with m.Switch(insn.length):
            for k in range(16):
                with m.Case(k):
                    m.d.comb += length.eq(C(k, 64))
        nq_bytes = Signal(64)
        with m.Switch(nq):
            for k in range(4):
                with m.Case(k):
                    m.d.comb += nq_bytes.eq(C(8 * k, 64))
        next_rip = Signal(64)
        m.d.comb += next_rip.eq(rip + length)

        # --- Memory access (`rtl.core.access`: split into at most two qwords) -----------------
        acc_addr = Signal(64)
        acc_size = Signal(4)            # bytes: 1, 2, 4, 8
        acc_data = Signal(64)
        acc_part = Signal()             # 0: first qword, 1: second
        acc_ss = Signal()               # a fault on a non-canonical address is #SS, not #GP
        ld_buf = Signal(128)
        m.submodules.access = acc_lanes = AccessLanes()
        m.d.comb += [acc_lanes.addr.eq(acc_addr), acc_lanes.size.eq(acc_size),
                     acc_lanes.data.eq(acc_data), acc_lanes.part.eq(acc_part),
                     acc_lanes.loaded.eq(ld_buf)]
        ld_val = acc_lanes.value
        two_parts = acc_lanes.two_parts
        part_addr = acc_lanes.req_addr

        # The FSM's view of the memory port; the prefetcher shares the port with it.
        req = pf.fsm_req
        resp = pf.fsm_resp
        wiring.connect(m, pf.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), pf.mem_resp)
        m.d.comb += [req.payload.addr.eq(part_addr), req.payload.mask.eq(acc_lanes.req_mask),
                     req.payload.data.eq(acc_lanes.req_data)]

        # --- System port state -------------------------------------------------------------
        sys_kind = Signal(SysKind)
        sys_loaded = Signal()           # the memory operand is in `sys_mem`
        # The system instruction is one of `_OVERLAPPED`, outside VMX non-root operation: taken
        # when it is decoded (the mode cannot change before the system port runs it; a VM exit
        # changes it while the port works on the instruction that exits).
        sys_overlapped = Signal()
        sys_loading = Signal()          # LOAD_WAIT returns to SYS_LOADED, not EXEC
        sys_half = Signal()             # which qword of a 16-byte operand is being loaded
        sys_16 = Signal()
        sys_mem = Signal(128)
        sys_ret = Signal()              # RETIRE applies the system's answer `sw`
        sw = Signal(SYS_RESP_LAYOUT)
        count_it = Signal()             # RETIRE counts the instruction

        # --- Stop reporting ------------------------------------------------------------------
        exc = Signal(EXCEPTION_LAYOUT)
        m.d.comb += self.exception.eq(exc)

        def fault(vector, error_code=None, addr=0):
            m.d.sync += [exc.valid.eq(1), exc.kind.eq(StopKind.FAULT), exc.vector.eq(vector),
                         exc.has_error_code.eq(error_code is not None),
                         exc.error_code.eq(0 if error_code is None else error_code),
                         exc.rip.eq(rip), exc.addr.eq(addr), exc.unit.eq(NeedsUnit.NONE)]
            # The system decides: stop (root operation) or a VM exit (non-root).
            m.d.sync += [sys_kind.eq(SysKind.FAULT), fsm.eq(CoreState.SYS_REQ)]

        def mem_fault():
            """The response to the current request is a fault: stop with it."""
            is_vmx = (resp.payload.outcome == Outcome.EPT_VIOLATION) | \
                     (resp.payload.outcome == Outcome.EPT_MISCONFIG)
            first = Signal(64)
            m.d.comb += first.eq(Mux(acc_part, part_addr, acc_addr))
            fault(Mux(resp.payload.outcome == Outcome.PAGE_FAULT, VECTOR_PF, VECTOR_GP),
                  resp.payload.error_code, first)
            with m.If(is_vmx):
                m.d.sync += [exc.kind.eq(StopKind.NEEDS_UNIT), exc.unit.eq(NeedsUnit.VMX),
                             exc.vector.eq(0)]

        # --- Decoded-instruction helpers -----------------------------------------------------
        cls = insn.cls
        size = insn.opsize
        # The effective address (`rtl.core.address`), registered in DECODE (`ea`).
        m.submodules.address = ag = AddressGen()
        m.d.comb += [ag.insn.eq(insn), ag.base_val.eq(reg(_READ_BASE, insn.base)),
                     ag.index_val.eq(reg(_READ_INDEX, insn.index)), ag.next_rip.eq(next_rip)]
        ea = Signal(64)
        ea_comb = ag.ea
        ss_ref = ag.ss_ref
        ea_x = Signal(64)               # the EA for EXEC: computed now when EXEC is in DECODE
        m.d.comb += ea_x.eq(Mux(fsm == CoreState.DECODE, ea_comb, ea))
        rsp = gpr[RSP]

        # --- Execute datapath (`rtl.core.execute`: operands by class, ALU, branch) ------------
        rm_val = Mux(insn.mem, ld_val,
                     rd(_READ_RM, insn.rm, Mux(is_one_of(cls, InsnClass.MOVZX, InsnClass.MOVSX),
                                               insn.src_size, size)))
        m.submodules.execute = ex = ExecuteUnit()
        m.d.comb += [ex.insn.eq(insn), ex.rm_val.eq(rm_val),
                     ex.reg_val.eq(rd(_READ_REG, insn.reg, size)),
                     ex.opreg_val.eq(rd(_READ_OPREG, insn.opreg, size)), ex.acc_val.eq(gpr[0]),
                     ex.cl.eq(gpr[1][:6]), ex.ld_val.eq(ld_val), ex.ea.eq(ea_x),
                     ex.next_rip.eq(next_rip), ex.rflags.eq(rflags)]
        taken, target = ex.taken, ex.target
        # Where the result goes, and the stack's use (`rtl.core.destination`).
        m.submodules.destination = dst = Destination()
        m.d.comb += [dst.insn.eq(insn), dst.writes.eq(ex.writes)]
        is_stack_load, is_stack_store = dst.stack_load, dst.stack_store
        stack_size = dst.stack_bytes

        # Registered EXEC results.
        wb_en = Signal()
        wb_reg = Signal(4)
        wb_size = Signal(OpSize)
        wb_hi8 = Signal()
        wb_val = Signal(64)
        new_rflags = Signal(64)
        new_rip = Signal(64)
        sp_en = Signal()
        sp_new = Signal(64)
        halt = Signal()
        stored = Signal()               # the instruction wrote memory (see RETIRE)
        ret_bytes = Signal(8 * MAX_INSN_BYTES)  # the window DECODE last saw (`retired_bytes`)

        # --- Register write-back: RETIRE's registered values, or a commit in DECODE ------------
        gw_en = Signal()
        gw_reg = Signal(4)
        gw_size = Signal(OpSize)
        gw_hi8 = Signal()
        gw_val = Signal(64)
        m.d.comb += [gw_reg.eq(wb_reg), gw_size.eq(wb_size), gw_hi8.eq(wb_hi8), gw_val.eq(wb_val)]
        m.d.comb += [self.sys_rm_val.eq(regs.rd_data[_READ_RM]),
                     self.sys_reg_val.eq(regs.rd_data[_READ_REG])]
        m.d.comb += [regs.wb_en.eq(gw_en), regs.wb_reg.eq(gw_reg), regs.wb_size.eq(gw_size),
                     regs.wb_hi8.eq(gw_hi8), regs.wb_value.eq(gw_val)]

        m.d.sync += self.retired.eq(0)

        sreq = self.sys_req
        sresp = self.sys_resp
        sp = sreq.payload
        m.d.comb += [sp.kind.eq(sys_kind), sp.loaded.eq(sys_loaded), sp.cls.eq(insn.cls),
                     sp.opsize.eq(insn.opsize), sp.reg.eq(insn.reg), sp.rm.eq(insn.rm),
                     sp.mem.eq(insn.mem), sp.ea.eq(ea), sp.disp.eq(insn.disp),
                     sp.imm.eq(insn.imm), sp.mem_val.eq(sys_mem), sp.length.eq(insn.length),
                     sp.scale.eq(insn.scale), sp.index.eq(insn.index),
                     sp.index_valid.eq(insn.index_valid), sp.base.eq(insn.base),
                     sp.base_valid.eq(insn.base_valid), sp.rip_rel.eq(insn.rip_rel),
                     sp.seg.eq(ag.seg)]

        # --- EXEC: the ALU's results registered, the next state chosen ---------------------------
        # Run in EXEC after a load, or right in DECODE when the instruction loads nothing.
        # The next instruction's window when this one falls through: offset and qwords passed
        # (the decoder's look-ahead computes the same sum).
        adv_sum = next_sum
        adv_q = adv_sum[3:5]

        def take_event():
            """An instruction boundary with an event waiting (a VM exit, usually): the fetched
            bytes are dropped, the event goes to the system port."""
            m.d.comb += flush_lines.eq(1)
            m.d.sync += [nq.eq(0), sys_kind.eq(SysKind.EVENT), fsm.eq(CoreState.SYS_REQ)]

        def advance(mark=True):
            """The instruction falls through: the next one's window is set up now, so the
            decoder has it during RETIRE and DECODE follows RETIRE directly. Only when the
            buffered bytes are still the code's (no store that may have changed them).
            `acc_addr` gets back the address of the qword after the buffer (an access used it)."""
            with m.Switch(adv_q):
                for k in (1, 2):
                    with m.Case(k):
                        m.d.sync += buf.eq(Cat(buf[64 * k:], C(0, 64 * k)))
            m.d.sync += [nq.eq(nq - adv_q), woff.eq(adv_sum[:3]),
                         acc_addr.eq(Cat(C(0, 3), rip[3:]) + nq_bytes)]
            if mark:
                m.d.sync += advanced.eq(1)

        def retire_early(new_flags, next_ip):
            """A falling-through instruction retires before RETIRE (DECODE, EXEC, STORE_WAIT):
            RFLAGS, RIP and the retired count as RETIRE would write them (the register through
            `gw_*`, set by the caller), the boundary's event check, and the successor (decoded
            in this cycle from the window after this one) follows in DECODE."""
            m.d.comb += self.retiring.eq(1)
            m.d.sync += [rflags.eq(new_flags), rip.eq(next_ip), count.eq(count + 1),
                         self.retired.eq(1), self.retired_rip.eq(rip),
                         self.retired_len.eq(insn.length), self.retired_bytes.eq(window)]
            with m.If(self.event_pending):
                take_event()
            with m.Else():
                advance(mark=False)
                m.d.sync += fsm.eq(CoreState.DECODE)

        def commit():
            """No store, no taken branch: retires in DECODE (no access) or EXEC (after its load)
            with the ALU's results."""
            m.d.comb += [gw_en.eq(dst.reg_we), gw_reg.eq(dst.reg), gw_size.eq(dst.size),
                         gw_hi8.eq(dst.hi8),
                         gw_val.eq(ex.result)]
            retire_early(ex.rflags_out, next_rip)

        def commit_stored():
            """A store that wrote no fetched code and falls through retires as its answer comes,
            with EXEC's registered results."""
            m.d.comb += gw_en.eq(wb_en)
            m.d.sync += stored.eq(0)
            retire_early(new_rflags, new_rip)

        def execute(may_commit=False):
            m.d.sync += [
                wb_en.eq(dst.reg_we), wb_reg.eq(dst.reg), wb_size.eq(dst.size),
                wb_hi8.eq(dst.hi8),
                wb_val.eq(ex.result),
                new_rflags.eq(ex.rflags_out),
                new_rip.eq(Mux(taken, target, next_rip)),
                halt.eq(0),
                count_it.eq(1),
                acc_part.eq(0),
            ]
            with m.If(cls == InsnClass.POPF):
                mask = Mux(size == OpSize.S16, C(POPF_MASK & 0xFFFF, 64), C(POPF_MASK, 64))
                m.d.sync += new_rflags.eq((rflags & ~(mask | RFLAGS_RF)) | (ld_val & mask)
                                          | RFLAGS_FIXED1)
            # Stack pointer.
            m.d.sync += sp_en.eq(is_stack_load | is_stack_store)
            m.d.sync += sp_new.eq(Mux(is_stack_load, rsp + stack_size, rsp - stack_size))
            # Stores: memory destinations and pushes.
            m.d.sync += acc_data.eq(Mux(cls == InsnClass.POP_RM, ld_val, ex.result))
            with m.If(taken & ~canonical(target)):
                fault(VECTOR_GP, 0)
            with m.Elif(dst.mem_we | is_stack_store):
                with m.If(is_stack_store):
                    m.d.sync += [acc_addr.eq(rsp - stack_size), acc_size.eq(stack_size),
                                 acc_ss.eq(1)]
                with m.Else():
                    m.d.sync += [acc_addr.eq(ea_x), acc_size.eq(bytes_of(dst.size)),
                                 acc_ss.eq(ss_ref)]
                m.d.sync += fsm.eq(CoreState.STORE)
            with m.Elif(is_stack_load):
                m.d.sync += fsm.eq(CoreState.SP_UPDATE)
            with m.Else():
                if may_commit:
                    with m.If(~taken):
                        commit()
                    with m.Else():
                        m.d.sync += fsm.eq(CoreState.RETIRE)
                else:
                    m.d.sync += fsm.eq(CoreState.RETIRE)
                    with m.If(~taken):
                        advance()

        # Port 0: the qword after the buffer (FETCH's, DECODE's, the prefetcher's), or in the
        # RETIRE of a branch the new RIP's; port 1: the one after the new RIP's.
        # (RETIRE fills the buffer from the lines after a branch without going through FETCH.)
        in_retire = fsm == CoreState.RETIRE
        # While a load or store is on its way, and while the system port works on an
        # instruction, the window buffer stays as it is, with the current instruction's qword
        # first: the qword after it is `fetch_next`, looked up on port 1. In the cycle of a
        # load's or store's answer the FSM's own moves of the buffer take precedence (below);
        # the others keep the buffer's meaning (a store into fetched code empties it in
        # RETIRE). Not in the cycle of the system port's answer, which may drop the buffer
        # without moving it; not in DEC_WAIT or DECODE, whose decode must be of the buffer as
        # the decoder saw it. (The conditions are states only, no answer's `valid`: nothing
        # from memory's answer path on the way to the buffer.)
        accessing = Signal()            # the FSM has a load or store on its way
        steady = Signal()
        sys_steady = Signal()           # the system port works on a request
        overlapped = Signal()           # ... that a prefetch may overlap (`_OVERLAPPED`)
        fetch_next = Signal(QWORD_ADDR_WIDTH)
        m.d.comb += [accessing.eq(is_one_of(fsm, CoreState.LOAD, CoreState.STORE,
                                            CoreState.LOAD_WAIT, CoreState.STORE_WAIT)),
                     sys_steady.eq((fsm == CoreState.SYS_REQ)
                                   | ((fsm == CoreState.SYS_WAIT) & ~sresp.valid)),
                     overlapped.eq((sys_kind == SysKind.INSN) & sys_overlapped),
                     steady.eq(accessing | sys_steady),
                     fetch_next.eq(rip[3:] + nq_bytes[3:])]
        m.d.comb += [lines.lookup_addr[0].eq(Mux(in_retire & ~advanced, new_rip[3:],
                                                 acc_addr[3:])),
                     lines.lookup_addr[1].eq(Mux(in_retire, new_rip[3:] + 1, fetch_next)),
                     lines.fill_addr.eq(acc_addr[3:])]
        # The qword after the buffer joins it from the lines meanwhile, so the instructions
        # after the access decode without waiting for it (the FSM's own assignments below take
        # precedence: a fault empties the buffer). A store into that qword is answered with
        # `code` and the buffer is dropped before anything from it runs.
        with m.If(steady & (nq != 3) & lines.lookup_hit[1]):
            with m.Switch(nq):
                for k in range(3):
                    with m.Case(k):
                        m.d.sync += buf[64 * k:64 * (k + 1)].eq(lines.lookup_data[1])
            m.d.sync += nq.eq(nq + 1)

        def put_fetched(qword):
            """The qword at `acc_addr` joins the window buffer."""
            with m.Switch(nq):
                for k in range(3):
                    with m.Case(k):
                        m.d.sync += buf[64 * k:64 * (k + 1)].eq(qword)
            m.d.sync += [nq.eq(nq + 1), acc_addr.eq(acc_addr + 8), fsm.eq(CoreState.DEC_WAIT)]

        with m.Switch(fsm):
            with m.Case(CoreState.IDLE, CoreState.STOPPED):
                pass

            with m.Case(CoreState.HALTED):
                with m.If(self.event_pending):
                    take_event()

            with m.Case(CoreState.SYS_REQ):
                # Nothing of the core's in flight while the system may change the translation.
                m.d.comb += sreq.valid.eq(~pf_busy | overlapped)
                with m.If(sreq.ready & (~pf_busy | overlapped)):
                    m.d.sync += fsm.eq(CoreState.SYS_WAIT)

            with m.Case(CoreState.SYS_WAIT):
                m.d.comb += sresp.ready.eq(1)
                a = sresp.payload
                # An instruction the system retired without a change of RIP, control registers,
                # EFER or memory (CPUID, RDTSC, RDMSR, WRMSR other than EFER, IN, OUT, VMREAD to
                # a register, VMWRITE): the fetched bytes and translations stay valid.
                keeps = Signal()
                m.d.comb += keeps.eq(
                    (sys_kind == SysKind.INSN) & (a.action == SysAction.RETIRE) & a.count
                    & ~a.rip_we & ~a.cr0_we & ~a.cr3_we & ~a.cr4_we & ~a.efer_we & ~a.store_we
                    & is_one_of(cls, *_OVERLAPPED, InsnClass.WRMSR))
                with m.If(sresp.valid):
                    # Else the system may have changed the translation context or memory.
                    m.d.comb += flush_lines.eq(~keeps)
                    m.d.sync += sw.eq(a)
                    with m.Switch(a.action):
                        with m.Case(SysAction.RETIRE, SysAction.HALT):
                            is_halt = a.action == SysAction.HALT
                            m.d.sync += [
                                wb_en.eq(a.dest_we & ~is_halt), wb_reg.eq(a.dest),
                                wb_size.eq(a.dest_size),
                                wb_hi8.eq(high8(a.dest, a.dest_size, insn.rex)),
                                wb_val.eq(a.dest_val),
                                new_rflags.eq(Mux(a.rflags_we, a.rflags, rflags)),
                                new_rip.eq(Mux(a.rip_we, a.rip,
                                               Mux(sys_kind == SysKind.INSN, next_rip, rip))),
                                halt.eq(is_halt), sp_en.eq(0), sys_ret.eq(~is_halt),
                                count_it.eq(is_halt | a.count),
                                # A new CR3, paging mode or VMX mode: fetch afresh.
                                stored.eq(~keeps), exc.valid.eq(0),
                            ]
                            with m.If(~is_halt & a.store_we):
                                m.d.sync += [acc_addr.eq(ea), acc_size.eq(8), acc_part.eq(0),
                                             acc_data.eq(a.store_val), fsm.eq(CoreState.STORE)]
                            with m.Else():
                                m.d.sync += fsm.eq(CoreState.RETIRE)
                                with m.If(keeps):
                                    advance()
                        with m.Case(SysAction.PROCEED):
                            m.d.sync += [acc_addr.eq(ea), acc_size.eq(8), acc_part.eq(0),
                                         ld_buf.eq(0), sys_half.eq(0), sys_loading.eq(1),
                                         sys_16.eq(a.mem_bytes == 16), fsm.eq(CoreState.LOAD)]
                        with m.Case(SysAction.STOP):
                            m.d.sync += fsm.eq(CoreState.STOPPED)
                        with m.Case(SysAction.FAULT):
                            m.d.sync += [exc.valid.eq(1), exc.kind.eq(StopKind.FAULT),
                                         exc.vector.eq(a.vector),
                                         exc.has_error_code.eq(a.has_error_code),
                                         exc.error_code.eq(a.error_code), exc.rip.eq(rip),
                                         exc.addr.eq(0), exc.unit.eq(NeedsUnit.NONE),
                                         sys_kind.eq(SysKind.FAULT), fsm.eq(CoreState.SYS_REQ)]
                        with m.Default():
                            # No system behind the port (the core's own testbench).
                            unit = Signal(NeedsUnit)
                            with m.Switch(cls):
                                for c, u in _NEEDS_UNIT.items():
                                    with m.Case(c):
                                        m.d.comb += unit.eq(u)
                            m.d.sync += [exc.valid.eq(1), exc.kind.eq(StopKind.NEEDS_UNIT),
                                         exc.unit.eq(unit), exc.vector.eq(0),
                                         exc.has_error_code.eq(0), exc.error_code.eq(0),
                                         exc.rip.eq(rip), exc.addr.eq(0),
                                         fsm.eq(CoreState.STOPPED)]

            with m.Case(CoreState.SYS_LOADED):
                with m.If(sys_half):
                    m.d.sync += sys_mem[64:].eq(ld_val)
                with m.Else():
                    m.d.sync += sys_mem[:64].eq(ld_val)
                with m.If(sys_16 & ~sys_half):
                    m.d.sync += [sys_half.eq(1), acc_addr.eq(ea + 8), acc_part.eq(0),
                                 ld_buf.eq(0), fsm.eq(CoreState.LOAD)]
                with m.Else():
                    m.d.sync += [sys_loading.eq(0), sys_loaded.eq(1), fsm.eq(CoreState.SYS_REQ)]

            with m.Case(CoreState.FETCH):
                with m.If(lines.lookup_hit[0]):
                    # Fetched a few instructions ago and nothing changed since: no access.
                    put_fetched(lines.lookup_data[0])
                with m.Else():
                    m.d.comb += [req.valid.eq(1), req.payload.kind.eq(Access.FETCH)]
                    with m.If(req.ready):
                        m.d.sync += fsm.eq(CoreState.FETCH_WAIT)

            with m.Case(CoreState.FETCH_WAIT):
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    with m.If(resp.payload.outcome != Outcome.OK):
                        # A fetch fault is raised only when the instruction needs the bytes
                        # (DECODE asked for this qword because the decode runs past them).
                        mem_fault()
                    with m.Else():
                        put_fetched(resp.payload.data)
                        m.d.comb += [lines.fill_en.eq(1), lines.fill_data.eq(resp.payload.data)]

            with m.Case(CoreState.DEC_WAIT):
                m.d.sync += fsm.eq(CoreState.DECODE)

            with m.Case(CoreState.DECODE):
                m.d.sync += [ret_bytes.eq(window), xinsn.eq(dec.insn)]
                full = fetched >= MAX_INSN_BYTES
                longer = ~fetched[4] & (insn.length > fetched[:4])
                with m.If((insn.ud | insn.too_long | longer) & ~full):
                    # The decode may depend on bytes not fetched yet: the next qword, from the
                    # lines (prefetched, usually) or fetched.
                    with m.If(lines.lookup_hit[0]):
                        put_fetched(lines.lookup_data[0])
                    with m.Else():
                        m.d.sync += fsm.eq(CoreState.FETCH)
                with m.Elif(insn.too_long):
                    fault(VECTOR_GP, 0)
                with m.Elif(insn.ud):
                    fault(VECTOR_UD)
                with m.Elif(is_one_of(cls, *_SYSTEM)):
                    m.d.sync += [sys_overlapped.eq(is_one_of(cls, *_OVERLAPPED)
                                                   & ~self.non_root)]
                    m.d.sync += [ea.eq(ea_comb), acc_ss.eq(ss_ref), sys_kind.eq(SysKind.INSN),
                                 sys_loaded.eq(0), sys_mem.eq(0), fsm.eq(CoreState.SYS_REQ)]
                with m.Else():
                    m.d.sync += ea.eq(ag.pop_ea)
                    m.d.sync += [acc_part.eq(0), ld_buf.eq(0)]
                    with m.If(is_stack_load):
                        m.d.sync += [acc_addr.eq(rsp), acc_size.eq(stack_size), acc_ss.eq(1),
                                     fsm.eq(CoreState.LOAD)]
                    with m.Elif(insn.mem & is_one_of(cls, *_RM_SOURCE)):
                        m.d.sync += [acc_addr.eq(ea_comb), acc_ss.eq(ss_ref),
                                     acc_size.eq(Mux(is_one_of(cls, InsnClass.MOVZX,
                                                               InsnClass.MOVSX),
                                                     bytes_of(insn.src_size),
                                                     bytes_of(size))),
                                     fsm.eq(CoreState.LOAD)]
                    with m.Else():
                        execute(may_commit=True)

            with m.Case(CoreState.LOAD):
                with m.If(~canonical(acc_addr)):
                    fault(Mux(acc_ss, VECTOR_SS, VECTOR_GP), 0)
                with m.Else():
                    m.d.comb += [req.valid.eq(1), req.payload.kind.eq(Access.READ)]
                    with m.If(req.ready):
                        m.d.sync += fsm.eq(CoreState.LOAD_WAIT)

            with m.Case(CoreState.LOAD_WAIT):
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    with m.If(resp.payload.outcome != Outcome.OK):
                        mem_fault()
                    with m.Else():
                        with m.If(acc_part):
                            m.d.sync += ld_buf[64:].eq(resp.payload.data)
                        with m.Else():
                            m.d.sync += ld_buf[:64].eq(resp.payload.data)
                        with m.If(two_parts & ~acc_part):
                            m.d.sync += [acc_part.eq(1), fsm.eq(CoreState.LOAD)]
                        with m.Elif(sys_loading):
                            m.d.sync += fsm.eq(CoreState.SYS_LOADED)
                        with m.Else():
                            m.d.sync += fsm.eq(CoreState.EXEC)

            with m.Case(CoreState.EXEC):
                execute(may_commit=True)
            with m.Case(CoreState.STORE):
                with m.If(~canonical(acc_addr)):
                    fault(Mux(acc_ss, VECTOR_SS, VECTOR_GP), 0)
                with m.Else():
                    m.d.comb += [req.valid.eq(1), req.payload.kind.eq(Access.WRITE)]
                    with m.If(req.ready):
                        m.d.sync += fsm.eq(CoreState.STORE_WAIT)

            with m.Case(CoreState.STORE_WAIT):
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    code_written = stored | resp.payload.code
                    m.d.sync += stored.eq(code_written)
                    with m.If(resp.payload.outcome != Outcome.OK):
                        mem_fault()
                    with m.Elif(two_parts & ~acc_part):
                        m.d.sync += [acc_part.eq(1), fsm.eq(CoreState.STORE)]
                    with m.Elif(sp_en):
                        m.d.sync += fsm.eq(CoreState.SP_UPDATE)
                    with m.Elif(~code_written & ~taken):
                        commit_stored()
                    with m.Else():
                        m.d.sync += fsm.eq(CoreState.RETIRE)

            with m.Case(CoreState.SP_UPDATE):
                # Before the destination write, so POP RSP ends with the popped value.
                m.d.comb += [regs.rsp_we.eq(1), regs.rsp.eq(sp_new)]
                m.d.sync += fsm.eq(CoreState.RETIRE)
                with m.If(~stored & ~taken):
                    advance()

            with m.Case(CoreState.RETIRE):
                m.d.comb += [gw_en.eq(wb_en), self.retiring.eq(1)]
                m.d.sync += [rflags.eq(new_rflags), rip.eq(new_rip)]
                with m.If(count_it):
                    m.d.sync += [count.eq(count + 1), self.retired.eq(1),
                                 self.retired_rip.eq(rip), self.retired_len.eq(insn.length),
                                 self.retired_bytes.eq(ret_bytes)]
                with m.If(sys_ret):
                    # The system's writes (they name other registers than the write-back).
                    m.d.comb += [regs.acdb_we.eq(sw.acdb_we), regs.acdb[0].eq(sw.rax),
                                 regs.acdb[1].eq(sw.rcx), regs.acdb[2].eq(sw.rdx),
                                 regs.acdb[3].eq(sw.rbx), regs.rsp_we.eq(sw.rsp_we),
                                 regs.rsp.eq(sw.rsp)]
                    for name, r in (("cr0", cr0), ("cr3", cr3), ("cr4", cr4), ("efer", efer)):
                        with m.If(getattr(sw, f"{name}_we")):
                            m.d.sync += r.eq(getattr(sw, name))
                m.d.sync += sys_ret.eq(0)
                # Qwords of the window buffer that hold the next instruction's start are kept
                # (sequential code and short branches skip a fetch), unless the instruction
                # stored to memory: a store may have changed code bytes (self-modifying code).
                skip = Signal(61)
                m.d.comb += skip.eq(new_rip[3:] - rip[3:])
                with m.If(stored):
                    m.d.comb += flush_lines.eq(1)
                with m.If(halt):
                    m.d.sync += fsm.eq(CoreState.HALTED)
                with m.Elif(self.event_pending):
                    take_event()
                with m.Elif(advanced):
                    # EXEC set up this window and the decoder has decoded it meanwhile.
                    m.d.sync += fsm.eq(CoreState.DECODE)
                with m.Elif(~stored & (skip[2:] == 0) & (skip[:2] < nq)):
                    with m.Switch(skip[:2]):
                        for k in (1, 2):
                            with m.Case(k):
                                m.d.sync += buf.eq(Cat(buf[64 * k:], C(0, 64 * k)))
                    m.d.sync += [nq.eq(nq - skip[:2]), woff.eq(new_rip[:3]),
                                 acc_addr.eq(Cat(C(0, 3), rip[3:]) + nq_bytes),
                                 fsm.eq(CoreState.DEC_WAIT)]
                with m.Elif(~stored & lines.lookup_hit[0]):
                    # A branch to code fetched a few instructions ago: one or two qwords from
                    # the lines (not after a store or a system instruction, which empty them).
                    m.d.sync += [buf[:64].eq(lines.lookup_data[0]), woff.eq(new_rip[:3]),
                                 acc_part.eq(0), fsm.eq(CoreState.DEC_WAIT)]
                    with m.If(lines.lookup_hit[1]):
                        m.d.sync += [buf[64:128].eq(lines.lookup_data[1]), nq.eq(2),
                                     acc_addr.eq(Cat(C(0, 3), new_rip[3:] + 2))]
                    with m.Else():
                        m.d.sync += [nq.eq(1), acc_addr.eq(Cat(C(0, 3), new_rip[3:] + 1))]
                with m.Else():
                    m.d.sync += [nq.eq(0), acc_part.eq(0), woff.eq(new_rip[:3]),
                                 acc_addr.eq(Cat(C(0, 3), new_rip[3:])),
                                 fsm.eq(CoreState.FETCH)]
                m.d.sync += [stored.eq(0), advanced.eq(0)]

        # FETCH uses acc_addr as the qword address (acc_size 8, offset 0 -> mask 0xFF).
        with m.If(is_one_of(fsm, CoreState.FETCH, CoreState.FETCH_WAIT)):
            m.d.comb += [req.payload.addr.eq(acc_addr), req.payload.mask.eq(0xFF),
                         req.payload.data.eq(0)]

        # --- The prefetcher (`rtl.core.prefetch`): what and when is `rtl.core.prefetch_policy`'s.
        m.submodules.prefetch_policy = pp = PrefetchPolicy()
        m.d.comb += [pp.state.eq(fsm), pp.advanced.eq(advanced),
                     pp.no_access.eq(~insn.mem & ~is_stack_load & ~is_stack_store
                                     & ~is_one_of(cls, *_SYSTEM)),
                     pp.waiting.eq(accessing | (sys_steady & overlapped)),
                     pp.fetch_next.eq(fetch_next), pp.fetch_next_hit.eq(lines.lookup_hit[1]),
                     pp.qword.eq(acc_addr), pp.qword_hit.eq(lines.lookup_hit[0]),
                     pp.flush.eq(flush_lines), pf.start.eq(pp.start), pf.addr.eq(pp.addr)]
        m.d.comb += [pf.flush.eq(flush_lines), pf.fetch_waits.eq(fsm == CoreState.FETCH)]
        with m.If(pf.fill_en):
            m.d.comb += [lines.fill_en.eq(1), lines.fill_addr.eq(pf.fill_addr),
                         lines.fill_data.eq(pf.fill_data)]

        with m.If(self.load):
            m.d.comb += flush_lines.eq(1)
            m.d.comb += [regs.load.eq(1), regs.init.eq(self.init_gpr)]
            m.d.sync += [rip.eq(self.init_rip),
                         rflags.eq(self.init_rflags),
                         cr0.eq(RESET_CR0), cr3.eq(self.init_cr3), cr4.eq(RESET_CR4),
                         efer.eq(RESET_EFER), sys_ret.eq(0), sys_loading.eq(0),
                         nq.eq(0), acc_part.eq(0), stored.eq(0), advanced.eq(0),
                         woff.eq(self.init_rip[:3]),
                         acc_addr.eq(Cat(C(0, 3), self.init_rip[3:])),
                         exc.eq(0), count.eq(0), fsm.eq(CoreState.FETCH)]

        return m
