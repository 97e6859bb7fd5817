"""Run a program of the vtx system on Unicorn with the VMX reference model as its VMX unit.

A stand-in for `vtx run` that needs no RTL, for the example programs' fast tests: Unicorn
(QEMU's x86 target) executes the ordinary instructions; every instruction the vtx system gives
to a unit is trapped and done here from the project's constants and models:

* the VMX instructions by `tb.model.vmx.VmxModel` (the RTL's scoreboard), with their memory
  operands read from and written to the program's RAM, and the flags the model returns;
* VM entries and exits: a successful VMLAUNCH/VMRESUME switches to the guest (registers from the
  model's `EntryEffects`), guest linear addresses are translated page by page by
  `tb.model.translation.translate` (guest paging x EPT, A/D flags written back), and every exit
  the model decides (I/O, CPUID, HLT, VMCALL, the VMX instructions, EPT violation and
  misconfiguration, the preemption timer at one TSC tick per guest instruction, exceptions) is
  performed with `VmxModel.vm_exit_for`, which loads the host state;
* CPUID, RDMSR (`rtl.arch.system`, `VMX_MSRS`), MOV to/from CR0/CR3/CR4, IN/OUT (console port
  0xE9, exit port 0xF4), HLT.

Root operation has no IDT: an exception (a #UD or #GP from the model, an undefined opcode, a
fault) ends the run with `{"kind": "fault", "vector": ...}`, as on the system.

The result is shaped like `vtx run --json`: `exit`, `console`, `vm_exits` (count per
`ExitReason` name), `regs`, `instructions`.

    .venv/bin/python examples/hypervisor/emulate.py examples/hypervisor/hypervisor.S
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rtl.arch import (  # noqa: E402
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    IA32_FEATURE_CONTROL,
    PTE_P,
    PTE_PS,
    PTE_RW,
    RFLAGS_FIXED1,
    VMX_MSRS,
    Access,
    ExitReason,
    Outcome,
    VmxOp,
    VmxResult,
)
from rtl.arch import system  # noqa: E402
from tb.model.translation import Context, Memory, translate  # noqa: E402
from tb.model.vmx import CpuState, ExitDecision, Operands, VmxModel  # noqa: E402

BOOT_CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
REG_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_U64 = (1 << 64) - 1
PAGE = 0x1000


class BuildError(Exception):
    pass


def build(source: Path | str, base: int = system.PROGRAM_BASE) -> tuple[bytes, dict[str, int]]:
    """Assemble `source` with GNU as (`-I` its directory, for `.include`), link it at `base`
    and return the flat image and the symbols (absolute addresses)."""
    source = Path(source).resolve()
    with tempfile.TemporaryDirectory(prefix="vtx-emu-") as tmp:
        obj, elf, binf = Path(tmp, "p.o"), Path(tmp, "p.elf"), Path(tmp, "p.bin")
        steps = [
            ["as", "--64", "-I", str(source.parent), "-o", str(obj), str(source)],
            ["ld", "-m", "elf_x86_64", "-Ttext", hex(base), "-e", "_start", "-o", str(elf),
             str(obj)],
            ["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binf)],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise BuildError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        nm = subprocess.run(["nm", str(elf)], capture_output=True, text=True, check=True).stdout
        image = binf.read_bytes()
    symbols = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = int(parts[0], 16)
    return image, symbols


class _Ram(Memory):
    """The program's RAM (a ctypes buffer Unicorn maps too) as the models' `Memory`."""

    def __init__(self, buf, size: int):
        super().__init__()
        self.buf, self.size = buf, size

    def read(self, addr: int) -> int:
        self._check(addr)
        if addr + 8 > self.size:
            return system.OPEN_BUS
        return int.from_bytes(self.buf[addr:addr + 8], "little")

    def write(self, addr: int, value: int) -> None:
        self._check(addr)
        if addr + 8 <= self.size:
            self.buf[addr:addr + 8] = (value & _U64).to_bytes(8, "little")

    def snapshot(self):  # pragma: no cover - not used here
        raise NotImplementedError


@dataclass
class _Insn:
    """A decoded instruction the emulator handles itself."""
    kind: str
    length: int
    reg: int = 0            # ModRM.reg (+REX.R)
    rm: int = 0             # ModRM.rm (+REX.B), register forms
    mem: bool = False       # ModRM names memory
    ea: int = 0             # its effective address
    imm: int = 0
    opsize: int = 4


@dataclass
class RunResult:
    exit: dict
    console: str
    vm_exits: dict[str, int]
    regs: dict[str, int]
    instructions: int
    trace: list[str] = field(default_factory=list)


class Emulator:
    """One run of one program (see the module docstring)."""

    def __init__(self, image: bytes, *, ram_bytes: int = system.RAM_BYTES,
                 max_instructions: int = 3_000_000):
        from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_INVALID, \
            UC_MODE_64, Uc
        from unicorn import x86_const as x

        self.x = x
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.ram_bytes = ram_bytes
        self.buf = (ctypes.c_ubyte * ram_bytes)()
        self.base = ctypes.addressof(self.buf)
        self.mem = _Ram(memoryview(self.buf).cast("B"), ram_bytes)
        self.mem.buf[system.PROGRAM_BASE:system.PROGRAM_BASE + len(image)] = image
        # The loader's boot page tables (docs/system.md): an identity map of the first 4 GiB
        # with 1 GiB pages. Unicorn itself runs the host flat; a guest sharing the host's CR3
        # walks these.
        self.mem.write(system.BOOT_PML4, system.BOOT_PDPT | PTE_P | PTE_RW)
        for i in range(system.IDENTITY_MAP_BYTES >> 30):
            self.mem.write(system.BOOT_PDPT + 8 * i, i << 30 | PTE_P | PTE_RW | PTE_PS)
        self.model = VmxModel(self.mem)
        self.cr0, self.cr3, self.cr4 = BOOT_CR0, system.BOOT_PML4, CR4_PAE
        self.efer = EFER_LME | EFER_LMA
        self.console: list[str] = []
        self.vm_exits: Counter[str] = Counter()
        self.exit: dict | None = None
        self.guest = False
        self.ctx: Context | None = None
        self.guest_pages: dict[int, int] = {}       # guest-linear page -> Unicorn prot
        self.pending: ExitDecision | None = None      # exit found by a memory hook
        self.switch = False                           # memory map must change (host <-> guest)
        self.instructions = 0
        self.max_instructions = max_instructions
        self.regs = {n: getattr(x, f"UC_X86_REG_{n.upper()}") for n in REG_NAMES}
        self._map_host()
        self.uc.reg_write(x.UC_X86_REG_RSP, system.BOOT_STACK_TOP)
        self.uc.reg_write(x.UC_X86_REG_RFLAGS, system.BOOT_RFLAGS)
        self.rip = system.PROGRAM_BASE
        self.uc.hook_add(UC_HOOK_CODE, self._on_code)
        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_mem_invalid)
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)

    # --- memory maps ---------------------------------------------------------------------------

    def _map_host(self) -> None:
        from unicorn import UC_PROT_ALL
        self.uc.mem_map_ptr(0, self.ram_bytes, UC_PROT_ALL, self.base)

    def _unmap_guest(self) -> None:
        for page in self.guest_pages:
            self.uc.mem_unmap(page, PAGE)
        self.guest_pages.clear()

    def _enter_guest_map(self) -> None:
        self.uc.mem_unmap(0, self.ram_bytes)
        self.guest_pages.clear()

    def _leave_guest_map(self) -> None:
        self._unmap_guest()
        self._map_host()

    # --- registers -----------------------------------------------------------------------------

    def reg(self, n: int) -> int:
        return self.uc.reg_read(self.regs[REG_NAMES[n]])

    def set_reg(self, n: int, value: int, size: int = 8) -> None:
        if size == 4:
            value &= 0xFFFFFFFF     # 32-bit writes zero-extend
        self.uc.reg_write(self.regs[REG_NAMES[n]], value & _U64)

    def rflags(self) -> int:
        return self.uc.reg_read(self.x.UC_X86_REG_RFLAGS)

    def cpu(self) -> CpuState:
        return CpuState(cpl=0, cr0=self.cr0, cr4=self.cr4, efer=self.efer, cs_l=True,
                        rflags=self.rflags(), feature_control=system.FEATURE_CONTROL_RESET)

    def read(self, addr: int, n: int) -> int:
        return int.from_bytes(bytes(self.uc.mem_read(addr, n)), "little")

    def write(self, addr: int, value: int, n: int) -> None:
        self.uc.mem_write(addr, (value & ((1 << 8 * n) - 1)).to_bytes(n, "little"))

    # --- decoding of the instructions handled here ----------------------------------------------

    def _decode(self, addr: int) -> _Insn | None:
        try:
            b = bytes(self.uc.mem_read(addr, 15))
        except Exception:
            b = bytes(self.uc.mem_read(addr, PAGE - (addr & 0xFFF)))
        i, p66, pf3, rex = 0, False, False, 0
        while i < len(b):
            c = b[i]
            if c == 0x66:
                p66 = True
            elif c == 0xF3:
                pf3 = True
            elif c in (0xF2, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0xF0, 0x67):
                pass
            elif 0x40 <= c <= 0x4F:
                rex = c
                i += 1
                break
            else:
                break
            i += 1
        op = b[i]
        opsize = 2 if p66 else 4
        if op == 0xF4:
            return _Insn("hlt", i + 1)
        if op in (0xE6, 0xE7, 0xE4, 0xE5):
            return _Insn("out" if op in (0xE6, 0xE7) else "in", i + 2, imm=b[i + 1],
                         opsize=1 if op in (0xE6, 0xE4) else opsize)
        if op in (0xEE, 0xEF, 0xEC, 0xED):
            return _Insn("out_dx" if op in (0xEE, 0xEF) else "in_dx", i + 1,
                         opsize=1 if op in (0xEE, 0xEC) else opsize)
        if op != 0x0F:
            return None
        op2 = b[i + 1]
        j = i + 2
        simple = {0xA2: "cpuid", 0x31: "rdtsc", 0x32: "rdmsr", 0x30: "wrmsr"}
        if op2 in simple:
            return _Insn(simple[op2], j)
        if op2 == 0x01 and b[j] in (0xC1, 0xC2, 0xC3, 0xC4, 0xD4):
            return _Insn({0xC1: "vmcall", 0xC2: "vmlaunch", 0xC3: "vmresume", 0xC4: "vmxoff",
                          0xD4: "vmfunc"}[b[j]], j + 1)
        if op2 in (0x20, 0x22):
            modrm = b[j]
            return _Insn("mov_from_cr" if op2 == 0x20 else "mov_to_cr", j + 1,
                         reg=(modrm >> 3) & 7, rm=(modrm & 7) | (rex & 1) << 3)
        if op2 in (0x78, 0x79):
            kind = "vmread" if op2 == 0x78 else "vmwrite"
        elif op2 == 0xC7 and (b[j] >> 3) & 7 in (6, 7):
            if (b[j] >> 3) & 7 == 7:
                kind = "vmptrst"
            else:
                kind = "vmclear" if p66 else "vmxon" if pf3 else "vmptrld"
        elif op2 == 0x38 and b[j] in (0x80, 0x81) and p66:
            kind = "invept" if b[j] == 0x80 else "invvpid"
            j += 1
        else:
            return None
        return self._modrm(kind, b, j, rex, addr)

    def _modrm(self, kind: str, b: bytes, j: int, rex: int, addr: int) -> _Insn:
        modrm = b[j]
        mod, reg, rm = modrm >> 6, ((modrm >> 3) & 7) | (rex >> 2 & 1) << 3, modrm & 7
        j += 1
        if mod == 3:
            return _Insn(kind, j, reg=reg, rm=rm | (rex & 1) << 3)
        ea, rip_rel = 0, False
        if rm == 4:
            sib = b[j]
            j += 1
            scale, index, base = sib >> 6, ((sib >> 3) & 7) | (rex >> 1 & 1) << 3, sib & 7
            if index != 4:
                ea += self.reg(index) << scale
            if base == 5 and mod == 0:
                ea += int.from_bytes(b[j:j + 4], "little", signed=True)
                j += 4
            else:
                ea += self.reg(base | (rex & 1) << 3)
        elif rm == 5 and mod == 0:
            rip_rel = True
            ea += int.from_bytes(b[j:j + 4], "little", signed=True)
            j += 4
        else:
            ea += self.reg(rm | (rex & 1) << 3)
        if mod == 1:
            ea += int.from_bytes(b[j:j + 1], "little", signed=True)
            j += 1
        elif mod == 2:
            ea += int.from_bytes(b[j:j + 4], "little", signed=True)
            j += 4
        if rip_rel:
            ea += addr + j
        return _Insn(kind, j, reg=reg, mem=True, ea=ea & _U64)

    # --- hooks ---------------------------------------------------------------------------------

    def _stop(self, exit_: dict) -> None:
        self.exit = exit_
        self.uc.emu_stop()

    def _fault(self, vector: int, rip: int, error_code: int | None = None) -> None:
        self._stop({"kind": "fault", "vector": vector, "error_code": error_code, "rip": rip})

    def _on_code(self, uc, addr: int, size: int, _user) -> None:
        if self.exit is not None or self.switch:
            uc.emu_stop()
            return
        self.instructions += 1
        if self.instructions > self.max_instructions:
            self._stop({"kind": "cycle_limit"})
            return
        if self.guest:
            decision = self.model.advance_tsc(1)
            if decision is not None:
                self._vm_exit(decision, addr)
                return
        insn = self._decode(addr)
        if insn is None:
            return
        handler = getattr(self, f"_do_{insn.kind}", None)
        if handler is None:
            handler = self._do_vmx
        handler(insn, addr)

    def _next(self, addr: int, insn: _Insn) -> None:
        self.uc.reg_write(self.x.UC_X86_REG_RIP, addr + insn.length)

    def _exit_or(self, decide, addr: int, insn: _Insn) -> bool:
        """In the guest: perform the exit `decide()` returns (True), or tell the caller to do
        the instruction itself (False: root operation, or the guest's controls let it run)."""
        if not self.guest:
            return False
        decision = decide()
        if decision is not None:
            self._vm_exit(decision, addr, insn.length)
            return True
        return False

    def _do_hlt(self, insn: _Insn, addr: int) -> None:
        if self.guest:
            d = self.model.instruction_exit(ExitReason.HLT)
            if d is None:
                self._stop({"kind": "guest_hlt", "rip": addr})   # (no interrupts to wake it)
            else:
                self._vm_exit(d, addr, insn.length)
            return
        self._next(addr, insn)
        self._stop({"kind": "hlt", "rip": addr})

    def _io(self, insn: _Insn, addr: int, port: int, is_in: bool, immediate: bool) -> None:
        if self.guest:
            if self._exit_or(lambda: self.model.io_exit(port, insn.opsize, is_in=is_in,
                                                        immediate=immediate), addr, insn):
                return
        if is_in:
            self.set_reg(0, (self.reg(0) & ~((1 << 8 * insn.opsize) - 1))
                         | (system.IO_OPEN_BUS & ((1 << 8 * insn.opsize) - 1)))
        else:
            value = self.reg(0) & ((1 << 8 * insn.opsize) - 1)
            if port == system.CONSOLE_PORT:
                self.console.append(chr(value & 0xFF))
            elif port == system.EXIT_PORT:
                self._next(addr, insn)
                self._stop({"kind": "exit_port", "code": value})
                return
        self._next(addr, insn)

    def _do_out(self, insn, addr):
        self._io(insn, addr, insn.imm, False, True)

    def _do_in(self, insn, addr):
        self._io(insn, addr, insn.imm, True, True)

    def _do_out_dx(self, insn, addr):
        self._io(insn, addr, self.reg(2) & 0xFFFF, False, False)

    def _do_in_dx(self, insn, addr):
        self._io(insn, addr, self.reg(2) & 0xFFFF, True, False)

    def _do_cpuid(self, insn, addr):
        if self._exit_or(lambda: self.model.instruction_exit(ExitReason.CPUID), addr, insn):
            return
        for n, v in zip((0, 3, 1, 2), system.cpuid(self.reg(0))):
            self.set_reg(n, v, 4)
        self._next(addr, insn)

    def _do_rdtsc(self, insn, addr):
        if self._exit_or(lambda: self.model.instruction_exit(ExitReason.RDTSC), addr, insn):
            return
        self.set_reg(0, self.instructions, 4)
        self.set_reg(2, self.instructions >> 32, 4)
        self._next(addr, insn)

    def _do_rdmsr(self, insn, addr):
        msr = self.reg(1) & 0xFFFFFFFF
        if self._exit_or(lambda: self.model.msr_exit(msr, False), addr, insn):
            return
        values = dict(VMX_MSRS)
        values[IA32_FEATURE_CONTROL] = system.FEATURE_CONTROL_RESET
        values[system.MSR_EFER] = self.efer
        values[system.MSR_TSC] = self.instructions
        if msr not in values:
            self._fault(13, addr, 0)
            return
        self.set_reg(0, values[msr], 4)
        self.set_reg(2, values[msr] >> 32, 4)
        self._next(addr, insn)

    def _do_wrmsr(self, insn, addr):
        msr = self.reg(1) & 0xFFFFFFFF
        if self._exit_or(lambda: self.model.msr_exit(msr, True), addr, insn):
            return
        value = (self.reg(2) & 0xFFFFFFFF) << 32 | (self.reg(0) & 0xFFFFFFFF)
        if msr == system.MSR_EFER:
            self.efer = value
        else:
            self._fault(13, addr, 0)      # IA32_FEATURE_CONTROL is locked; nothing else writes
            return
        self._next(addr, insn)

    def _do_mov_from_cr(self, insn, addr):
        value = {0: self.cr0, 3: self.cr3, 4: self.cr4}.get(insn.reg)
        if value is None:
            self._fault(6, addr)
            return
        if self.guest:
            if insn.reg in (0, 4):
                value = self.model.cr_read_value(insn.reg, value)
        self.set_reg(insn.rm, value)
        self._next(addr, insn)

    def _do_mov_to_cr(self, insn, addr):
        value = self.reg(insn.rm)
        if insn.reg not in (0, 3, 4):
            self._fault(6, addr)
            return
        if self.guest:
            from rtl.arch import CrAccessType
            if self._exit_or(lambda: self.model.cr_access_exit(
                    CrAccessType.MOV_TO_CR, insn.reg, value=value, gpr=insn.rm), addr, insn):
                return
        setattr(self, f"cr{insn.reg}", value)
        if self.guest and self.ctx is not None:
            self.ctx.cr0, self.ctx.cr3, self.ctx.cr4 = self.cr0, self.cr3, self.cr4
            self._unmap_guest()
            self.switch = True
        self._next(addr, insn)
        if self.switch:
            self.uc.emu_stop()

    # --- VMX instructions ----------------------------------------------------------------------

    _OPS = {"vmxon": VmxOp.VMXON, "vmxoff": VmxOp.VMXOFF, "vmclear": VmxOp.VMCLEAR,
            "vmptrld": VmxOp.VMPTRLD, "vmptrst": VmxOp.VMPTRST, "vmread": VmxOp.VMREAD,
            "vmwrite": VmxOp.VMWRITE, "vmlaunch": VmxOp.VMLAUNCH, "vmresume": VmxOp.VMRESUME,
            "vmcall": VmxOp.VMCALL, "vmfunc": VmxOp.VMFUNC, "invept": VmxOp.INVEPT,
            "invvpid": VmxOp.INVVPID}

    def _do_vmx(self, insn: _Insn, addr: int) -> None:
        op = self._OPS[insn.kind]
        cpu = self.cpu()
        o = Operands(register_operand=not insn.mem and op in (
            VmxOp.VMXON, VmxOp.VMCLEAR, VmxOp.VMPTRLD, VmxOp.VMPTRST, VmxOp.INVEPT,
            VmxOp.INVVPID))
        if op in (VmxOp.VMREAD, VmxOp.VMWRITE, VmxOp.INVEPT, VmxOp.INVVPID):
            o.reg = self.reg(insn.reg)
        if op is VmxOp.VMFUNC:
            o.reg, o.value = self.reg(0), self.reg(1)
        if op is VmxOp.VMWRITE and not insn.mem:
            o.value = self.reg(insn.rm)
        if self.model.precheck(op, cpu, o) is None:
            # The memory operand is accessed now (reads: the pointer, descriptor or source);
            # otherwise the outcome is decided before it and the operand is not touched.
            if insn.mem and not self._operand_ok(insn, addr, op):
                return
            if op in (VmxOp.VMXON, VmxOp.VMCLEAR, VmxOp.VMPTRLD):
                o.mem = self.read(insn.ea, 8)
            elif op in (VmxOp.INVEPT, VmxOp.INVVPID):
                o.mem = self.read(insn.ea, 16)
            elif op is VmxOp.VMWRITE and insn.mem:
                o.value = self.read(insn.ea, 8)
        r = self.model.execute(op, cpu, o)
        self._vmx_result(insn, addr, op, r)

    def _operand_ok(self, insn: _Insn, addr: int, op: VmxOp) -> bool:
        """Root operation: the memory operand's linear address must be canonical (#GP) and
        mapped by the boot identity map of the first 4 GiB (#PF; the boot tables are not
        changed by the programs here). A fault leaves RFLAGS alone."""
        if self.guest:
            return True
        write = op in (VmxOp.VMREAD, VmxOp.VMPTRST)
        size = 16 if op in (VmxOp.INVEPT, VmxOp.INVVPID) else 8
        top = insn.ea >> 47
        if top not in (0, (1 << 17) - 1):
            self._fault(13, addr, 0)
            return False
        if insn.ea + size > system.IDENTITY_MAP_BYTES:
            self._fault(14, addr, 2 if write else 0)     # not present (P = 0), W/R
            self.exit["addr"] = max(insn.ea, system.IDENTITY_MAP_BYTES)
            return False
        return True

    def _vmx_result(self, insn: _Insn, addr: int, op: VmxOp, r) -> None:
        x = self.x
        if r.kind is VmxResult.UD:
            self._guest_exception(6, addr) if self.guest else self._fault(6, addr)
            return
        if r.kind is VmxResult.GP:
            self._guest_exception(13, addr, 0) if self.guest else self._fault(13, addr, 0)
            return
        if r.kind is VmxResult.VM_EXIT:
            if self.guest:       # an instruction exit decided in non-root operation
                self._vm_exit(r.exit_decision, addr, insn.length)
            else:                # a VM-entry failure: the host state is already loaded
                self.vm_exits[ExitReason(r.exit_reason & 0xFFFF).name] += 1
                self._load_host(r.host)
            return
        if r.kind is VmxResult.VM_ENTRY:
            self._vm_entry(r.entry)
            return
        if r.kind is VmxResult.COMPLETE:        # VMFUNC switched the EPTP
            self.ctx.eptp = r.eptp
            self._unmap_guest()
            self.switch = True
            self._next(addr, insn)
            self.uc.emu_stop()
            return
        uc = self.uc
        uc.reg_write(x.UC_X86_REG_RFLAGS, r.apply_flags(self.rflags()))
        if r.kind is VmxResult.SUCCEED and r.value is not None:
            if op is VmxOp.VMREAD and not insn.mem:
                self.set_reg(insn.rm, r.value)
            else:
                self.write(insn.ea, r.value, 8)
        self._next(addr, insn)

    # --- VM entry and exit ---------------------------------------------------------------------

    def _vm_entry(self, entry) -> None:
        g = entry.guest
        x = self.x
        self.cr0, self.cr3, self.cr4 = g["GUEST_CR0"], g["GUEST_CR3"], g["GUEST_CR4"]
        self.efer = g["GUEST_IA32_EFER"]
        self.ctx = entry.translation_context()
        self.uc.reg_write(x.UC_X86_REG_RSP, g["GUEST_RSP"])
        self.uc.reg_write(x.UC_X86_REG_RFLAGS, g["GUEST_RFLAGS"] | RFLAGS_FIXED1)
        self.uc.reg_write(x.UC_X86_REG_RIP, g["GUEST_RIP"])
        self.guest = True
        self.switch = True
        self.uc.emu_stop()

    def _vm_exit(self, decision: ExitDecision, rip: int, instr_len: int = 0) -> None:
        state = {"GUEST_RIP": rip, "GUEST_RSP": self.reg(4), "GUEST_RFLAGS": self.rflags(),
                 "GUEST_CR0": self.cr0, "GUEST_CR3": self.cr3, "GUEST_CR4": self.cr4,
                 "GUEST_IA32_EFER": self.efer}
        r = self.model.vm_exit_for(decision, state, instr_len)
        self.vm_exits[ExitReason(decision.reason).name] += 1
        self._load_host(r.host)

    def _load_host(self, host) -> None:
        x = self.x
        self.cr0, self.cr3, self.cr4, self.efer = host.cr0, host.cr3, host.cr4, host.efer
        self.uc.reg_write(x.UC_X86_REG_RSP, host.rsp)
        self.uc.reg_write(x.UC_X86_REG_RFLAGS, host.rflags)
        self.uc.reg_write(x.UC_X86_REG_RIP, host.rip)
        if self.guest:
            self.guest = False
            self.ctx = None
            self.switch = True
        self.uc.emu_stop()

    def _guest_exception(self, vector: int, rip: int, error_code: int | None = None,
                         qualification: int = 0) -> None:
        d = self.model.exception_exit(vector, error_code=error_code,
                                      qualification=qualification)
        # No IDT delivery in this system: an exception the hypervisor does not intercept
        # ends in a triple fault (docs of issue 5).
        self._vm_exit(d or self.model.triple_fault_exit(), rip)

    def _on_mem_invalid(self, uc, access: int, addr: int, size: int, value: int, _user) -> bool:
        from unicorn import UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_PROT, \
            UC_MEM_WRITE_UNMAPPED, UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE
        if not self.guest:
            rip = uc.reg_read(self.x.UC_X86_REG_RIP)
            self._stop({"kind": "emulator_error", "rip": rip,
                        "why": f"host access to {addr:#x} outside RAM"})
            return False
        if access in (UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT):
            kind, prot = Access.FETCH, UC_PROT_EXEC
        elif access in (UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT):
            kind, prot = Access.WRITE, UC_PROT_WRITE
        else:
            kind, prot = Access.READ, UC_PROT_READ
        rip = uc.reg_read(self.x.UC_X86_REG_RIP)
        # An access may cross into the next page: translate the page of each byte.
        for a in sorted({addr & ~0xFFF, (addr + max(size, 1) - 1) & ~0xFFF}):
            gla = max(a, addr)
            res = translate(self.mem, self.ctx, gla, kind)
            if res.outcome != Outcome.OK:
                if res.outcome in (Outcome.EPT_VIOLATION, Outcome.EPT_MISCONFIG):
                    self.pending = VmxModel.ept_exit(res.outcome, res.qualification or 0,
                                                     res.gpa or 0, res.gla)
                elif res.outcome == Outcome.PAGE_FAULT:
                    self.pending = self.model.exception_exit(
                        14, error_code=res.error_code, qualification=gla) \
                        or self.model.triple_fault_exit()
                else:
                    self.pending = self.model.exception_exit(13, error_code=0) \
                        or self.model.triple_fault_exit()
                self.pending_rip = rip
                return False
            for waddr, bits in res.writes:
                self.mem.set_bits(waddr, bits)
            page = a
            hpa = res.hpa & ~0xFFF
            if page in self.guest_pages:
                self.guest_pages[page] |= prot
                uc.mem_protect(page, PAGE, self.guest_pages[page])
            else:
                self.guest_pages[page] = prot
                uc.mem_map_ptr(page, PAGE, prot, self.base + hpa)
        return True

    def _on_intr(self, uc, intno: int, _user) -> None:
        rip = uc.reg_read(self.x.UC_X86_REG_RIP)
        if self.guest:
            self._guest_exception(intno, rip)
        else:
            self._fault(intno, rip)

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        from unicorn import UcError
        x = self.x
        rip = self.rip
        was_guest = False
        while self.exit is None:
            try:
                self.uc.emu_start(rip, 0xFFFF_FFFF_FFFF_FFFF)
            except UcError as e:
                if self.exit is None and self.pending is not None:
                    d, self.pending = self.pending, None
                    self._vm_exit(d, self.pending_rip)
                elif self.exit is None:
                    rip = self.uc.reg_read(x.UC_X86_REG_RIP)
                    if self.guest:
                        self._guest_exception(6, rip)
                    else:
                        self._stop({"kind": "fault", "vector": 6, "error_code": None,
                                    "rip": rip, "why": str(e)})
            rip = self.uc.reg_read(x.UC_X86_REG_RIP)
            if self.switch:
                self.switch = False
                if self.guest and not was_guest:
                    self._enter_guest_map()
                elif not self.guest and was_guest:
                    self._leave_guest_map()
                was_guest = self.guest
        regs = {n: self.reg(k) for k, n in enumerate(REG_NAMES)}
        regs["rip"] = self.uc.reg_read(x.UC_X86_REG_RIP)
        regs["rflags"] = self.rflags()
        return RunResult(self.exit, "".join(self.console), dict(self.vm_exits), regs,
                         self.instructions)


def run(source: Path | str, **kwargs) -> RunResult:
    """Build `source` (.S) and run it on the emulator."""
    image, _ = build(source)
    return Emulator(image, **kwargs).run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a vtx program on Unicorn + the VMX model.")
    ap.add_argument("program", type=Path)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    result = run(args.program)
    if args.json:
        print(json.dumps({"exit": result.exit, "console": result.console,
                          "vm_exits": result.vm_exits, "regs": result.regs,
                          "instructions": result.instructions}, indent=2))
    else:
        sys.stdout.write(result.console)
        print(f"-- {result.exit}, {result.instructions} instructions, VM exits {result.vm_exits}")
    code = result.exit.get("code") if result.exit["kind"] == "exit_port" else None
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
