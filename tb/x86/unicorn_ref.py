"""Unicorn (QEMU's x86 target) as the reference for single instructions.

`UnicornX86` keeps one 64-bit emulator with a code page; `run(code, regs, rflags)` executes one
instruction with the given registers and returns the registers and RFLAGS after it. The ALU test
encodes its instructions itself (`alu_insn_bytes`), with the destination in RAX, the source in
RBX and the shift count in CL, so no assembler is needed.
"""

from __future__ import annotations

from rtl.arch.vmx import RFLAGS_FIXED1
from rtl.core.layouts import AluOp, OpSize

CODE_ADDR = 0x10000

#: Register numbers in ModRM order (rax=0 ... r15=15).
REG_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


class UnicornX86:
    """One Unicorn x86-64 emulator reused for many single-instruction runs."""

    def __init__(self):
        from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
        from unicorn import x86_const as x

        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.mem_map(CODE_ADDR, 0x1000)
        self.regs = {name: getattr(x, f"UC_X86_REG_{name.upper()}") for name in REG_NAMES}
        self.rflags_reg = x.UC_X86_REG_RFLAGS
        self.rip_reg = x.UC_X86_REG_RIP

    def run(self, code: bytes, regs: dict[str, int], rflags: int) -> tuple[dict[str, int], int]:
        """Execute the one instruction `code`; returns (all 16 registers, RFLAGS) after it."""
        uc = self.uc
        uc.mem_write(CODE_ADDR, bytes(code))
        for name in REG_NAMES:
            uc.reg_write(self.regs[name], regs.get(name, 0))
        uc.reg_write(self.rflags_reg, rflags | RFLAGS_FIXED1)
        uc.emu_start(CODE_ADDR, CODE_ADDR + len(code), count=1)
        assert uc.reg_read(self.rip_reg) == CODE_ADDR + len(code), "instruction did not retire"
        return {name: uc.reg_read(self.regs[name]) for name in REG_NAMES}, \
            uc.reg_read(self.rflags_reg)

    def setcc(self, cc: int, rflags: int) -> int:
        """The value SETcc `cc` writes to AL with RFLAGS = `rflags` (0 or 1)."""
        regs, _ = self.run(bytes([0x0F, 0x90 | cc, 0xC0]), {}, rflags)
        return regs["rax"] & 0xFF


_SIZE_PREFIX = {OpSize.S8: b"", OpSize.S16: b"\x66", OpSize.S32: b"", OpSize.S64: b"\x48"}

#: (opcode of the byte form, ModRM.reg or None for "/r with RBX as the source").
_ENCODING = {
    AluOp.TEST: (0x84, None),
    AluOp.MOV: (0x88, None),
    AluOp.INC: (0xFE, 0),
    AluOp.DEC: (0xFE, 1),
    AluOp.NOT: (0xF6, 2),
    AluOp.NEG: (0xF6, 3),
    AluOp.SHL: (0xD2, 4),
    AluOp.SHR: (0xD2, 5),
    AluOp.SAR: (0xD2, 7),
}


def alu_insn_bytes(op: AluOp, size: OpSize) -> bytes:
    """Machine code of `op` at `size` on RAX (destination), RBX (source), CL (shift count)."""
    if op.value < 8:                        # 00-3F group: op rm, reg
        opcode, reg = op.value * 8, None
    else:
        opcode, reg = _ENCODING[op]
    if size != OpSize.S8:
        opcode += 1                         # the byte form's neighbour: 16/32/64-bit
    modrm = 0xC0 | ((3 if reg is None else reg) << 3)   # rm = RAX, reg = RBX or /digit
    return _SIZE_PREFIX[size] + bytes([opcode, modrm])
