"""The opcode table of the supported x86-64 subset, as data (`Decoder` turns it into a switch).

One `Entry` per instruction form: the opcode map and byte(s), and what the decoder must know to
find the instruction's length and operands. docs/core.md lists the same forms.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.lib import enum

from .layouts import SHIFT_GROUP_BASE, AluOp, InsnClass, OpMap, OpSize

__all__ = ["ImmKind", "SizeRule", "MemRule", "PrefixRule", "Entry", "OPCODE_TABLE"]


class ImmKind(enum.Enum, shape=3):
    """Immediate following the ModRM/SIB/displacement bytes."""
    NONE = 0
    IB = 1          # imm8, sign-extended
    IB_PORT = 2     # imm8 port number, zero-extended
    IZ = 3          # imm16 with operand size 16, else imm32; sign-extended
    IV = 4          # imm16 / imm32 / imm64 by operand size (B8+r)
    REL32 = 5       # rel32 (the 66 prefix is ignored, as Intel processors do in 64-bit mode)
    ONE = 6         # no immediate bytes; imm = 1 (D0/D1 shifts by one)


class SizeRule(enum.Enum, shape=2):
    """How the operand size follows from REX.W and 66 (byte forms are 8 bits regardless)."""
    NORMAL = 0      # REX.W: 64, else 66: 16, else 32
    DEFAULT64 = 1   # 66: 16, else 64 (PUSH/POP/PUSHF/POPF)
    FORCE64 = 2     # always 64 (near branches, MOV CR, VMX instructions)
    NO_REX_W = 3    # 66: 16, else 32; REX.W ignored (IN/OUT)


class MemRule(enum.Enum, shape=2):
    """Which ModRM.mod values the form accepts."""
    ANY = 0
    MEM_ONLY = 1    # mod = 11 is #UD (LEA, INVLPG, VMPTRLD, ...)
    MOD_IGNORED = 2  # MOV to/from CR: mod is treated as 11, r/m is always a register


class PrefixRule(enum.Enum, shape=2):
    """Mandatory-prefix requirement (66/F2/F3 selecting the instruction)."""
    ANY = 0         # 66 is the operand-size prefix; F2/F3 are ignored
    NP = 1          # none of 66, F2, F3
    P66 = 2         # 66 and neither F2 nor F3
    PF3 = 3         # F3 and neither 66 nor F2


@dataclass(frozen=True)
class Entry:
    cls: InsnClass
    modrm: bool = False
    imm: ImmKind = ImmKind.NONE
    byte: bool = False              # 8-bit operand form
    size: SizeRule = SizeRule.NORMAL
    alu: AluOp = AluOp.MOV
    src: OpSize | None = None       # MOVZX/MOVSX source size
    mem: MemRule = MemRule.ANY
    pfx: PrefixRule = PrefixRule.ANY
    reg: int | None = None          # ModRM.reg (/digit) this entry needs
    exact: int | None = None        # the whole ModRM byte this entry needs (0F 01 C1, ...)


C = InsnClass
ONE, M0F, M38 = OpMap.ONE_BYTE, OpMap.MAP_0F, OpMap.MAP_0F38
IB, IZ = ImmKind.IB, ImmKind.IZ
D64, F64 = SizeRule.DEFAULT64, SizeRule.FORCE64
MEM = MemRule.MEM_ONLY


def _build():
    t: dict[tuple[OpMap, int], list[Entry]] = {}

    def add(mp, opcodes, entry):
        for opc in ([opcodes] if isinstance(opcodes, int) else opcodes):
            t.setdefault((mp, opc), []).append(entry)

    # 00-3D: the eight ALU operations, six forms each (opcode bits 5:3 = AluOp value).
    for op in (AluOp.ADD, AluOp.OR, AluOp.ADC, AluOp.SBB, AluOp.AND, AluOp.SUB, AluOp.XOR,
               AluOp.CMP):
        base = op.value * 8
        add(ONE, base + 0, Entry(C.ALU_RM_R, modrm=True, byte=True, alu=op))
        add(ONE, base + 1, Entry(C.ALU_RM_R, modrm=True, alu=op))
        add(ONE, base + 2, Entry(C.ALU_R_RM, modrm=True, byte=True, alu=op))
        add(ONE, base + 3, Entry(C.ALU_R_RM, modrm=True, alu=op))
        add(ONE, base + 4, Entry(C.ALU_ACC_IMM, imm=IB, byte=True, alu=op))
        add(ONE, base + 5, Entry(C.ALU_ACC_IMM, imm=IZ, alu=op))
        # Group 1 (80 ib, 81 iz, 83 ib sign-extended): ModRM.reg is the operation.
        add(ONE, 0x80, Entry(C.ALU_RM_IMM, modrm=True, imm=IB, byte=True, alu=op, reg=op.value))
        add(ONE, 0x81, Entry(C.ALU_RM_IMM, modrm=True, imm=IZ, alu=op, reg=op.value))
        add(ONE, 0x83, Entry(C.ALU_RM_IMM, modrm=True, imm=IB, alu=op, reg=op.value))

    add(ONE, range(0x50, 0x58), Entry(C.PUSH_OPREG, size=D64))
    add(ONE, range(0x58, 0x60), Entry(C.POP_OPREG, size=D64))
    add(ONE, 0x63, Entry(C.MOVSX, modrm=True, src=OpSize.S32))          # MOVSXD
    add(ONE, 0x68, Entry(C.PUSH_IMM, imm=IZ, size=D64))
    add(ONE, 0x6A, Entry(C.PUSH_IMM, imm=IB, size=D64))
    add(ONE, range(0x70, 0x80), Entry(C.JCC, imm=IB, size=F64))
    add(ONE, 0x84, Entry(C.ALU_RM_R, modrm=True, byte=True, alu=AluOp.TEST))
    add(ONE, 0x85, Entry(C.ALU_RM_R, modrm=True, alu=AluOp.TEST))
    add(ONE, 0x88, Entry(C.MOV_RM_R, modrm=True, byte=True))
    add(ONE, 0x89, Entry(C.MOV_RM_R, modrm=True))
    add(ONE, 0x8A, Entry(C.MOV_R_RM, modrm=True, byte=True))
    add(ONE, 0x8B, Entry(C.MOV_R_RM, modrm=True))
    add(ONE, 0x8D, Entry(C.LEA, modrm=True, mem=MEM))
    add(ONE, 0x8F, Entry(C.POP_RM, modrm=True, size=D64, reg=0))
    add(ONE, 0x90, Entry(C.NOP))                    # 41 90 (XCHG r8, rax) is #UD: decoder
    add(ONE, 0x9C, Entry(C.PUSHF, size=D64))
    add(ONE, 0x9D, Entry(C.POPF, size=D64))
    add(ONE, 0xA8, Entry(C.ALU_ACC_IMM, imm=IB, byte=True, alu=AluOp.TEST))
    add(ONE, 0xA9, Entry(C.ALU_ACC_IMM, imm=IZ, alu=AluOp.TEST))
    add(ONE, range(0xB0, 0xB8), Entry(C.MOV_OPREG_IMM, imm=IB, byte=True))
    add(ONE, range(0xB8, 0xC0), Entry(C.MOV_OPREG_IMM, imm=ImmKind.IV))
    for shift in (AluOp.SHL, AluOp.SHR, AluOp.SAR):
        reg = shift.value - SHIFT_GROUP_BASE
        add(ONE, 0xC0, Entry(C.SHIFT_RM_IMM, modrm=True, imm=IB, byte=True, alu=shift, reg=reg))
        add(ONE, 0xC1, Entry(C.SHIFT_RM_IMM, modrm=True, imm=IB, alu=shift, reg=reg))
        add(ONE, 0xD0, Entry(C.SHIFT_RM_IMM, modrm=True, imm=ImmKind.ONE, byte=True, alu=shift,
                             reg=reg))
        add(ONE, 0xD1, Entry(C.SHIFT_RM_IMM, modrm=True, imm=ImmKind.ONE, alu=shift, reg=reg))
        add(ONE, 0xD2, Entry(C.SHIFT_RM_CL, modrm=True, byte=True, alu=shift, reg=reg))
        add(ONE, 0xD3, Entry(C.SHIFT_RM_CL, modrm=True, alu=shift, reg=reg))
    add(ONE, 0xC3, Entry(C.RET, size=F64))
    add(ONE, 0xC6, Entry(C.MOV_RM_IMM, modrm=True, imm=IB, byte=True, reg=0))
    add(ONE, 0xC7, Entry(C.MOV_RM_IMM, modrm=True, imm=IZ, reg=0))
    port, nw = ImmKind.IB_PORT, SizeRule.NO_REX_W
    add(ONE, 0xE4, Entry(C.IN_IMM, imm=port, byte=True))
    add(ONE, 0xE5, Entry(C.IN_IMM, imm=port, size=nw))
    add(ONE, 0xE6, Entry(C.OUT_IMM, imm=port, byte=True))
    add(ONE, 0xE7, Entry(C.OUT_IMM, imm=port, size=nw))
    add(ONE, 0xEC, Entry(C.IN_DX, byte=True))
    add(ONE, 0xED, Entry(C.IN_DX, size=nw))
    add(ONE, 0xEE, Entry(C.OUT_DX, byte=True))
    add(ONE, 0xEF, Entry(C.OUT_DX, size=nw))
    add(ONE, 0xE8, Entry(C.CALL_REL, imm=ImmKind.REL32, size=F64))
    add(ONE, 0xE9, Entry(C.JMP_REL, imm=ImmKind.REL32, size=F64))
    add(ONE, 0xEB, Entry(C.JMP_REL, imm=IB, size=F64))
    add(ONE, 0xF4, Entry(C.HLT))
    for opc, byte, imm in ((0xF6, True, IB), (0xF7, False, IZ)):
        add(ONE, opc, Entry(C.ALU_RM_IMM, modrm=True, imm=imm, byte=byte, alu=AluOp.TEST, reg=0))
        add(ONE, opc, Entry(C.UNARY_RM, modrm=True, byte=byte, alu=AluOp.NOT, reg=2))
        add(ONE, opc, Entry(C.UNARY_RM, modrm=True, byte=byte, alu=AluOp.NEG, reg=3))
    add(ONE, 0xFE, Entry(C.UNARY_RM, modrm=True, byte=True, alu=AluOp.INC, reg=0))
    add(ONE, 0xFE, Entry(C.UNARY_RM, modrm=True, byte=True, alu=AluOp.DEC, reg=1))
    add(ONE, 0xFF, Entry(C.UNARY_RM, modrm=True, alu=AluOp.INC, reg=0))
    add(ONE, 0xFF, Entry(C.UNARY_RM, modrm=True, alu=AluOp.DEC, reg=1))
    add(ONE, 0xFF, Entry(C.CALL_RM, modrm=True, size=F64, reg=2))
    add(ONE, 0xFF, Entry(C.JMP_RM, modrm=True, size=F64, reg=4))
    add(ONE, 0xFF, Entry(C.PUSH_RM, modrm=True, size=D64, reg=6))

    # Two-byte map.
    add(M0F, 0x01, Entry(C.INVLPG, modrm=True, mem=MEM, reg=7))
    for modrm, cls in ((0xC1, C.VMCALL), (0xC2, C.VMLAUNCH), (0xC3, C.VMRESUME),
                       (0xC4, C.VMXOFF), (0xD4, C.VMFUNC)):
        add(M0F, 0x01, Entry(cls, modrm=True, size=F64, exact=modrm))
    add(M0F, 0x1F, Entry(C.NOP, modrm=True, reg=0))
    add(M0F, 0x20, Entry(C.MOV_FROM_CR, modrm=True, size=F64, mem=MemRule.MOD_IGNORED))
    add(M0F, 0x22, Entry(C.MOV_TO_CR, modrm=True, size=F64, mem=MemRule.MOD_IGNORED))
    add(M0F, 0x30, Entry(C.WRMSR))
    add(M0F, 0x31, Entry(C.RDTSC))
    add(M0F, 0x32, Entry(C.RDMSR))
    add(M0F, 0xA2, Entry(C.CPUID))
    add(M0F, range(0x40, 0x50), Entry(C.CMOVCC, modrm=True))
    add(M0F, 0x78, Entry(C.VMREAD, modrm=True, size=F64, pfx=PrefixRule.NP))
    add(M0F, 0x79, Entry(C.VMWRITE, modrm=True, size=F64, pfx=PrefixRule.NP))
    add(M0F, range(0x80, 0x90), Entry(C.JCC, imm=ImmKind.REL32, size=F64))
    add(M0F, range(0x90, 0xA0), Entry(C.SETCC, modrm=True, byte=True))
    add(M0F, 0xB6, Entry(C.MOVZX, modrm=True, src=OpSize.S8))
    add(M0F, 0xB7, Entry(C.MOVZX, modrm=True, src=OpSize.S16))
    add(M0F, 0xBE, Entry(C.MOVSX, modrm=True, src=OpSize.S8))
    add(M0F, 0xBF, Entry(C.MOVSX, modrm=True, src=OpSize.S16))
    # 0F C7 /6 and /7: the mandatory prefix picks the VMX instruction (memory forms only; the
    # register forms are RDRAND/RDSEED, not supported).
    add(M0F, 0xC7, Entry(C.VMPTRLD, modrm=True, size=F64, mem=MEM, pfx=PrefixRule.NP, reg=6))
    add(M0F, 0xC7, Entry(C.VMCLEAR, modrm=True, size=F64, mem=MEM, pfx=PrefixRule.P66, reg=6))
    add(M0F, 0xC7, Entry(C.VMXON, modrm=True, size=F64, mem=MEM, pfx=PrefixRule.PF3, reg=6))
    add(M0F, 0xC7, Entry(C.VMPTRST, modrm=True, size=F64, mem=MEM, pfx=PrefixRule.NP, reg=7))

    # Three-byte map 0F 38.
    add(M38, 0x80, Entry(C.INVEPT, modrm=True, size=F64, mem=MEM, pfx=PrefixRule.P66))
    add(M38, 0x81, Entry(C.INVVPID, modrm=True, size=F64, mem=MEM, pfx=PrefixRule.P66))
    return t


#: (map, opcode byte) -> the entries sharing it (told apart by ModRM.reg, ModRM or prefix).
OPCODE_TABLE: dict[tuple[OpMap, int], list[Entry]] = _build()
