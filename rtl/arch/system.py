"""The system around the core (`rtl.soc`): memory map, boot state, I/O ports, CPUID and MSRs.

One source of truth for the SoC RTL, the loader (`sim.run.program`), `vtx run`, the example
programs'
documentation (docs/system.md) and the tests.

Memory map (physical): RAM from 0 to `RAM_BYTES` (a parameter of `rtl.soc.Soc`; this is the
default). A read outside RAM returns `OPEN_BUS` (all ones, as an unterminated bus reads on a PC)
and a write outside RAM is dropped.

Boot state (the loader builds it, the SoC's `start` pulse applies it; docs/system.md):
64-bit mode, CPL 0, CR0 = PE|MP|ET|NE|WP|PG, CR4 = PAE, EFER = LME|LMA, paging on over an identity
map of the first 4 GiB (PML4 at `BOOT_PML4`, one PDPT at `BOOT_PDPT` with four 1 GiB pages,
present, writable, supervisor), the program loaded at `PROGRAM_BASE`, RSP = `BOOT_STACK_TOP`
(the stack grows down from the program's base), RFLAGS = 2, every other GPR 0, RIP = the program's
entry point.
"""

from amaranth.lib import data, enum

from .paging import MAXPHYADDR

__all__ = [
    "RunStop", "FAULT_LAYOUT",
    "RAM_BYTES", "OPEN_BUS", "BOOT_PML4", "BOOT_PDPT", "PROGRAM_BASE", "BOOT_STACK_TOP",
    "BOOT_RFLAGS", "IDENTITY_MAP_BYTES", "CONSOLE_PORT", "EXIT_PORT", "IO_OPEN_BUS",
    "CPUID_VENDOR", "CPUID_MAX_LEAF", "CPUID_MAX_EXTENDED_LEAF", "CPUID_BRAND",
    "LINEAR_ADDRESS_BITS", "CPUID_LEAVES", "cpuid", "MSR_TSC", "MSR_EFER",
    "FEATURE_CONTROL_RESET",
]

class RunStop(enum.Enum, shape=3):
    """Why a run of the system ended (the SoC's ``stop`` port)."""
    NONE = 0        # running, or not started
    EXIT_PORT = 1   # OUT to the exit port; ``exit_code`` is the value
    HLT = 2         # HLT in root operation (or outside VMX operation)
    FAULT = 3       # an exception in root operation (there is no IDT): ``fault``
    SHUTDOWN = 4    # reserved


#: The fault a run stopped at (the SoC's ``fault`` port): vector, error code if it has one, the
#: RIP of the faulting instruction and, for #PF, the linear address.
FAULT_LAYOUT = data.StructLayout({
    "vector": 8, "has_error_code": 1, "error_code": 32, "rip": 64, "addr": 64,
})

RAM_BYTES = 4 << 20             # 4 MiB
OPEN_BUS = (1 << 64) - 1

BOOT_PML4 = 0x1000
BOOT_PDPT = 0x2000
PROGRAM_BASE = 0x100000
BOOT_STACK_TOP = PROGRAM_BASE
BOOT_RFLAGS = 0x2
IDENTITY_MAP_BYTES = 4 << 30    # the boot page tables map 0 .. 4 GiB - 1 one to one

# I/O ports (OUT imm8 / OUT DX). Reading any port returns IO_OPEN_BUS (all ones in the operand
# size); writing a port the system does not decode is ignored.
CONSOLE_PORT = 0xE9             # OUT: print the low byte (Bochs/QEMU debug-console convention)
EXIT_PORT = 0xF4                # OUT: end the run; the exit code is the value written
IO_OPEN_BUS = 0xFFFFFFFF

# CPUID (root operation; a guest's CPUID always exits to its hypervisor).
CPUID_VENDOR = "VTXOpenCore!"   # 12 bytes: EBX, EDX, ECX as on silicon
assert len(CPUID_VENDOR) == 12
CPUID_MAX_LEAF = 1
CPUID_MAX_EXTENDED_LEAF = 0x80000008
#: Leaves 0x80000002..4: the processor brand string, 48 bytes, NUL-padded.
CPUID_BRAND = "VTXOpenCore x86-64 with VMX"
assert len(CPUID_BRAND) < 48
#: Linear-address width (4-level paging), reported with MAXPHYADDR in leaf 0x80000008.
LINEAR_ADDRESS_BITS = 48


def _vendor_regs(vendor: str) -> tuple[int, int, int]:
    b = vendor.encode("ascii")
    ebx, edx, ecx = (int.from_bytes(b[i:i + 4], "little") for i in (0, 4, 8))
    return ebx, ecx, edx


_VB, _VC, _VD = _vendor_regs(CPUID_VENDOR)


def _brand_regs(brand: str) -> list[tuple[int, int, int, int]]:
    """Leaves 0x80000002..4: 16 bytes each, in EAX, EBX, ECX, EDX (little-endian)."""
    b = brand.encode("ascii").ljust(48, b"\0")
    words = [int.from_bytes(b[i:i + 4], "little") for i in range(0, 48, 4)]
    return [tuple(words[i:i + 4]) for i in range(0, 12, 4)]


#: leaf -> (EAX, EBX, ECX, EDX). Leaf 1: family 6 model 0 stepping 1; ECX bit 5 = VMX;
#: EDX: FPU(0) TSC(4) MSR(5) PAE(6) CX8(8) PGE(13) CMOV(15) -- what the design honours.
#: Extended leaves (SDM Vol. 2A, CPUID): 0x80000000 the highest extended leaf; 0x80000001 EDX
#: XD/NX (20: EFER.NXE and the XD bit are honoured) and Intel 64 (29); 0x80000002..4 the brand
#: string; 0x80000005..7 nothing to report; 0x80000008 EAX = linear << 8 | physical address
#: width (MAXPHYADDR). Leaves above CPUID_MAX_LEAF or CPUID_MAX_EXTENDED_LEAF answer as the
#: highest basic leaf does (as Intel silicon does).
CPUID_LEAVES: dict[int, tuple[int, int, int, int]] = {
    0: (CPUID_MAX_LEAF, _VB, _VC, _VD),
    1: (0x00000601, 0x00000000, 1 << 5, (1 << 0) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 8)
        | (1 << 13) | (1 << 15)),
    0x80000000: (CPUID_MAX_EXTENDED_LEAF, 0, 0, 0),
    0x80000001: (0, 0, 0, (1 << 20) | (1 << 29)),
    **{0x80000002 + i: regs for i, regs in enumerate(_brand_regs(CPUID_BRAND))},
    0x80000005: (0, 0, 0, 0),
    0x80000006: (0, 0, 0, 0),
    0x80000007: (0, 0, 0, 0),
    0x80000008: (LINEAR_ADDRESS_BITS << 8 | MAXPHYADDR, 0, 0, 0),
}
assert max(leaf for leaf in CPUID_LEAVES if leaf < 0x80000000) == CPUID_MAX_LEAF
assert max(CPUID_LEAVES) == CPUID_MAX_EXTENDED_LEAF


def cpuid(leaf: int) -> tuple[int, int, int, int]:
    """CPUID answer for EAX = `leaf` (ECX is not used by the leaves supported)."""
    leaf &= 0xFFFFFFFF
    return CPUID_LEAVES.get(leaf, CPUID_LEAVES[CPUID_MAX_LEAF])


MSR_TSC = 0x10
MSR_EFER = 0xC0000080
#: IA32_FEATURE_CONTROL out of reset: locked (bit 0), VMX outside SMX enabled (bit 2).
FEATURE_CONTROL_RESET = 0x5
