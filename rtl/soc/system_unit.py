"""The system unit: what the core hands over on its system port (`rtl.core.core_layouts`).

`SystemUnit` executes the instructions the core does not (CPUID, RDTSC, RDMSR/WRMSR, MOV to and
from CR0/CR3/CR4, INVLPG, IN/OUT, HLT and the 13 VMX instructions), decides what a fault does,
and takes the VM exits of VMX non-root operation:

* root operation (or outside VMX): the instruction runs as `rtl.arch.system` and the SDM say; a
  fault stops the system (there is no IDT: docs/system.md);
* non-root operation: the exit-decision block (`rtl.vmx.exit_decisions`) is asked first; an
  instruction that does not exit runs as in root operation; a fault exits when the exception
  bitmap says so and otherwise ends in a triple-fault exit (reason 2, docs/system.md); an EPT
  violation or misconfiguration exits with reason 48 / 49; at an instruction boundary the
  VMX-preemption timer (52) and the monitor trap flag (37) exit;
* the VMX instructions go to the VMX unit's instruction port (`rtl.vmx.unit`): a memory operand
  is first checked with ``precheck`` and then loaded by the core (`SysAction.PROCEED`); the
  answer becomes RFLAGS, a register or memory write, a fault, a VM exit or a VM entry; the VM
  exit of VMCLEAR, VMPTRLD, VMPTRST, VMXON, VMREAD, VMWRITE, INVEPT or INVVPID carries the
  instruction information (SDM 28.2.5; every other exit writes 0 there).

A VM exit hands the VMX unit the guest state it saves (`EXIT_GUEST_LAYOUT`): the state the core
changes (RIP, RSP, RFLAGS, CR0, CR3, CR4, EFER), the remaining timer count, and DR7, DEBUGCTL,
PAT and the PDPTEs as the last VM entry loaded them (``entry.guest``: the core does not hold
them); the VMX unit answers with the host state, which the core loads. A VM entry loads the
guest's RIP, RSP, RFLAGS, CR0, CR3, CR4 and EFER into the core. The general-purpose registers
stay as they are across both, as on silicon.

One request at a time: accept, decide (one cycle, or the exit decision / VMX unit), then one
response; an invalidation of the translation unit (MOV CR3, INVLPG, CR0/CR4/EFER writes) is
sent and accepted before the response, so the next fetch already sees it.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.paging import Invalidation
from ..arch.system import CONSOLE_PORT, EXIT_PORT, IO_OPEN_BUS, MSR_EFER
from ..arch.vmx import PROC_USE_TSC_OFFSETTING, RFLAGS_ARITH, ExitReason, VmxMode, VmxResult
from ..core.core_layouts import (EXCEPTION_LAYOUT, SYS_REQ_LAYOUT, SYS_RESP_LAYOUT, VECTOR_GP,
                                 VECTOR_UD, SysAction, SysKind)
from ..core.layouts import VMX_OP_OF_CLASS, InsnClass, OpSize, is_one_of
from ..translation.layouts import invalidation_layout
from ..vmx.exit_decisions import DECISION_LAYOUT, QUERY_LAYOUT
from ..vmx.layouts import WORKING_LAYOUT
from ..vmx.ports import ENTRY_LAYOUT, EXIT_LAYOUT, HOST_LOAD_LAYOUT, INSTR_LAYOUT, RESULT_LAYOUT
from .boundary_events import BoundaryEvents, monitor_trap_flag
from .exit_info import vmx_instruction_information
from .exit_query import ExitQuery
from .exit_record import ExitRecord
from .system_rules import (mov_to_cr0_faults, mov_to_cr3_faults, mov_to_cr4_faults,
                           wrmsr_efer_faults, wrmsr_efer_value)
from .system_values import SystemValues
from .vmx_operands import VmxOperands

__all__ = ["SystemUnit", "SysState"]


_U64 = (1 << 64) - 1


class SysState(enum.Enum, shape=4):
    IDLE = 0
    DISPATCH = 1    # classify the request (one cycle)
    QUERY = 2       # non-root: ask the exit-decision block (when DISPATCH's offer waits)
    DECIDE = 3      # wait for its decision
    EXEC = 4        # execute the instruction (root semantics)
    VMX = 5         # register the VMX instruction (first cycle), then offer it
    VMX_WAIT = 6    # wait for the VMX unit's result
    EXIT = 7        # offer the VM exit to the VMX unit
    EXIT_WAIT = 8   # wait for the host state
    INVAL = 9       # offer an invalidation to the translation unit
    RESPOND = 10    # answer the core


class SystemUnit(wiring.Component):
    """See the module docstring; `maxphyaddr` bounds CR3."""

    sys_req: In(stream.Signature(SYS_REQ_LAYOUT))
    sys_resp: Out(stream.Signature(SYS_RESP_LAYOUT))
    event_pending: Out(1)

    # The core's architectural state (stable while it waits on the system port).
    core_exception: In(EXCEPTION_LAYOUT)
    core_gpr: In(data.ArrayLayout(64, 16))
    core_rm_val: In(64)     # the registers the request's `rm` and `reg` name (the core's reads)
    core_reg_val: In(64)
    core_rip: In(64)
    core_rflags: In(64)
    core_cr0: In(64)
    core_cr3: In(64)
    core_cr4: In(64)
    core_efer: In(64)
    core_retiring: In(1)    # the core is in RETIRE this cycle

    # The last translation fault of a core access (EPT exits).
    fault_outcome: In(3)
    fault_gla: In(64)
    fault_gpa: In(64)
    fault_qualification: In(64)

    # The VMX unit.
    vmx_instr: Out(stream.Signature(INSTR_LAYOUT))
    vmx_result: In(stream.Signature(RESULT_LAYOUT))
    vmx_exit: Out(stream.Signature(EXIT_LAYOUT))
    vmx_exit_resp: In(stream.Signature(HOST_LOAD_LAYOUT))
    vmx_host: In(HOST_LOAD_LAYOUT)
    vmx_entry: In(ENTRY_LAYOUT)
    vmx_mode: In(VmxMode)
    vmx_vmcs: In(WORKING_LAYOUT)
    msr_addr: Out(32)
    msr_value: In(64)
    msr_valid: In(1)

    # The exit-decision block and the VMX-preemption timer.
    query: Out(stream.Signature(QUERY_LAYOUT))
    decision: In(stream.Signature(DECISION_LAYOUT))
    timer_load: Out(1)
    timer_load_value: Out(32)
    timer_load_active: Out(1)
    timer_stop: Out(1)
    timer_expired: In(1)
    timer_value: In(32)

    # The translation unit's invalidations and the current VPID.
    inval: Out(stream.Signature(invalidation_layout()))
    vpid: In(16)

    tsc: In(64)

    # System outputs.
    console_valid: Out(1)
    console_data: Out(8)
    console_ready: In(1, init=1)    # 0: an OUT to the console port waits (a slow UART)
    exit_port: Out(1)           # sticky: the program wrote the exit port
    exit_code: Out(32)
    vm_entry: Out(1)            # pulses
    vm_exit: Out(1)
    vm_entry_failure: Out(1)    # a VM entry failed on guest state (exit reason 0x8000_00xx)
    vm_exit_reason: Out(16)     # basic reason of the last VM exit or VM-entry failure
    vm_exit_qualification: Out(64)
    state: Out(SysState)

    def __init__(self, *, maxphyaddr):
        self.maxphyaddr = maxphyaddr
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        state = Signal(SysState)
        m.d.comb += self.state.eq(state)

        r = Signal(SYS_REQ_LAYOUT)          # the request
        # The precheck decided the outcome before the memory operand: ask again without it, so
        # the VMX unit carries the outcome out (a VMfailValid writes the error field).
        precheck_final = Signal()
        resp = Signal(SYS_RESP_LAYOUT)      # the answer being built
        dec = Signal(DECISION_LAYOUT)       # its decision
        inv = Signal(invalidation_layout())
        non_root = self.vmx_mode == VmxMode.NON_ROOT
        cls = r.cls

        gpr = self.core_gpr
        rax, rcx, rdx = gpr[0], gpr[1], gpr[2]
        # The core reads them on its register file's ports (no 16-way multiplexers here).
        reg_val, rm_val = self.core_reg_val, self.core_rm_val

        # --- boundary events: the preemption timer and the monitor trap flag ------------------
        m.submodules.events = events = BoundaryEvents()
        m.d.comb += [events.non_root.eq(non_root),
                     events.mtf.eq(monitor_trap_flag(self.vmx_vmcs.cpu_based_vm_exec_control)),
                     events.timer_expired.eq(self.timer_expired),
                     events.retiring.eq(self.core_retiring),
                     self.event_pending.eq(events.pending)]
        m.d.comb += self.timer_stop.eq(0)

        # --- pulses -------------------------------------------------------------------------
        m.d.sync += [self.console_valid.eq(0), self.vm_entry.eq(0), self.vm_exit.eq(0),
                     self.vm_entry_failure.eq(0), self.timer_load.eq(0)]

        def respond(action, **fields):
            m.d.sync += resp.action.eq(action)
            for k, v in fields.items():
                m.d.sync += getattr(resp, k).eq(v)
            m.d.sync += state.eq(SysState.RESPOND)

        def load_state(count, rip, rsp, rflags, cr0, cr3, cr4, efer):
            """RETIRE with the whole state a VM entry, a VM exit or a failed VM entry loads."""
            respond(SysAction.RETIRE, count=count, rip_we=1, rip=rip, rsp_we=1, rsp=rsp,
                    rflags_we=1, rflags=rflags, cr0_we=1, cr0=cr0, cr3_we=1, cr3=cr3,
                    cr4_we=1, cr4=cr4, efer_we=1, efer=efer)

        def fault(vector, error_code=None):
            respond(SysAction.FAULT, vector=vector, has_error_code=error_code is not None,
                    error_code=0 if error_code is None else error_code)

        # --- the VM exit's information and guest state (`rtl.soc.exit_record`) ----------------
        m.submodules.exit_record = record = ExitRecord()
        m.d.comb += [record.rip.eq(self.core_rip), record.rsp.eq(gpr[4]),
                     record.rflags.eq(self.core_rflags), record.cr0.eq(self.core_cr0),
                     record.cr3.eq(self.core_cr3), record.cr4.eq(self.core_cr4),
                     record.efer.eq(self.core_efer), record.timer_value.eq(self.timer_value),
                     record.entered.eq(self.vmx_entry.guest)]

        def take_exit(reason, qual=0, gla=0, gpa=0, intr_info=0, intr_error=0):
            m.d.comb += [record.take.eq(1), record.reason.eq(reason),
                         record.qualification.eq(qual), record.gla.eq(gla), record.gpa.eq(gpa),
                         record.intr_info.eq(intr_info), record.intr_error.eq(intr_error),
                         record.instr_len.eq(Mux(r.kind == SysKind.INSN, r.length, 0))]
            m.d.sync += state.eq(SysState.EXIT)

        def retire_with_inval(kind, gla=0, **fields):
            m.d.sync += [inv.kind.eq(kind), inv.vpid.eq(self.vpid), inv.eptp.eq(0),
                         inv.gla.eq(gla)]
            respond(SysAction.RETIRE, count=1, **fields)
            m.d.sync += state.eq(SysState.INVAL)

        # --- the values instructions produce (`rtl.soc.system_values`) ---------------------------
        m.submodules.values = vals = SystemValues()
        m.d.comb += [vals.cls.eq(cls), vals.opsize.eq(r.opsize), vals.reg.eq(r.reg),
                     vals.imm8.eq(r.imm[:8]), vals.eax.eq(rax[:32]), vals.ecx.eq(rcx[:32]),
                     vals.edx.eq(rdx[:32]),
                     vals.cr0.eq(self.core_cr0), vals.cr3.eq(self.core_cr3),
                     vals.cr4.eq(self.core_cr4), vals.efer.eq(self.core_efer),
                     vals.tsc.eq(self.tsc), vals.non_root.eq(non_root),
                     vals.tsc_offsetting.eq((self.vmx_vmcs.cpu_based_vm_exec_control
                                             & PROC_USE_TSC_OFFSETTING) != 0),
                     vals.tsc_offset.eq(self.vmx_vmcs.tsc_offset),
                     vals.msr_valid.eq(self.msr_valid), vals.msr_value.eq(self.msr_value),
                     self.msr_addr.eq(vals.msr_addr)]
        cpuid = [vals.cpuid_eax, vals.cpuid_ebx, vals.cpuid_ecx, vals.cpuid_edx]
        tsc = vals.tsc_value
        ecx = vals.msr_addr
        msr_known, msr_val, wrmsr_val = vals.msr_known, vals.msr_value_out, vals.wrmsr_value
        cr_val = vals.cr_value
        port, io_bytes, io_size, out_val = vals.port, vals.io_bytes, vals.io_size, vals.out_value

        # --- the VMX instruction's operation and operands (`rtl.soc.vmx_operands`) --------------
        # Offered to the VMX unit from a register: the operands come from the request and the
        # core's registers (16-way register-file multiplexers here, the VMX unit's instruction
        # decision behind them: without the register one combinational path from the core
        # through this block into the VMX unit). DISPATCH's cycle takes them (`r`, the registers
        # and `precheck` are stable there), so state VMX offers them in its first cycle; after a
        # precheck (`precheck_final` changes) state VMX takes them again in its first cycle and
        # offers them from the second.
        m.submodules.vmx_operands = opnds = VmxOperands()
        m.d.comb += [opnds.cls.eq(cls), opnds.mem.eq(r.mem), opnds.mem_val.eq(r.mem_val),
                     opnds.rip_rel.eq(r.rip_rel), opnds.ea.eq(r.ea), opnds.disp.eq(r.disp),
                     opnds.loaded.eq(r.loaded), opnds.reg_val.eq(reg_val),
                     opnds.rm_val.eq(rm_val), opnds.rax.eq(rax), opnds.rcx.eq(rcx),
                     opnds.cr0.eq(self.core_cr0), opnds.cr4.eq(self.core_cr4),
                     opnds.efer.eq(self.core_efer), opnds.rflags.eq(self.core_rflags),
                     opnds.precheck_final.eq(precheck_final)]
        precheck = opnds.precheck
        mem_bytes = opnds.mem_bytes
        ins = opnds.instr
        vmx_ins = Signal(INSTR_LAYOUT)
        vmx_ins_held = Signal()     # `vmx_ins` holds this state-VMX visit's operands
        m.d.sync += vmx_ins.eq(ins)
        m.d.comb += self.vmx_instr.payload.eq(vmx_ins)

        def exit_instr_info():
            """With `take_exit` (which records 0 otherwise): the VMX instruction's VM-exit
            instruction information (`rtl.soc.exit_info`)."""
            m.d.comb += record.instr_info.eq(vmx_instruction_information(
                cls, r.mem, r.scale, r.index, r.index_valid, r.base, r.base_valid, r.seg, r.rm,
                r.reg))

        # --- the exit-decision query of a request in non-root operation ------------------------
        # Offered from DISPATCH (the block registers it: no cycle of its own here), and from
        # state QUERY should the block not take it at once: it is a function of the request and
        # of state that stays as it is while the system works on the request (the core's
        # registers and exception, the data path's last fault), so no register holds it.
        m.submodules.exit_query = query = ExitQuery()
        m.d.comb += [query.request.eq(r), query.exception.eq(self.core_exception),
                     query.fault_outcome.eq(self.fault_outcome),
                     query.fault_qualification.eq(self.fault_qualification),
                     query.fault_gpa.eq(self.fault_gpa), query.fault_gla.eq(self.fault_gla),
                     query.msr.eq(ecx), query.rm_value.eq(rm_val), query.cr_value.eq(cr_val),
                     query.port.eq(port), query.io_bytes.eq(io_bytes),
                     self.query.payload.eq(query.query)]

        def ask():
            """DISPATCH: offer the query `qc` to the exit-decision block."""
            m.d.comb += self.query.valid.eq(1)
            m.d.sync += state.eq(Mux(self.query.ready, SysState.DECIDE, SysState.QUERY))

        # --- the state machine ------------------------------------------------------------------
        m.d.comb += [self.sys_resp.payload.eq(resp)]
        with m.Switch(state):
            with m.Case(SysState.IDLE):
                m.d.comb += self.sys_req.ready.eq(1)
                with m.If(self.sys_req.valid):
                    m.d.sync += [r.eq(self.sys_req.payload), resp.eq(0), dec.eq(0),
                                 precheck_final.eq(0), state.eq(SysState.DISPATCH)]

            with m.Case(SysState.DISPATCH):
                with m.Switch(r.kind):
                    with m.Case(SysKind.EVENT):
                        with m.If(events.exit):
                            take_exit(events.reason)
                        with m.Else():
                            respond(SysAction.RETIRE, count=0)
                    with m.Case(SysKind.FAULT):
                        with m.If(~non_root):
                            respond(SysAction.STOP)
                        with m.Else():
                            ask()
                    with m.Default():
                        with m.If(is_one_of(cls, *VMX_OP_OF_CLASS)):
                            m.d.sync += [vmx_ins_held.eq(1), state.eq(SysState.VMX)]
                        with m.Elif(non_root):
                            ask()
                        with m.Else():
                            m.d.sync += state.eq(SysState.EXEC)

            with m.Case(SysState.QUERY):
                m.d.comb += self.query.valid.eq(1)
                with m.If(self.query.ready):
                    m.d.sync += state.eq(SysState.DECIDE)

            with m.Case(SysState.DECIDE):
                d = self.decision.payload
                m.d.comb += self.decision.ready.eq(1)
                with m.If(self.decision.valid):
                    m.d.sync += dec.eq(d)
                    with m.If(d.exit):
                        take_exit(d.reason, d.qualification, d.gla, d.gpa, d.intr_info,
                                  d.intr_error)
                    with m.Elif(r.kind == SysKind.FAULT):
                        # A guest exception the hypervisor does not intercept: this core has
                        # no guest IDT delivery, so it ends in a triple fault (docs/system.md).
                        take_exit(ExitReason.TRIPLE_FAULT)
                    with m.Else():
                        m.d.sync += state.eq(SysState.EXEC)

            with m.Case(SysState.EXEC):
                with m.Switch(cls):
                    with m.Case(InsnClass.CPUID):
                        respond(SysAction.RETIRE, count=1, acdb_we=0b1111, rax=cpuid[0],
                                rbx=cpuid[1], rcx=cpuid[2], rdx=cpuid[3])
                    with m.Case(InsnClass.HLT):
                        respond(SysAction.HALT)
                    with m.Case(InsnClass.RDTSC):
                        respond(SysAction.RETIRE, count=1, acdb_we=0b0101, rax=tsc[:32],
                                rdx=tsc[32:])
                    with m.Case(InsnClass.RDMSR):
                        with m.If(msr_known):
                            respond(SysAction.RETIRE, count=1, acdb_we=0b0101,
                                    rax=msr_val[:32], rdx=msr_val[32:])
                        with m.Else():
                            fault(VECTOR_GP, 0)
                    with m.Case(InsnClass.WRMSR):
                        with m.If((ecx == MSR_EFER)
                                  & ~wrmsr_efer_faults(wrmsr_val, self.core_efer)):
                            retire_with_inval(Invalidation.VPID, efer_we=1,
                                              efer=wrmsr_efer_value(wrmsr_val, self.core_efer))
                        with m.Else():
                            fault(VECTOR_GP, 0)
                    with m.Case(InsnClass.MOV_FROM_CR):
                        respond(SysAction.RETIRE, count=1, dest_we=1, dest=r.rm,
                                dest_size=OpSize.S64,
                                dest_val=Mux(non_root, dec.cr_value, cr_val))
                    with m.Case(InsnClass.MOV_TO_CR):
                        v = Signal(64)
                        m.d.comb += v.eq(Mux(non_root, dec.cr_value, rm_val))
                        vmx_root = self.vmx_mode == VmxMode.ROOT
                        with m.Switch(r.reg):
                            with m.Case(0):
                                with m.If(mov_to_cr0_faults(v, vmx_root)):
                                    fault(VECTOR_GP, 0)
                                with m.Else():
                                    retire_with_inval(Invalidation.VPID, cr0_we=1, cr0=v)
                            with m.Case(3):
                                with m.If(mov_to_cr3_faults(v, self.maxphyaddr)):
                                    fault(VECTOR_GP, 0)
                                with m.Else():
                                    retire_with_inval(Invalidation.VPID, cr3_we=1, cr3=v)
                            with m.Default():
                                with m.If(mov_to_cr4_faults(v, vmx_root)):
                                    fault(VECTOR_GP, 0)
                                with m.Else():
                                    retire_with_inval(Invalidation.VPID, cr4_we=1, cr4=v)
                    with m.Case(InsnClass.INVLPG):
                        retire_with_inval(Invalidation.VPID_ADDR, gla=r.ea)
                    with m.Case(InsnClass.IN_IMM, InsnClass.IN_DX):
                        respond(SysAction.RETIRE, count=1, dest_we=1, dest=0,
                                dest_size=io_size, dest_val=IO_OPEN_BUS)
                    with m.Case(InsnClass.OUT_IMM, InsnClass.OUT_DX):
                        with m.If(port == EXIT_PORT):
                            # The run ends: retire the OUT and park the core in HALTED.
                            m.d.sync += [self.exit_port.eq(1), self.exit_code.eq(out_val)]
                            m.d.comb += events.halt.eq(1)
                            respond(SysAction.HALT)
                        with m.Else():
                            with m.If(port == CONSOLE_PORT):
                                # The OUT stays in EXEC until the console takes the byte.
                                with m.If(self.console_ready):
                                    m.d.sync += [self.console_valid.eq(1),
                                                 self.console_data.eq(rax[:8])]
                                    respond(SysAction.RETIRE, count=1)
                            with m.Else():
                                respond(SysAction.RETIRE, count=1)
                    with m.Default():
                        fault(VECTOR_UD)

            with m.Case(SysState.VMX):
                # `vmx_ins` holds the operands (from DISPATCH), or takes them in this first
                # cycle (after a precheck); then they are offered.
                m.d.sync += vmx_ins_held.eq(1)
                m.d.comb += self.vmx_instr.valid.eq(vmx_ins_held)
                with m.If(vmx_ins_held & self.vmx_instr.ready):
                    m.d.sync += [state.eq(SysState.VMX_WAIT), resp.mem_bytes.eq(mem_bytes),
                                 vmx_ins_held.eq(0)]

            with m.Case(SysState.VMX_WAIT):
                res = self.vmx_result.payload
                m.d.comb += self.vmx_result.ready.eq(1)
                host = self.vmx_host
                guest = self.vmx_entry.guest
                with m.If(self.vmx_result.valid):
                    flags = (self.core_rflags & ~RFLAGS_ARITH & _U64) | res.flags
                    with m.If(res.proceed):
                        respond(SysAction.PROCEED)
                    with m.Elif(precheck):
                        m.d.sync += [precheck_final.eq(1), state.eq(SysState.VMX)]
                    with m.Else():
                        with m.Switch(res.kind):
                            with m.Case(VmxResult.SUCCEED, VmxResult.FAIL_INVALID,
                                        VmxResult.FAIL_VALID):
                                ok = res.kind == VmxResult.SUCCEED
                                read_reg = ok & ~r.mem & (cls == InsnClass.VMREAD)
                                store = ok & r.mem & is_one_of(cls, InsnClass.VMREAD,
                                                               InsnClass.VMPTRST)
                                respond(SysAction.RETIRE, count=1, rflags_we=res.flags_valid,
                                        rflags=flags, dest_we=read_reg, dest=r.rm,
                                        dest_size=OpSize.S64, dest_val=res.value,
                                        store_we=store, store_val=res.value)
                            with m.Case(VmxResult.UD):
                                fault(VECTOR_UD)
                            with m.Case(VmxResult.GP):
                                fault(VECTOR_GP, 0)
                            with m.Case(VmxResult.VM_EXIT):
                                with m.If(non_root):
                                    take_exit(res.exit_reason, res.qualification)
                                    exit_instr_info()
                                with m.Else():
                                    # A VM-entry failure: the VMX unit loaded the host state.
                                    load_state(1, host.rip, host.rsp, host.rflags, host.cr0,
                                               host.cr3, host.cr4, host.efer)
                                    m.d.sync += [
                                        self.vm_entry_failure.eq(1),
                                        self.vm_exit_reason.eq(res.exit_reason[:16]),
                                        self.vm_exit_qualification.eq(res.qualification)]
                            with m.Case(VmxResult.VM_ENTRY):
                                load_state(1, guest.guest_rip, guest.guest_rsp,
                                           guest.guest_rflags, guest.guest_cr0, guest.guest_cr3,
                                           guest.guest_cr4, guest.guest_ia32_efer)
                                m.d.sync += [self.vm_entry.eq(1), self.timer_load.eq(1)]
                                m.d.comb += events.entered.eq(1)
                            with m.Default():       # COMPLETE: VMFUNC switched the EPTP
                                respond(SysAction.RETIRE, count=1)

            with m.Case(SysState.EXIT):
                m.d.comb += [self.vmx_exit.payload.eq(record.exit), self.vmx_exit.valid.eq(1)]
                with m.If(self.vmx_exit.ready):
                    m.d.comb += self.timer_stop.eq(1)
                    m.d.sync += [self.vm_exit.eq(1), self.vm_exit_reason.eq(record.exit.reason),
                                 self.vm_exit_qualification.eq(record.exit.qualification),
                                 state.eq(SysState.EXIT_WAIT)]

            with m.Case(SysState.EXIT_WAIT):
                h = self.vmx_exit_resp.payload
                m.d.comb += self.vmx_exit_resp.ready.eq(1)
                with m.If(self.vmx_exit_resp.valid):
                    load_state(0, h.rip, h.rsp, h.rflags, h.cr0, h.cr3, h.cr4, h.efer)

            with m.Case(SysState.INVAL):
                m.d.comb += [self.inval.valid.eq(1), self.inval.payload.eq(inv)]
                with m.If(self.inval.ready):
                    m.d.sync += state.eq(SysState.RESPOND)

            with m.Case(SysState.RESPOND):
                m.d.comb += self.sys_resp.valid.eq(1)
                with m.If(self.sys_resp.ready):
                    m.d.sync += state.eq(SysState.IDLE)

        m.d.comb += [self.timer_load_value.eq(self.vmx_entry.timer),
                     self.timer_load_active.eq(self.vmx_entry.timer_valid)]
        return m
