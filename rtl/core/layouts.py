"""Enums and layouts of the x86-64 core: the one definition the ALU, the decoder, the core and
the testbenches share (docs/core.md describes them).

* `OpSize`: operand size of an instruction / ALU operation (8, 16, 32, 64 bits);
* `AluOp`: the ALU's operations; the first eight are numbered like the ModRM.reg field of the
  immediate group 1 (80/81/83) and bits 5:3 of the 00-3F ALU opcodes, so the decoder passes those
  bits through;
* `InsnClass`: every instruction form the decoder recognises (one name per form, so a waveform
  says what is executing);
* `OpMap`: opcode map (one-byte, 0F, 0F 38);
* `DECODED_LAYOUT`: the decoder's output (`Decoder.insn`);
* `VMX_OP_OF_CLASS`: the `rtl.arch.vmx.VmxOp` of each VMX instruction class;
* `is_one_of`: an enum-typed value is one of some members (the core's and the system unit's
  dispatch);
* `bytes_of`: an `OpSize` as its bytes, 64 bits wide (added to addresses).
"""

from amaranth.hdl import C, Mux, Value, signed
from amaranth.lib import data, enum

from ..arch.vmx import VmxOp

#: The longest x86 instruction; the decoder's byte window.
MAX_INSN_BYTES = 15


class OpSize(enum.Enum, shape=2):
    """Operand size. The value is log2(bytes), so `8 << value` is the width in bits."""
    S8 = 0
    S16 = 1
    S32 = 2
    S64 = 3


#: Width in bits of each `OpSize`.
OPSIZE_BITS = {OpSize.S8: 8, OpSize.S16: 16, OpSize.S32: 32, OpSize.S64: 64}


class AluOp(enum.Enum, shape=5):
    """Operation of `rtl.core.alu.Alu`.

    ADD..CMP are numbered as ModRM.reg of 80/81/83 (and opcode bits 5:3 of 00-3F), SHL/SHR/SAR as
    ModRM.reg of C0/C1/D0-D3 plus `SHIFT_GROUP_BASE` (the rotates 0-3 are not supported, nor the
    /6 alias of SHL).
    """
    ADD = 0
    OR = 1
    ADC = 2
    SBB = 3
    AND = 4
    SUB = 5
    XOR = 6
    CMP = 7
    TEST = 8
    INC = 9
    DEC = 10
    NEG = 11
    NOT = 12
    SHL = 12 + 4    # SHIFT_GROUP_BASE + ModRM.reg, so the decoder adds a constant
    SHR = 12 + 5
    SAR = 12 + 7
    MOV = 20        # pass b through, flags unchanged (MOV, MOVZX/MOVSX after extension, SETcc)


#: The ModRM.reg value of the shift group (C0/C1/D0-D3) for each supported shift is
#: `op.value - SHIFT_GROUP_BASE`.
SHIFT_GROUP_BASE = 12


class OpMap(enum.Enum, shape=2):
    """Opcode map: which escape bytes precede the opcode byte."""
    ONE_BYTE = 0    # no escape
    MAP_0F = 1      # 0F xx
    MAP_0F38 = 2    # 0F 38 xx


def is_one_of(value, *members):
    """`value` (an enum-typed view or its raw value) is one of the enum `members`."""
    return Value.cast(value).matches(*(mb.value for mb in members))


def bytes_of(size):
    """Bytes (1, 2, 4, 8; 64 bits wide, so it adds to addresses without width changes)."""
    return Mux(size == OpSize.S8, C(1, 64), Mux(size == OpSize.S16, C(2, 64),
                                                Mux(size == OpSize.S32, C(4, 64), C(8, 64))))


class InsnClass(enum.Enum, shape=6):
    """The instruction forms of the supported subset (docs/core.md lists the opcodes).

    "RM" is the ModRM r/m operand (a register when mod = 3, else memory), "R" the ModRM.reg
    register, "ACC" the accumulator (AL/AX/EAX/RAX), "OPREG" the register in the opcode's low
    three bits (extended by REX.B, `DECODED_LAYOUT.opreg`).
    """
    INVALID = 0         # `ud` is set: raise #UD (or #GP for `too_long`)
    # Arithmetic and logic (`alu_op` says which); CMP and TEST write no result.
    ALU_RM_R = 1        # 00-39 (even low bits 0/1), 84/85 TEST: rm = rm op reg
    ALU_R_RM = 2        # 02/03, 0A/0B, ...: reg = reg op rm
    ALU_RM_IMM = 3      # 80/81/83 /0-7, F6/F7 /0 TEST: rm = rm op imm
    ALU_ACC_IMM = 4     # 04/05, 0C/0D, ..., A8/A9 TEST: acc = acc op imm
    UNARY_RM = 5        # FE/FF /0 INC, /1 DEC; F6/F7 /2 NOT, /3 NEG
    SHIFT_RM_IMM = 6    # C0/C1 ib, D0/D1 (imm = 1): SHL /4, SHR /5, SAR /7
    SHIFT_RM_CL = 7     # D2/D3: count in CL
    # Data movement.
    MOV_RM_R = 8        # 88/89
    MOV_R_RM = 9        # 8A/8B
    MOV_RM_IMM = 10     # C6 /0 ib, C7 /0 iz (sign-extended to 64 with REX.W)
    MOV_OPREG_IMM = 11  # B0+r ib, B8+r iz/io (imm64 with REX.W)
    MOVZX = 12          # 0F B6 / 0F B7 (`src_size` 8/16)
    MOVSX = 13          # 0F BE / 0F BF (`src_size` 8/16), 63 MOVSXD (`src_size` 32)
    LEA = 14            # 8D (memory form only)
    CMOVCC = 15         # 0F 40-4F (`cc`)
    SETCC = 16          # 0F 90-9F (`cc`), byte r/m
    # Stack.
    PUSH_OPREG = 17     # 50+r
    POP_OPREG = 18      # 58+r
    PUSH_RM = 19        # FF /6
    POP_RM = 20         # 8F /0
    PUSH_IMM = 21       # 68 id, 6A ib (sign-extended)
    PUSHF = 22          # 9C
    POPF = 23           # 9D
    # Control transfer; rel targets: `imm` is the sign-extended displacement from the next RIP.
    JCC = 24            # 70-7F rel8, 0F 80-8F rel32 (`cc`)
    JMP_REL = 25        # EB rel8, E9 rel32
    JMP_RM = 26         # FF /4
    CALL_REL = 27       # E8 rel32
    CALL_RM = 28        # FF /2
    RET = 29            # C3
    # System.
    NOP = 30            # 90 (and F3 90 PAUSE), 0F 1F /0
    HLT = 31            # F4
    CPUID = 32          # 0F A2
    RDTSC = 33          # 0F 31
    RDMSR = 34          # 0F 32
    WRMSR = 35          # 0F 30
    MOV_FROM_CR = 36    # 0F 20: rm (always a register) = CR[reg]
    MOV_TO_CR = 37      # 0F 22: CR[reg] = rm
    INVLPG = 38         # 0F 01 /7, memory form
    IN_IMM = 39         # E4/E5 ib (port in `imm`, zero-extended)
    IN_DX = 40          # EC/ED
    OUT_IMM = 41        # E6/E7 ib
    OUT_DX = 42         # EE/EF
    # VMX (the operands go to the VMX unit; see `rtl.arch.vmx.VmxOp`).
    VMCALL = 43         # 0F 01 C1
    VMLAUNCH = 44       # 0F 01 C2
    VMRESUME = 45       # 0F 01 C3
    VMXOFF = 46         # 0F 01 C4
    VMFUNC = 47         # 0F 01 D4
    VMPTRLD = 48        # 0F C7 /6, memory
    VMPTRST = 49        # 0F C7 /7, memory
    VMCLEAR = 50        # 66 0F C7 /6, memory
    VMXON = 51          # F3 0F C7 /6, memory
    VMREAD = 52         # 0F 78: rm = VMCS[reg]
    VMWRITE = 53        # 0F 79: VMCS[reg] = rm
    INVEPT = 54         # 66 0F 38 80: type in reg, descriptor in memory
    INVVPID = 55        # 66 0F 38 81


#: Segment override prefix (`DECODED_LAYOUT.seg`); values are the SDM's Sreg numbers.
SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_NONE = 0, 1, 2, 3, 4, 5, 7


DECODED_LAYOUT = data.StructLayout({
    # Fault outcome of decoding. At most one is set; when either is set the other fields are
    # meaningless except `length` for `too_long` (15, the limit).
    "ud": 1,                # #UD: not in the supported subset or an invalid form of it
    "too_long": 1,          # #GP(0): the instruction would exceed 15 bytes (SDM Vol. 3A 6.15)
    "cls": InsnClass,
    "length": 4,            # total bytes, prefixes included (1..15)
    "alu_op": AluOp,        # ALU_*, UNARY_RM, SHIFT_*; MOV for the other forms
    "cc": 4,                # condition code of JCC/SETCC/CMOVCC (opcode low nibble)
    "opsize": OpSize,       # operand size (see docs/core.md for how it is chosen)
    "src_size": OpSize,     # MOVZX/MOVSX source size; equals `opsize` otherwise
    # Prefixes.
    "pfx_66": 1,            # operand-size override (honoured: opsize 16; mandatory for VMCLEAR,
                            # INVEPT, INVVPID)
    "pfx_f3": 1,            # REP (honoured only as the mandatory prefix of VMXON)
    "pfx_f2": 1,            # REPNE (never honoured; makes 0F C7 /6 and 0F 78/79 #UD)
    "pfx_lock": 1,          # LOCK: accepted only on memory-destination ALU/UNARY (no effect)
    "seg": 3,               # segment override, SEG_* (SEG_NONE if none; the last one wins)
    "rex": 1,               # a REX prefix is present (selects SPL/BPL/SIL/DIL over AH..BH)
    "rex_w": 1,
    "rex_r": 1,
    "rex_x": 1,
    "rex_b": 1,
    # Opcode.
    "map": OpMap,
    "opcode": 8,            # the opcode byte after the escape bytes
    # ModRM / SIB, register numbers extended by REX (4 bits).
    "has_modrm": 1,
    "mod": 2,
    "reg": 4,               # ModRM.reg | REX.R << 3
    "rm": 4,                # ModRM.rm | REX.B << 3 (a register when mod = 3)
    "opreg": 4,             # opcode[2:0] | REX.B << 3 (50+r, 58+r, B0+r, B8+r)
    "mem": 1,               # the instruction has a memory operand (has_modrm and mod != 3)
    "has_sib": 1,
    "base_valid": 1,        # memory operand: base register used
    "base": 4,              # base register (rm or SIB.base, with REX.B)
    "index_valid": 1,       # memory operand: index register used
    "index": 4,             # SIB.index | REX.X << 3
    "scale": 2,             # SIB.ss: index is multiplied by 1 << scale
    "rip_rel": 1,           # memory operand is RIP + disp (mod = 00, rm = 101)
    "disp": signed(32),     # displacement, disp8 sign-extended (0 when absent)
    "imm": 64,              # immediate, sign-extended to 64 bits (port numbers zero-extended)
})


#: The VMX unit's operation for each VMX instruction class (the core forwards these to the unit).
VMX_OP_OF_CLASS = {
    InsnClass.VMXON: VmxOp.VMXON, InsnClass.VMXOFF: VmxOp.VMXOFF,
    InsnClass.VMCLEAR: VmxOp.VMCLEAR, InsnClass.VMPTRLD: VmxOp.VMPTRLD,
    InsnClass.VMPTRST: VmxOp.VMPTRST, InsnClass.VMREAD: VmxOp.VMREAD,
    InsnClass.VMWRITE: VmxOp.VMWRITE, InsnClass.VMLAUNCH: VmxOp.VMLAUNCH,
    InsnClass.VMRESUME: VmxOp.VMRESUME, InsnClass.VMCALL: VmxOp.VMCALL,
    InsnClass.VMFUNC: VmxOp.VMFUNC, InsnClass.INVEPT: VmxOp.INVEPT,
    InsnClass.INVVPID: VmxOp.INVVPID,
}
assert set(VMX_OP_OF_CLASS.values()) == set(VmxOp), "every VmxOp has its instruction class"
