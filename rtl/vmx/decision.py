"""The decision of a VMX instruction: the first rule of its op that applies, from the instruction
and the VMX state, in one cycle of logic.

`InstructionDecision` is the reference's section 2.3 order written out per op (`tb.model.vmx`,
`VmxModel.execute` and `precheck`): #UD, VM exit in VMX non-root operation, #GP, VMfailInvalid,
VMfailValid with its error number, and otherwise what the instruction does (`VmxAction`:
nothing more, or the sequence the VMX unit runs for it). It also decodes the VMREAD/VMWRITE
field encoding (`rtl.arch.vmx.FIELDS`) and shapes a VMWRITE's value.

Ports
-----
``instr`` (in, `INSTR_LAYOUT`): the offered instruction with its operands and processor state.
``mode`` (in), ``current_vmcs`` (in, 64), ``vmxon_pointer`` (in, 64): the VMX state.
``launched``, ``launched_before_vmxoff`` (in): the current VMCS's launch state (VMLAUNCH,
VMRESUME errors 4, 5, 6).
``vmfunc_enabled`` (in), ``vm_function_control`` (in, 64): the current VMCS's VM-function
controls in effect (VMFUNC).
``kind``, ``error``, ``exit_reason``, ``qualification``, ``value`` (out): the outcome (`error`
with VMfailValid; `exit_reason`/`qualification` with a VM exit; `value` for VMPTRST).
``action`` (out, `VmxAction`): what the unit does after the checks.
``prechecked`` (out): the outcome is decided by the part of the checks the model's `precheck`
covers (the memory operand not yet read).
``field``, ``field_high`` (out): the VMREAD/VMWRITE field (slot in `FIELDS`) and whether the
encoding is a 64-bit field's high access.
``write_value``, ``write_halves`` (out): a VMWRITE's value, as wide as the field (the high
access puts the operand's low 32 bits into bits 63:32, `write_halves` = 0b10), zero-extended.
``long_mode`` (out): the instruction runs in 64-bit mode (operand size 64, else 32).

Timing
------
Combinational. The VMX unit offers it the instruction on the `instr` stream's payload and
registers the answer when it accepts the instruction.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import (
    CR0_PE,
    CR4_VMXE,
    EFER_LMA,
    EPTP_LIST_ENTRIES,
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_VMX_OUTSIDE_SMX,
    FIELDS,
    INVALID_VMCS_POINTER,
    INVEPT_TYPES,
    INVVPID_TYPES,
    MAXPHYADDR,
    RFLAGS_VM,
    VMX_CR0_FIXED0,
    VMX_CR0_FIXED1,
    VMX_CR4_FIXED0,
    VMX_CR4_FIXED1,
    ExitReason,
    VmInstructionError,
    VmxMode,
    VmxOp,
    VmxResult,
)
from rtl.arch.vmx import bit_position as bit
from rtl.translation.checks import canonical
from rtl.vmx.entry_checks import eptp_ok
from rtl.vmx.field_decode import FieldDecode
from rtl.vmx.layouts import cut_to_width
from rtl.vmx.ports import INSTR_LAYOUT

__all__ = ["InstructionDecision", "VmxAction"]

NF = len(FIELDS)
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_VMX_CR0_BAD = ~VMX_CR0_FIXED1 & _U64
_VMX_CR4_BAD = ~VMX_CR4_FIXED1 & _U64


class VmxAction(enum.Enum, shape=4):
    """What an instruction does after its checks (the sequenced ones need memory or cycles)."""
    NONE = 0
    VMXON = 1
    VMXOFF = 2
    VMCLEAR = 3
    VMPTRLD = 4
    VMWRITE = 5
    ENTRY = 6
    VMFUNC = 7
    INVEPT = 8
    INVVPID = 9


class InstructionDecision(wiring.Component):
    instr: In(INSTR_LAYOUT)
    mode: In(VmxMode)
    current_vmcs: In(64)
    vmxon_pointer: In(64)
    launched: In(1)
    launched_before_vmxoff: In(1)
    vmfunc_enabled: In(1)
    vm_function_control: In(64)
    kind: Out(VmxResult)
    error: Out(5)
    exit_reason: Out(16)
    qualification: Out(64)
    value: Out(64)
    action: Out(VmxAction)
    prechecked: Out(1)
    field: Out(range(NF))
    field_high: Out(1)
    write_value: Out(64)
    write_halves: Out(2)
    long_mode: Out(1)

    def __init__(self, *, maxphyaddr: int = MAXPHYADDR):
        self.maxphyaddr = maxphyaddr
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        mpa = self.maxphyaddr
        d = self.instr
        cpu = d.cpu
        mode = self.mode
        cur_ptr = self.current_vmcs
        vmxon_ptr = self.vmxon_pointer
        cur_valid = Signal()
        m.d.comb += cur_valid.eq(cur_ptr != INVALID_VMCS_POINTER)
        launched_cur = self.launched
        lbv_cur = self.launched_before_vmxoff
        vmfunc_on = self.vmfunc_enabled
        o_kind, o_err, o_exit, o_qual, o_val = (self.kind, self.error, self.exit_reason,
                                                self.qualification, self.value)
        o_act, o_pre = self.action, self.prechecked
        f_idx, f_high = self.field, self.field_high
        vmwrite_value, vmwrite_halves = self.write_value, self.write_halves

        pe = cpu.cr0[bit(CR0_PE)]
        v86 = cpu.rflags[bit(RFLAGS_VM)]
        lma = cpu.efer[bit(EFER_LMA)]
        compat = lma & ~cpu.cs_l
        long_mode = lma & cpu.cs_l
        opmask = Signal(64)
        m.d.comb += opmask.eq(Mux(long_mode, _U64, _U32))
        outside = mode == VmxMode.OUTSIDE
        nonroot = mode == VmxMode.NON_ROOT
        cpl0 = cpu.cpl == 0
        ro = d.register_operand
        ptr = d.mem[0:64]
        ptr_ok = (ptr[0:12] == 0) & (ptr[mpa:64] == 0)

        # Field decode of the VMREAD/VMWRITE encoding (rtl.arch.vmx.field_by_encoding).
        enc = Signal(64)
        m.d.comb += enc.eq(d.reg & opmask)
        m.submodules.field_decode = field_decode = FieldDecode()
        f_ok, f_ro = field_decode.supported, field_decode.read_only
        m.d.comb += [field_decode.encoding.eq(enc), f_idx.eq(field_decode.field),
                     f_high.eq(field_decode.high)]
        # VMWRITE: the value for both halves; the high access writes only bits 63:32 (the
        # write enables), the field's width (`FieldWidth`, encoding bits 14:13) cuts the rest,
        # so that the cache memory holds the field zero-extended, as the working copy does.
        src = Signal(64)
        m.d.comb += src.eq(d.value & opmask)
        f_width = enc[13:15]
        m.d.comb += [
            vmwrite_value.eq(Mux(f_high, Cat(src[0:32], src[0:32]),
                                 cut_to_width(src, f_width))),
            vmwrite_halves.eq(Mux(f_high, 0b10, 0b11)),
        ]

        # --- decision: first matching rule of the op (the reference's section 2.3 order) ------

        def outcome(kind, err=None, exit_=None, qual=0, val=None, act=None):
            s = [o_kind.eq(kind)]
            if err is not None:
                s.append(o_kind.eq(Mux(cur_valid, VmxResult.FAIL_VALID, VmxResult.FAIL_INVALID)))
                s.append(o_err.eq(err))
            if exit_ is not None:
                s += [o_exit.eq(exit_), o_qual.eq(qual)]
            if val is not None:
                s.append(o_val.eq(val))
            if act is not None:
                s.append(o_act.eq(act))
            return s

        UD = outcome(VmxResult.UD)
        GP = outcome(VmxResult.GP)
        FI = outcome(VmxResult.FAIL_INVALID)

        def FV(err):
            return outcome(VmxResult.FAIL_VALID, err=err)

        def EXIT(reason, qual=0):
            return outcome(VmxResult.VM_EXIT, exit_=ExitReason(reason).value, qual=qual)

        def ACT(act, kind=VmxResult.SUCCEED, val=None):
            return outcome(kind, act=act, val=val)

        def rules(items, pre):
            """items: (condition, statements) in order, the last with condition None; the first
            `pre` rules are those `precheck` covers."""
            first = True
            for i, (cond, stmts) in enumerate(items):
                if isinstance(cond, int) and not isinstance(cond, bool) and cond == 0:
                    continue        # a rule that cannot apply to this op (no constant cases)
                stmts = list(stmts) + ([o_pre.eq(1)] if i < pre else [])
                if cond is None:
                    ctx = m.Else() if not first else None
                    if ctx is None:
                        m.d.comb += stmts
                    else:
                        with ctx:
                            m.d.comb += stmts
                    return
                with (m.If(cond) if first else m.Elif(cond)):
                    m.d.comb += stmts
                first = False

        def common_ud(register_operand):
            return [(outside, UD), (register_operand, UD), (~pe, UD), (v86, UD), (compat, UD)]

        def root_checks(op, register_operand, qual=None):
            return common_ud(register_operand) + [
                (nonroot, EXIT(ExitReason[op.name], d.qualification if qual is None else qual)),
                (~cpl0, GP)]

        inv_type = Signal(64)
        m.d.comb += inv_type.eq(d.reg & opmask)
        with m.Switch(d.op):
            with m.Case(VmxOp.VMXON):
                rules([
                    (ro, UD), (~pe, UD), (~cpu.cr4[bit(CR4_VMXE)], UD), (v86, UD), (compat, UD),
                    (outside & ~cpl0, GP),
                    (outside & (((cpu.cr0 & VMX_CR0_FIXED0) != VMX_CR0_FIXED0)
                                | (cpu.cr0 & _VMX_CR0_BAD).any()), GP),
                    (outside & (((cpu.cr4 & VMX_CR4_FIXED0) != VMX_CR4_FIXED0)
                                | (cpu.cr4 & _VMX_CR4_BAD).any()), GP),
                    (outside & ~cpu.feature_control[bit(FEATURE_CONTROL_LOCK)], GP),
                    (outside & ~cpu.feature_control[bit(FEATURE_CONTROL_VMX_OUTSIDE_SMX)], GP),
                    (nonroot, EXIT(ExitReason.VMXON, d.qualification)),
                    (~outside & ~cpl0, GP),
                    (~outside, FV(VmInstructionError.VMXON_IN_ROOT)),
                    (~ptr_ok, FI),
                    (None, ACT(VmxAction.VMXON)),
                ], pre=13)
            with m.Case(VmxOp.VMXOFF):
                rules(root_checks(VmxOp.VMXOFF, 0, qual=0) + [(None, ACT(VmxAction.VMXOFF))], pre=0)
            with m.Case(VmxOp.VMCLEAR):
                rules(root_checks(VmxOp.VMCLEAR, ro) + [
                    (~ptr_ok, FV(VmInstructionError.VMCLEAR_INVALID_ADDRESS)),
                    (ptr == vmxon_ptr, FV(VmInstructionError.VMCLEAR_VMXON_POINTER)),
                    (None, ACT(VmxAction.VMCLEAR))], pre=7)
            with m.Case(VmxOp.VMPTRLD):
                rules(root_checks(VmxOp.VMPTRLD, ro) + [
                    (~ptr_ok, FV(VmInstructionError.VMPTRLD_INVALID_ADDRESS)),
                    (ptr == vmxon_ptr, FV(VmInstructionError.VMPTRLD_VMXON_POINTER)),
                    (None, ACT(VmxAction.VMPTRLD))], pre=7)
            with m.Case(VmxOp.VMPTRST):
                rules(root_checks(VmxOp.VMPTRST, ro) + [
                    (None, outcome(VmxResult.SUCCEED, val=cur_ptr))], pre=7)
            with m.Case(VmxOp.VMREAD):
                rules(root_checks(VmxOp.VMREAD, 0) + [
                    (~cur_valid, FI),
                    (~f_ok, FV(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT)),
                    (None, outcome(VmxResult.SUCCEED))], pre=9)
            with m.Case(VmxOp.VMWRITE):
                rules(root_checks(VmxOp.VMWRITE, 0) + [
                    (~cur_valid, FI),
                    (~f_ok, FV(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT)),
                    (f_ro, FV(VmInstructionError.VMWRITE_READ_ONLY_COMPONENT)),
                    (None, ACT(VmxAction.VMWRITE))], pre=8)
            with m.Case(VmxOp.VMLAUNCH, VmxOp.VMRESUME):
                launch = d.op == VmxOp.VMLAUNCH
                rules([
                    (outside, UD), (~pe, UD), (v86, UD), (compat, UD),
                    (nonroot, outcome(VmxResult.VM_EXIT,
                                      exit_=Mux(launch, ExitReason.VMLAUNCH.value,
                                                ExitReason.VMRESUME.value), qual=0)),
                    (~cpl0, GP),
                    (~cur_valid, FI),
                    (cpu.mov_ss_blocking, FV(VmInstructionError.ENTRY_EVENTS_BLOCKED_BY_MOV_SS)),
                    (launch & launched_cur, FV(VmInstructionError.VMLAUNCH_NONCLEAR_VMCS)),
                    (~launch & ~launched_cur, FV(VmInstructionError.VMRESUME_NONLAUNCHED_VMCS)),
                    (~launch & lbv_cur, FV(VmInstructionError.VMRESUME_AFTER_VMXOFF)),
                    (None, ACT(VmxAction.ENTRY, kind=VmxResult.VM_ENTRY)),
                ], pre=0)
            with m.Case(VmxOp.VMCALL):
                rules([
                    (outside, UD),
                    (nonroot, EXIT(ExitReason.VMCALL)),
                    (v86, UD), (compat, UD), (~cpl0, GP),
                    (None, FV(VmInstructionError.VMCALL_IN_ROOT)),
                ], pre=0)
            with m.Case(VmxOp.VMFUNC):
                eax = d.reg[0:32]
                ecx = d.value[0:32]
                rules([
                    (~nonroot, UD),
                    (~vmfunc_on, UD),
                    (eax >= 64, UD),
                    (~Array(self.vm_function_control[i] for i in range(64))[eax[0:6]],
                     EXIT(ExitReason.VMFUNC)),
                    (ecx >= EPTP_LIST_ENTRIES, EXIT(ExitReason.VMFUNC)),
                    (None, ACT(VmxAction.VMFUNC, kind=VmxResult.COMPLETE)),
                ], pre=0)
            with m.Case(VmxOp.INVEPT):
                type_ok = 0
                for t in INVEPT_TYPES:
                    type_ok = type_ok | (inv_type == t)
                rules(common_ud(ro) + [
                    (nonroot, EXIT(ExitReason.INVEPT, d.qualification)),
                    (~cpl0, GP),
                    (~type_ok, FV(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND)),
                    ((inv_type == 1) & ~eptp_ok(d.mem[0:64], mpa),
                     FV(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND)),
                    (None, ACT(VmxAction.INVEPT)),
                ], pre=8)
            with m.Case(VmxOp.INVVPID):
                type_ok = 0
                for t in INVVPID_TYPES:
                    type_ok = type_ok | (inv_type == t)
                vpid = d.mem[0:16]
                rules(common_ud(ro) + [
                    (nonroot, EXIT(ExitReason.INVVPID, d.qualification)),
                    (~cpl0, GP),
                    (~type_ok, FV(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND)),
                    (d.mem[16:64].any(), FV(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND)),
                    ((inv_type != 2) & (vpid == 0),
                     FV(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND)),
                    ((inv_type == 0) & ~canonical(d.mem[64:128]),
                     FV(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND)),
                    (None, ACT(VmxAction.INVVPID)),
                ], pre=8)

        m.d.comb += self.long_mode.eq(long_mode)
        return m
