"""Exit decisions of VMX non-root operation: does this event or instruction cause a VM exit?

`ExitDecisions` answers, for one event or instruction of the guest at a time, whether it causes a
VM exit, with which basic exit reason, exit qualification, guest-linear / guest-physical address
and exit interruption information. It is the RTL of the reference model's decision methods
(`tb.model.vmx.VmxModel.exception_exit`, ..., `ept_exit`; docs/vmx.md, "Exit decisions") and
decides from the current VMCS working copy that the VMX unit holds (`vmcs`, `WORKING_LAYOUT`).
The I/O and MSR bitmaps live in memory: the block reads the qword(s) that hold the bits it needs
through its own read port. The VMX-preemption timer (exit 52) is `rtl.vmx.preemption_timer`.

Ports
-----
``vmcs: In(WORKING_LAYOUT)``
    The current VMCS. It must not change from the acceptance of a query until its decision has
    been taken (the VMX unit does not write the VMCS while the guest runs).
``query: In(stream.Signature(QUERY_LAYOUT))``
    One question. ``kind`` (`ExitQueryKind`) names the decision; ``op`` (a `data.UnionLayout`)
    holds the operands of that kind, in the member named in the table below. Operand bits a kind
    does not use are ignored. Bits: ``kind`` 3:0, ``op`` 198:4 (the EPT member is the widest;
    every member starts at bit 4 with its fields in the order listed).
``decision: Out(stream.Signature(DECISION_LAYOUT))``
    Exactly one per query, in order. Registered.
``mem_req: Out(stream.Signature(MEM_REQUEST_LAYOUT(maxphyaddr)))``, ``mem_resp: In(...)``
    Bitmap reads: ``mem_req.addr`` (`maxphyaddr` bits) is the host-physical address of an
    8-byte-aligned qword: bits MAXPHYADDR-1:12 of the bitmap-address field and the qword's offset
    in the 4 KiB bitmap in bits 11:3 (bits 2:0 are 0). The field's bits 11:0 and the bits above
    MAXPHYADDR are not used: VM entry has checked that a bitmap address in use is 4 KiB aligned
    and below 2^MAXPHYADDR, so this equals the model's field + offset. ``mem_resp.data`` is the
    qword (bit ``i`` of the qword is bitmap bit 64 * qword index + ``i``). One read is
    outstanding at a time; each request gets one response, after any latency.

Query kinds (``kind``), operands (``op.<member>``) and the model method each one matches
------------------------------------------------------------------------------------------

==================  ================  ===========================================================
kind                op member         operands
==================  ================  ===========================================================
EXCEPTION           ``exception``     ``vector`` 8, ``type`` (`InterruptionType`),
                                      ``has_error_code`` 1, ``error_code`` 32, ``qualification``
                                      64 (the #PF linear address, DR6-style bits of a #DB, else 0)
                                      -- ``exception_exit(vector, type_, error_code if
                                      has_error_code else None, qualification)``
TRIPLE_FAULT        --                ``triple_fault_exit()``
EXTERNAL_INTERRUPT  ``interrupt``     ``vector`` 8 -- ``external_interrupt_exit(vector)``
INTERRUPT_WINDOW    ``window``        ``rflags`` 64, ``interruptibility`` 32 --
                                      ``interrupt_window_exit(rflags, interruptibility)``
NMI_WINDOW          ``window``        ``interruptibility`` 32 -- ``nmi_window_exit(...)``
INSTRUCTION         ``instruction``   ``reason`` (`ExitReason` naming the instruction),
                                      ``qualification`` 64 (INVLPG: the linear address; VMX
                                      instructions: the displacement) --
                                      ``instruction_exit(reason, qualification)``; and, for the
                                      VMX instructions (reasons 18-27, 50, 53), the VMX unit's
                                      answer in non-root operation (see below)
CR_ACCESS           ``cr``            ``access`` (`CrAccessType`), ``cr`` 4, ``gpr`` 4,
                                      ``lmsw_memory`` 1, ``value`` 64 (source of MOV to CR; LMSW:
                                      bits 15:0), ``actual`` 64 (the control register's current
                                      value in the core) -- ``cr_access_exit(access, cr, value,
                                      gpr, lmsw_memory)``; ``cr_value``: see below
DR_ACCESS           ``dr``            ``dr`` 3, ``from_dr`` 1, ``gpr`` 4 --
                                      ``dr_access_exit(dr, from_dr, gpr)``
IO                  ``io``            ``port`` 16, ``size`` 3 (bytes: 1, 2 or 4; other values are
                                      undefined), ``is_in``, ``string``, ``rep``, ``immediate``
                                      -- ``io_exit(port, size, ...)``
MSR                 ``msr``           ``msr`` 32 (ECX), ``write`` 1 -- ``msr_exit(msr, write)``
MTF                 --                ``mtf_exit()``
EPT                 ``ept``           ``outcome`` (`rtl.arch.paging.Outcome`), ``qualification``
                                      64, ``gpa`` 64, ``gla`` 64 -- ``ept_exit(outcome, ...)``
==================  ================  ===========================================================

Decision (`DECISION_LAYOUT`)
----------------------------
``exit`` 1, ``reason`` (`ExitReason`), ``qualification`` 64, ``gla`` 64, ``gpa`` 64,
``intr_info`` 32 (VM-exit interruption information), ``intr_error`` 32 (its error code),
``cr_value`` 64. With ``exit`` = 1 the fields are the model's `ExitDecision`; with ``exit`` = 0
(the model returns None) every field but ``cr_value`` is 0.

``cr_value`` (CR_ACCESS queries only, whether or not they exit; 0 for every other kind) is what
the access yields when it does not exit:

* MOV from CR0/CR4: ``cr_read_value(cr, actual)`` (the read shadow in the host-owned bits);
  MOV to CR0/CR4: ``cr_write_value(cr, actual, value)`` (host-owned bits keep their value);
* MOV from any other CR: ``actual``; MOV to any other CR: ``value``;
* CLTS: ``cr_write_value(0, actual, actual & ~CR0.TS)``: TS is cleared unless the host owns it
  (SDM 25.3, "CLTS");
* LMSW: ``cr_write_value(0, actual, lmsw)`` with ``lmsw`` = ``actual`` whose bits 3:1 are
  source bits 3:1 and whose bit 0 is ``actual.PE | source.PE`` (LMSW sets but never clears PE;
  host-owned bits are unchanged, SDM 25.3, "LMSW").

The model has no method for the CLTS/LMSW value (it defines the MOV ones); the rule above is the
SDM's, written with the model's `cr_write_value`.

Rules (docs/vmx.md; the model's code is the authority)
------------------------------------------------------
* EXCEPTION: software interrupts (type 4) never exit; NMIs (type 2) exit with "NMI exiting";
  vector 14 exits with exception-bitmap bit 14 when ``PFEC & mask == match`` (PFEC = the error
  code, 0 without one) and with its complement otherwise; any other vector by its bitmap bit
  (vectors >= 32 have none: no exit). Interruption information: vector, type, bit 11 = error code
  present, bit 31 valid; ``intr_error`` = the error code (0 without one); qualification as given.
* EXTERNAL_INTERRUPT: "external-interrupt exiting"; with "acknowledge interrupt on exit" the
  interruption information is ``vector | valid`` (type 0), else 0.
* INTERRUPT_WINDOW: the control, RFLAGS.IF = 1 and no blocking by STI or MOV SS.
  NMI_WINDOW: the control and no virtual-NMI or MOV-SS blocking.
* INSTRUCTION: CPUID, GETSEC, INVD, XSETBV always; HLT, INVLPG, RDTSC, RDPMC, MWAIT, MONITOR,
  PAUSE with their primary control; the qualification is passed through. VMX instructions
  (included because it is a table lookup): VMXON, VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE,
  INVEPT, INVVPID always exit with the given qualification; VMXOFF, VMLAUNCH, VMRESUME, VMCALL
  always exit with qualification 0. This is the model's answer *after* the #UD checks that come
  first (VMX operation, CR0.PE, RFLAGS.VM, compatibility mode, register operand): those belong
  to the VMX unit's instruction port, which already answers VM_EXIT for these; the core asks one
  or the other. VMFUNC (59) is the VMX unit's. Any other reason gives ``exit`` = 0.
* CR_ACCESS: MOV to CR0/CR4 exits when a bit set in the guest/host mask differs between the
  source and the read shadow; MOV to CR3 with "CR3-load exiting" unless the source equals one of
  the first min(CR3-target count, 4) target values; MOV from CR3 with "CR3-store exiting"; MOV
  to/from CR8 with "CR8-load/-store exiting"; other CRs never; CLTS when mask.TS and shadow.TS;
  LMSW when (mask.PE and !shadow.PE and source.PE) or a masked bit of MP/EM/TS differs between
  source and shadow. Qualification (`CrAccessQualLayout`): CR number (0 for CLTS/LMSW) in 3:0,
  access type in 5:4, LMSW operand type in 6 and source in 31:16 (LMSW only), GPR in 11:8 (MOV
  only).
* DR_ACCESS: "MOV-DR exiting"; qualification DR in 2:0, direction in 4, GPR in 11:8.
* IO: with "use I/O bitmaps", exits when the bit of any byte accessed is 1 in bitmap A (ports
  0-7FFFh) or B (8000h-FFFFh), or when the access wraps past port FFFFh (no read then); without
  I/O bitmaps, by "unconditional I/O exiting". Qualification (`IoQualLayout`): size - 1 in 2:0,
  direction 3, string 4, REP 5, immediate 6, port 31:16. At most two qword reads: the qword of
  the first byte and, when no bit of it is set and the access reaches into the next qword (or
  from bitmap A into B), that one.
* MSR: without "use MSR bitmaps" always (31 RDMSR / 32 WRMSR, qualification 0); with them, ECX
  in 0-1FFFh or C0000000h-C0001FFFh reads one qword of the read-low / read-high / write-low /
  write-high bitmap (offsets 0, 1024, 2048, 3072 in the 4 KiB MSR bitmap) and its bit decides;
  any other ECX exits without a read.
* MTF: "monitor trap flag".
* EPT: EPT_VIOLATION gives 48 with the qualification, GPA and GLA; EPT_MISCONFIG gives 49 with
  qualification 0, the GPA and GLA 0; any other outcome no exit.

Timing
------
``query.ready`` is 1 only while the block is idle; the query is registered and decided in the
next cycle. For a query transferred in cycle n, a decision that needs no memory read is valid
from cycle n+2 (the decision is registered). A bitmap read is requested from cycle n+2
(``mem_req`` is registered); a decision that comes from a qword is valid from the cycle after
that qword's response is transferred (a second read, when needed, is requested from that cycle
instead). The decision stays valid until taken; the next query can be transferred from the cycle
after. `ExitDecisions` holds one query at a time: the core asks, waits, and asks again.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.paging import MAXPHYADDR, Outcome
from rtl.arch.vmx import (
    CR0_EM,
    CR0_MP,
    CR0_PE,
    CR0_TS,
    CR3_TARGET_COUNT_MAX,
    EXIT_CTL_ACK_INTERRUPT_ON_EXIT,
    INSTRUCTION_EXIT_REASON,
    INTERRUPTIBILITY_MOV_SS,
    INTERRUPTIBILITY_NMI,
    INTERRUPTIBILITY_STI,
    PIN_EXTERNAL_INTERRUPT_EXITING,
    PIN_NMI_EXITING,
    PROC_CR3_LOAD_EXITING,
    PROC_CR3_STORE_EXITING,
    PROC_CR8_LOAD_EXITING,
    PROC_CR8_STORE_EXITING,
    PROC_HLT_EXITING,
    PROC_INTERRUPT_WINDOW_EXITING,
    PROC_INVLPG_EXITING,
    PROC_MONITOR_EXITING,
    PROC_MONITOR_TRAP_FLAG,
    PROC_MOV_DR_EXITING,
    PROC_MWAIT_EXITING,
    PROC_NMI_WINDOW_EXITING,
    PROC_PAUSE_EXITING,
    PROC_RDPMC_EXITING,
    PROC_RDTSC_EXITING,
    PROC_UNCONDITIONAL_IO_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    RFLAGS_IF,
    VECTOR_PF,
    CrAccessQualLayout,
    CrAccessType,
    DrAccessQualLayout,
    ExitReason,
    InterruptionInfoLayout,
    InterruptionType,
    IoQualLayout,
    VmxOp,
)
from rtl.vmx.layouts import WORKING_LAYOUT

__all__ = [
    "ExitQueryKind",
    "QUERY_LAYOUT",
    "DECISION_LAYOUT",
    "MEM_REQUEST_LAYOUT",
    "MEM_RESPONSE_LAYOUT",
    "UNCONDITIONAL_INSTRUCTIONS",
    "CONDITIONAL_INSTRUCTIONS",
    "VMX_INSTRUCTIONS_WITH_QUALIFICATION",
    "VMX_INSTRUCTIONS_WITHOUT_QUALIFICATION",
    "ExitDecisions",
]


class ExitQueryKind(enum.Enum, shape=4):
    """Which decision a query asks for (the model method in the module docstring)."""
    EXCEPTION = 0
    TRIPLE_FAULT = 1
    EXTERNAL_INTERRUPT = 2
    INTERRUPT_WINDOW = 3
    NMI_WINDOW = 4
    INSTRUCTION = 5
    CR_ACCESS = 6
    DR_ACCESS = 7
    IO = 8
    MSR = 9
    MTF = 10
    EPT = 11


EXCEPTION_OPERANDS = data.StructLayout({
    "vector": 8,
    "type": InterruptionType,
    "has_error_code": 1,
    "error_code": 32,
    "qualification": 64,
})
INTERRUPT_OPERANDS = data.StructLayout({"vector": 8})
WINDOW_OPERANDS = data.StructLayout({"rflags": 64, "interruptibility": 32})
INSTRUCTION_OPERANDS = data.StructLayout({"reason": ExitReason, "qualification": 64})
CR_OPERANDS = data.StructLayout({
    "access": CrAccessType,
    "cr": 4,
    "gpr": 4,
    "lmsw_memory": 1,
    "value": 64,
    "actual": 64,
})
DR_OPERANDS = data.StructLayout({"dr": 3, "from_dr": 1, "gpr": 4})
IO_OPERANDS = data.StructLayout({
    "port": 16,
    "size": 3,
    "is_in": 1,
    "string": 1,
    "rep": 1,
    "immediate": 1,
})
MSR_OPERANDS = data.StructLayout({"msr": 32, "write": 1})
EPT_OPERANDS = data.StructLayout({"outcome": Outcome, "qualification": 64, "gpa": 64, "gla": 64})

#: A query: the kind and the operands of that kind (one union member per kind that has any).
QUERY_LAYOUT = data.StructLayout({
    "kind": ExitQueryKind,
    "op": data.UnionLayout({
        "exception": EXCEPTION_OPERANDS,
        "interrupt": INTERRUPT_OPERANDS,
        "window": WINDOW_OPERANDS,
        "instruction": INSTRUCTION_OPERANDS,
        "cr": CR_OPERANDS,
        "dr": DR_OPERANDS,
        "io": IO_OPERANDS,
        "msr": MSR_OPERANDS,
        "ept": EPT_OPERANDS,
    }),
})

#: The fields of a decision after `exit`, before `cr_value` (what an exit reports).
_EXIT_INFO_LAYOUT = data.StructLayout({
    "reason": ExitReason,
    "qualification": 64,
    "gla": 64,
    "gpa": 64,
    "intr_info": 32,
    "intr_error": 32,
})

#: A decision (the model's `ExitDecision`, or all 0 but `cr_value` when there is no exit).
DECISION_LAYOUT = data.StructLayout({
    "exit": 1,
    **{name: f.shape for name, f in _EXIT_INFO_LAYOUT},
    "cr_value": 64,
})
# `ExitDecisions` registers a decision as Cat(exit, exit information, cr_value).
assert DECISION_LAYOUT["cr_value"].offset == 1 + _EXIT_INFO_LAYOUT.size


def MEM_REQUEST_LAYOUT(maxphyaddr: int = MAXPHYADDR) -> data.StructLayout:  # noqa: N802
    """A read of the 8-byte-aligned qword at `addr` (bits 2:0 are 0)."""
    return data.StructLayout({"addr": maxphyaddr})


MEM_RESPONSE_LAYOUT = data.StructLayout({"data": 64})

#: Instructions that always exit (the model's `VmxModel.UNCONDITIONAL_EXITS`).
UNCONDITIONAL_INSTRUCTIONS = (ExitReason.CPUID, ExitReason.GETSEC, ExitReason.INVD,
                              ExitReason.XSETBV)
#: Instructions that exit when one primary processor-based control is 1 (the model's
#: `VmxModel.CONDITIONAL_EXITS`).
CONDITIONAL_INSTRUCTIONS = {
    ExitReason.HLT: PROC_HLT_EXITING,
    ExitReason.INVLPG: PROC_INVLPG_EXITING,
    ExitReason.RDTSC: PROC_RDTSC_EXITING,
    ExitReason.RDPMC: PROC_RDPMC_EXITING,
    ExitReason.MWAIT: PROC_MWAIT_EXITING,
    ExitReason.MONITOR: PROC_MONITOR_EXITING,
    ExitReason.PAUSE: PROC_PAUSE_EXITING,
}
#: VMX instructions without a memory operand: their exit qualification is 0 (in the model they
#: take no qualification).
VMX_INSTRUCTIONS_WITHOUT_QUALIFICATION = tuple(
    INSTRUCTION_EXIT_REASON[op] for op in (VmxOp.VMXOFF, VmxOp.VMLAUNCH, VmxOp.VMRESUME,
                                           VmxOp.VMCALL))
#: VMX instructions with a memory operand: the qualification is the displacement given.
VMX_INSTRUCTIONS_WITH_QUALIFICATION = tuple(
    r for r in INSTRUCTION_EXIT_REASON.values() if r not in VMX_INSTRUCTIONS_WITHOUT_QUALIFICATION)

# MSR bitmap (SDM 24.6.9): read-low at 0, read-high at 1024, write-low at 2048, write-high at 3072;
# each covers 8192 MSRs (1 KiB).
_MSR_HIGH_BASE = 0xC000_0000
_MSR_RANGE_BITS = 13
_MSR_OFFSET_HIGH = 1024
_MSR_OFFSET_WRITE = 2048
#: CR0 bits LMSW loads from its source (it can also set PE).
_LMSW_LOADED = CR0_MP | CR0_EM | CR0_TS


class _State(enum.Enum, shape=3):
    IDLE = 0        # waiting for a query
    DECIDE = 1      # the registered query is decided; a bitmap read is started if one is needed
    READ_REQ = 2    # mem_req valid with the qword address
    READ_RESP = 3   # waiting for the qword
    RESPOND = 4     # decision valid until taken


def _onehot(m, value, width: int) -> Signal:
    """A decoder: bit i is `value == i` (instead of a variable shift, whose Verilog Verilator
    reports as a width mismatch)."""
    out = Signal(width)
    for i in range(width):
        m.d.comb += out[i].eq(value == i)
    return out


def _has(value, bits: int):
    """Any of the constant `bits` set in `value`."""
    return (value & bits).any()


class ExitDecisions(wiring.Component):
    """Exit decisions of VMX non-root operation (see the module docstring).

    Parameters: `maxphyaddr`, the width of the bitmap read addresses (MAXPHYADDR).
    """

    def __init__(self, maxphyaddr: int = MAXPHYADDR):
        self.maxphyaddr = maxphyaddr
        super().__init__({
            "vmcs": In(WORKING_LAYOUT),
            "query": In(stream.Signature(QUERY_LAYOUT)),
            "decision": Out(stream.Signature(DECISION_LAYOUT)),
            "mem_req": Out(stream.Signature(MEM_REQUEST_LAYOUT(maxphyaddr))),
            "mem_resp": In(stream.Signature(MEM_RESPONSE_LAYOUT)),
        })

    def elaborate(self, platform):
        m = Module()

        vmcs = self.vmcs
        pin = vmcs.pin_based_vm_exec_control
        proc = vmcs.cpu_based_vm_exec_control
        exit_ctls = vmcs.vm_exit_controls

        state = Signal(_State)
        q = Signal(QUERY_LAYOUT)            # the query being decided
        second = Signal()                   # the outstanding read is the second qword
        addr = Signal(self.maxphyaddr)      # qword address of the outstanding read
        out = Signal(DECISION_LAYOUT)       # the registered decision

        # --- The decision of the registered query, assuming no bitmap says otherwise --------
        # `exits` is the decision when no memory read is needed; `tmpl` holds the fields of the
        # exit (reason, qualification, ...) the kind would report.
        exits = Signal()
        tmpl = Signal(_EXIT_INFO_LAYOUT)
        needs_read = Signal()               # the decision comes from a bitmap qword
        addr1 = Signal(self.maxphyaddr)     # first qword's address
        addr2 = Signal(self.maxphyaddr)     # second qword's address (I/O only)
        mask1 = Signal(64)                  # bits of the first qword that make it exit
        mask2 = Signal(64)                  # bits of the second qword that make it exit
        need2 = Signal()                    # the access has bits in a second qword
        cr_value = Signal(64)               # the decision's cr_value (CR_ACCESS only)
        cr_mux = Signal(64)                 # what a CR access yields

        # Exception or NMI (reason 0).
        exc = q.op.exception
        exc_info = Signal(InterruptionInfoLayout)
        pfec = Mux(exc.has_error_code, exc.error_code, 0)
        pf_match = (pfec & vmcs.page_fault_error_code_mask) == vmcs.page_fault_error_code_match
        bitmap = vmcs.exception_bitmap
        # The vector's bit (vectors 32-255 have none); a decoder, not a variable shift.
        vector_bit = (exc.vector[5:] == 0) & (bitmap & _onehot(m, exc.vector[:5], 32)).any()
        exc_exits = Signal()
        with m.If(exc.type == InterruptionType.SOFTWARE_INTERRUPT):
            m.d.comb += exc_exits.eq(0)
        with m.Elif(exc.type == InterruptionType.NMI):
            m.d.comb += exc_exits.eq(_has(pin, PIN_NMI_EXITING))
        with m.Elif(exc.vector == VECTOR_PF):
            # #PF: bit 14 if the error code matches, its complement if it does not.
            m.d.comb += exc_exits.eq(bitmap[VECTOR_PF] == pf_match)
        with m.Else():
            m.d.comb += exc_exits.eq(vector_bit)
        m.d.comb += [
            exc_info.vector.eq(exc.vector),
            exc_info.type.eq(exc.type),
            exc_info.deliver_error_code.eq(exc.has_error_code),
            exc_info.valid.eq(1),
        ]

        # External interrupt (reason 1).
        ext_info = Signal(InterruptionInfoLayout)
        m.d.comb += [
            ext_info.vector.eq(q.op.interrupt.vector),
            ext_info.type.eq(InterruptionType.EXTERNAL_INTERRUPT),
            ext_info.valid.eq(1),
        ]

        # Windows (reasons 7, 8).
        win = q.op.window
        irq_window = (_has(proc, PROC_INTERRUPT_WINDOW_EXITING) & _has(win.rflags, RFLAGS_IF)
                      & ~_has(win.interruptibility, INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS))
        nmi_window = (_has(proc, PROC_NMI_WINDOW_EXITING)
                      & ~_has(win.interruptibility, INTERRUPTIBILITY_NMI | INTERRUPTIBILITY_MOV_SS))

        # Instructions (10-16, 36, 39, 40, 55; VMX instructions 18-27, 50, 53).
        ins = q.op.instruction
        ins_exits = Signal()
        ins_qual = Signal(64)
        with m.Switch(ins.reason):
            for reason in UNCONDITIONAL_INSTRUCTIONS + VMX_INSTRUCTIONS_WITH_QUALIFICATION:
                with m.Case(reason):
                    m.d.comb += [ins_exits.eq(1), ins_qual.eq(ins.qualification)]
            for reason in VMX_INSTRUCTIONS_WITHOUT_QUALIFICATION:
                with m.Case(reason):
                    m.d.comb += ins_exits.eq(1)
            for reason, control in CONDITIONAL_INSTRUCTIONS.items():
                with m.Case(reason):
                    m.d.comb += [ins_exits.eq(_has(proc, control)),
                                 ins_qual.eq(ins.qualification)]

        # Control-register access (reason 28) and the value of a non-exiting access.
        cr = q.op.cr
        cr_exits = Signal()
        cr_qual = Signal(CrAccessQualLayout)
        is_cr4 = cr.cr == 4
        guest_host_mask = Mux(is_cr4, vmcs.cr4_guest_host_mask, vmcs.cr0_guest_host_mask)
        read_shadow = Mux(is_cr4, vmcs.cr4_read_shadow, vmcs.cr0_read_shadow)
        cr0_mask, cr0_shadow = vmcs.cr0_guest_host_mask, vmcs.cr0_read_shadow
        # CR3-target values: the first min(count, 4) of them let MOV to CR3 through.
        target_hit = Signal()
        m.d.comb += target_hit.eq(0)
        for i in range(CR3_TARGET_COUNT_MAX):
            target = getattr(vmcs, f"cr3_target_value{i}")
            with m.If((vmcs.cr3_target_count > i) & (cr.value == target)):
                m.d.comb += target_hit.eq(1)
        lmsw_src = cr.value[:16]
        # LMSW loads CR0.MP/EM/TS and may set, never clear, CR0.PE.
        lmsw_new = ((cr.actual & ~(_LMSW_LOADED | CR0_PE)) | (lmsw_src & _LMSW_LOADED)
                    | ((cr.actual | lmsw_src) & CR0_PE))
        clts_new = cr.actual & ~CR0_TS
        # Qualification: CR number and GPR for MOV, LMSW operand type and source for LMSW.
        cr_mov = (cr.access == CrAccessType.MOV_TO_CR) | (cr.access == CrAccessType.MOV_FROM_CR)
        cr_lmsw = cr.access == CrAccessType.LMSW
        m.d.comb += [
            cr_qual.cr.eq(Mux(cr_mov, cr.cr, 0)),
            cr_qual.access_type.eq(cr.access),
            cr_qual.gpr.eq(Mux(cr_mov, cr.gpr, 0)),
            cr_qual.lmsw_memory.eq(cr_lmsw & cr.lmsw_memory),
            cr_qual.lmsw_source.eq(Mux(cr_lmsw, lmsw_src, 0)),
        ]
        with m.Switch(cr.access):
            with m.Case(CrAccessType.MOV_TO_CR):
                with m.Switch(cr.cr):
                    with m.Case(0, 4):
                        m.d.comb += [
                            cr_exits.eq(((cr.value ^ read_shadow) & guest_host_mask).any()),
                            cr_mux.eq((cr.actual & guest_host_mask)
                                      | (cr.value & ~guest_host_mask)),
                        ]
                    with m.Case(3):
                        m.d.comb += [cr_exits.eq(_has(proc, PROC_CR3_LOAD_EXITING) & ~target_hit),
                                     cr_mux.eq(cr.value)]
                    with m.Case(8):
                        m.d.comb += [cr_exits.eq(_has(proc, PROC_CR8_LOAD_EXITING)),
                                     cr_mux.eq(cr.value)]
                    with m.Default():
                        m.d.comb += cr_mux.eq(cr.value)
            with m.Case(CrAccessType.MOV_FROM_CR):
                with m.Switch(cr.cr):
                    with m.Case(0, 4):
                        m.d.comb += cr_mux.eq((cr.actual & ~guest_host_mask)
                                              | (read_shadow & guest_host_mask))
                    with m.Case(3):
                        m.d.comb += [cr_exits.eq(_has(proc, PROC_CR3_STORE_EXITING)),
                                     cr_mux.eq(cr.actual)]
                    with m.Case(8):
                        m.d.comb += [cr_exits.eq(_has(proc, PROC_CR8_STORE_EXITING)),
                                     cr_mux.eq(cr.actual)]
                    with m.Default():
                        m.d.comb += cr_mux.eq(cr.actual)
            with m.Case(CrAccessType.CLTS):
                m.d.comb += [
                    cr_exits.eq(_has(cr0_mask & cr0_shadow, CR0_TS)),
                    cr_mux.eq((cr.actual & cr0_mask) | (clts_new & ~cr0_mask)),
                ]
            with m.Case(CrAccessType.LMSW):
                m.d.comb += [
                    cr_exits.eq((_has(cr0_mask, CR0_PE) & ~_has(cr0_shadow, CR0_PE)
                                 & _has(lmsw_src, CR0_PE))
                                | _has(cr0_mask & (lmsw_src ^ cr0_shadow), _LMSW_LOADED)),
                    cr_mux.eq((cr.actual & cr0_mask) | (lmsw_new & ~cr0_mask)),
                ]

        # MOV DR (reason 29).
        dr_qual = Signal(DrAccessQualLayout)
        m.d.comb += [dr_qual.dr.eq(q.op.dr.dr), dr_qual.from_dr.eq(q.op.dr.from_dr),
                     dr_qual.gpr.eq(q.op.dr.gpr)]

        # I/O (reason 30): bytes port .. port + size - 1.
        io = q.op.io
        io_qual = Signal(IoQualLayout)
        m.d.comb += [
            io_qual.size_minus_1.eq(io.size - 1),
            io_qual.is_in.eq(io.is_in),
            io_qual.string.eq(io.string),
            io_qual.rep.eq(io.rep),
            io_qual.immediate.eq(io.immediate),
            io_qual.port.eq(io.port),
        ]
        # The access's bits, from the first byte's position in its qword: up to 64 + 3 bits
        # (bit i is set when the byte at offset i - k, k < size, is the first byte).
        size_bytes = Cat(*(io.size > k for k in range(4)))      # `size` ones (size <= 4)
        first = _onehot(m, io.port[:6], 64)
        io_bits = Signal(64 + 3)
        for i in range(64 + 3):
            m.d.comb += io_bits[i].eq(Cat(*(first[i - k] & size_bytes[k]
                                            for k in range(4) if 0 <= i - k < 64)).any())
        # Qword indices: bit 9 selects bitmap B (ports 8000h-FFFFh), bits 8:0 the qword in it.
        io_qidx1 = io.port[6:16]
        io_qidx2 = Signal(11)
        m.d.comb += io_qidx2.eq(io_qidx1 + 1)
        io_wraps = io_bits[64:].any() & io_qidx2[10]       # past port FFFFh

        def io_qword(qidx):
            base = Mux(qidx[9], vmcs.io_bitmap_b, vmcs.io_bitmap_a)
            return Cat(Const(0, 3), qidx[:9], base[12:self.maxphyaddr])

        io_bitmaps = _has(proc, PROC_USE_IO_BITMAPS)

        # RDMSR / WRMSR (31, 32).
        msr = q.op.msr
        msr_low = msr.msr[_MSR_RANGE_BITS:] == 0
        msr_high = msr.msr[_MSR_RANGE_BITS:] == _MSR_HIGH_BASE >> _MSR_RANGE_BITS
        # 8 * (MSR bits 12:6) + 1024 * high + 2048 * write into the 4 KiB-aligned bitmap.
        msr_qword = Cat(Const(0, 3), msr.msr[6:_MSR_RANGE_BITS], msr_high, msr.write,
                        vmcs.msr_bitmap[12:self.maxphyaddr])
        msr_bitmaps = _has(proc, PROC_USE_MSR_BITMAPS)

        ept = q.op.ept

        with m.Switch(q.kind):
            with m.Case(ExitQueryKind.EXCEPTION):
                m.d.comb += [
                    exits.eq(exc_exits),
                    tmpl.reason.eq(ExitReason.EXCEPTION_NMI),
                    tmpl.qualification.eq(exc.qualification),
                    tmpl.intr_info.eq(exc_info),
                    tmpl.intr_error.eq(pfec),
                ]
            with m.Case(ExitQueryKind.TRIPLE_FAULT):
                m.d.comb += [exits.eq(1), tmpl.reason.eq(ExitReason.TRIPLE_FAULT)]
            with m.Case(ExitQueryKind.EXTERNAL_INTERRUPT):
                m.d.comb += [
                    exits.eq(_has(pin, PIN_EXTERNAL_INTERRUPT_EXITING)),
                    tmpl.reason.eq(ExitReason.EXTERNAL_INTERRUPT),
                    tmpl.intr_info.eq(Mux(_has(exit_ctls, EXIT_CTL_ACK_INTERRUPT_ON_EXIT),
                                          ext_info.as_value(), 0)),
                ]
            with m.Case(ExitQueryKind.INTERRUPT_WINDOW):
                m.d.comb += [exits.eq(irq_window), tmpl.reason.eq(ExitReason.INTERRUPT_WINDOW)]
            with m.Case(ExitQueryKind.NMI_WINDOW):
                m.d.comb += [exits.eq(nmi_window), tmpl.reason.eq(ExitReason.NMI_WINDOW)]
            with m.Case(ExitQueryKind.INSTRUCTION):
                m.d.comb += [exits.eq(ins_exits), tmpl.reason.eq(ins.reason),
                             tmpl.qualification.eq(ins_qual)]
            with m.Case(ExitQueryKind.CR_ACCESS):
                m.d.comb += [exits.eq(cr_exits), tmpl.reason.eq(ExitReason.CR_ACCESS),
                             tmpl.qualification.eq(cr_qual), cr_value.eq(cr_mux)]
            with m.Case(ExitQueryKind.DR_ACCESS):
                m.d.comb += [exits.eq(_has(proc, PROC_MOV_DR_EXITING)),
                             tmpl.reason.eq(ExitReason.DR_ACCESS),
                             tmpl.qualification.eq(dr_qual)]
            with m.Case(ExitQueryKind.IO):
                m.d.comb += [
                    tmpl.reason.eq(ExitReason.IO_INSTRUCTION),
                    tmpl.qualification.eq(io_qual),
                    addr1.eq(io_qword(io_qidx1)),
                    addr2.eq(io_qword(io_qidx2[:10])),
                    mask1.eq(io_bits[:64]),
                    mask2.eq(io_bits[64:]),
                    need2.eq(io_bits[64:].any()),
                ]
                with m.If(io_bitmaps):
                    # An access that wraps past FFFFh exits whatever the bitmaps say.
                    m.d.comb += [exits.eq(io_wraps), needs_read.eq(~io_wraps)]
                with m.Else():
                    m.d.comb += exits.eq(_has(proc, PROC_UNCONDITIONAL_IO_EXITING))
            with m.Case(ExitQueryKind.MSR):
                m.d.comb += [
                    tmpl.reason.eq(Mux(msr.write, ExitReason.WRMSR, ExitReason.RDMSR)),
                    addr1.eq(msr_qword),
                    mask1.eq(_onehot(m, msr.msr[:6], 64)),
                ]
                with m.If(msr_bitmaps & (msr_low | msr_high)):
                    m.d.comb += needs_read.eq(1)
                with m.Else():
                    m.d.comb += exits.eq(1)
            with m.Case(ExitQueryKind.MTF):
                m.d.comb += [exits.eq(_has(proc, PROC_MONITOR_TRAP_FLAG)),
                             tmpl.reason.eq(ExitReason.MONITOR_TRAP_FLAG)]
            with m.Case(ExitQueryKind.EPT):
                with m.If(ept.outcome == Outcome.EPT_VIOLATION):
                    m.d.comb += [exits.eq(1), tmpl.reason.eq(ExitReason.EPT_VIOLATION),
                                 tmpl.qualification.eq(ept.qualification),
                                 tmpl.gla.eq(ept.gla), tmpl.gpa.eq(ept.gpa)]
                with m.Elif(ept.outcome == Outcome.EPT_MISCONFIG):
                    m.d.comb += [exits.eq(1), tmpl.reason.eq(ExitReason.EPT_MISCONFIG),
                                 tmpl.gpa.eq(ept.gpa)]

        def finish(exit_):
            """Register the decision: the template when it exits, else zeros (and cr_value)."""
            return out.eq(Cat(exit_, Mux(exit_, tmpl.as_value(), 0), cr_value))

        # --- Control --------------------------------------------------------------------------
        m.d.comb += [
            self.query.ready.eq(state == _State.IDLE),
            self.decision.valid.eq(state == _State.RESPOND),
            self.decision.payload.eq(out),
            self.mem_req.valid.eq(state == _State.READ_REQ),
            self.mem_req.payload.addr.eq(addr),
            self.mem_resp.ready.eq(state == _State.READ_RESP),
        ]
        hit = Signal()
        m.d.comb += hit.eq((self.mem_resp.payload.data & Mux(second, mask2, mask1)).any())

        with m.Switch(state):
            with m.Case(_State.IDLE):
                with m.If(self.query.valid):
                    m.d.sync += [q.eq(self.query.payload), state.eq(_State.DECIDE)]
            with m.Case(_State.DECIDE):
                with m.If(needs_read):
                    m.d.sync += [addr.eq(addr1), second.eq(0),
                                 state.eq(_State.READ_REQ)]
                with m.Else():
                    m.d.sync += finish(exits)
                    m.d.sync += state.eq(_State.RESPOND)
            with m.Case(_State.READ_REQ):
                with m.If(self.mem_req.ready):
                    m.d.sync += state.eq(_State.READ_RESP)
            with m.Case(_State.READ_RESP):
                with m.If(self.mem_resp.valid):
                    with m.If(~hit & ~second & need2):
                        m.d.sync += [addr.eq(addr2), second.eq(1),
                                     state.eq(_State.READ_REQ)]
                    with m.Else():
                        m.d.sync += finish(hit)
                        m.d.sync += state.eq(_State.RESPOND)
            with m.Case(_State.RESPOND):
                with m.If(self.decision.ready):
                    m.d.sync += state.eq(_State.IDLE)

        return m
